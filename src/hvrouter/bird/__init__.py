"""BIRD 2: configuration rendered from the host config, checked, installed
atomically, and a birdc client for reloads and session state.

    text = render(cfg)                 # role from cfg.bird.role
    check(text)                        # bird -p, BirdConfigError on rejection
    if install(cfg.bird.config_path, text):
        Birdc(cfg.bird.socket).configure()
"""

from .control import Birdc
from .errors import BirdConfigError, BirdControlError, BirdError
from .files import check, install
from .parse import ProtocolState
from .render import ROLES, bird_table, render

__all__ = [
    "ROLES",
    "Birdc",
    "BirdConfigError",
    "BirdControlError",
    "BirdError",
    "ProtocolState",
    "bird_table",
    "check",
    "install",
    "render",
]
