"""Parsing and checking overlay attachments (pure)."""

from __future__ import annotations

import ipaddress
import re

from ..config import IFNAME_RE, Config
from ..errors import Problem
from ..ports import ip_text, normalize_mac
from .types import Attachment


def parse_attachment(
    cfg: Config, interface: str, network: str, mac: str, addresses: list[str], port: str | None = None
) -> tuple[Attachment | None, list[Problem]]:
    problems: list[Problem] = []
    if not re.match(IFNAME_RE, interface):
        problems.append(Problem("interface", interface, "an interface name (1-15 of A-Z a-z 0-9 _ . : @ + -)"))
    nets = {n.name for n in cfg.overlay.networks}
    if network not in nets:
        problems.append(Problem("network", network, f"one of the overlay networks {sorted(nets)}"))
    norm = normalize_mac(mac)
    if norm is None:
        problems.append(Problem("mac", mac, "a unicast MAC address like 52:54:00:12:34:56"))
    texts: list[str] = []
    for a in addresses:
        try:
            texts.append(ip_text(ipaddress.ip_address(a)))
        except ValueError:
            problems.append(Problem("address", a, "an IPv4 or IPv6 address (no prefix length)"))
    if len(set(texts)) != len(texts):
        problems.append(Problem("address", addresses, "each address once"))
    if problems or norm is None:
        return None, problems
    return Attachment(interface, network, norm, tuple(texts), port), []


def check_attachment(cfg: Config, a: Attachment) -> list[Problem]:
    """Re-check a stored/imported attachment against the config."""
    return parse_attachment(cfg, a.interface, a.network, a.mac, list(a.addresses), a.port)[1]
