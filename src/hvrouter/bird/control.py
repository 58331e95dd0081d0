"""Driving a running BIRD through birdc and its control socket.

One birdc process per command, with a timeout: BIRD answers in milliseconds,
and a BIRD stuck or gone must give an error naming the socket and the
command, never a hung agent. `-v` makes birdc print BIRD's reply codes, which
is what the parsers and the error checks rely on.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from .errors import BirdControlError, BirdError
from .parse import (
    CODES_RECONFIGURED,
    ProtocolState,
    ReplyLine,
    errors,
    is_up_status,
    parse_bfd_sessions,
    parse_bgp_sessions,
    parse_protocols,
    parse_reply,
)

DEFAULT_TIMEOUT = 10.0


class Birdc:
    def __init__(self, socket: Path, birdc: str = "birdc", timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket = Path(socket)
        self.birdc = birdc
        self.timeout = timeout

    def run(self, *command: str, tolerate: str = "") -> list[ReplyLine]:
        """Run one birdc command; its reply lines, or BirdControlError.

        An error reply containing `tolerate` is an answer, not a failure.
        """
        cmd = " ".join(command)
        try:
            out = subprocess.run(
                [self.birdc, "-v", "-s", str(self.socket), *command],
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError:
            raise BirdError(f"{self.birdc}: not found (install bird2)") from None
        except subprocess.TimeoutExpired:
            raise BirdControlError(str(self.socket), cmd, f"no answer in {self.timeout:g} s") from None
        lines = parse_reply(out.stdout)
        problems = errors(lines)
        if tolerate and problems and all(tolerate in p for p in problems):
            return lines
        if problems or out.returncode != 0:
            # birdc's own failures (socket missing, BIRD not running) go to
            # stderr without a reply code.
            message = "; ".join(problems) or out.stderr.strip() or out.stdout.strip() or f"exit code {out.returncode}"
            raise BirdControlError(str(self.socket), cmd, message)
        return lines

    def configure(self) -> None:
        """Make BIRD re-read its configuration file (the one it was started with)."""
        lines = self.run("configure")
        if not any(ln.code in CODES_RECONFIGURED for ln in lines):
            # e.g. 0006 "Reconfiguration ignored, shutdown in progress"
            raise BirdControlError(str(self.socket), "configure", "; ".join(ln.text for ln in lines) or "no answer")

    def protocols(self) -> list[ProtocolState]:
        return parse_protocols(self.run("show", "protocols"))

    def bgp_sessions(self) -> list[dict[str, Any]]:
        """Every BGP session: name, state, bgp_state (Established...), neighbor,
        last_error and per-channel route counts (imported, exported...)."""
        return parse_bgp_sessions(self.run("show", "protocols", "all"))

    def bfd_sessions(self) -> list[dict[str, Any]]:
        # With BFD off (bfd: null, e.g. for graceful restart) BIRD answers
        # 9001 "There is no BFD protocol running": no sessions, not an error.
        return parse_bfd_sessions(self.run("show", "bfd", "sessions", tolerate="no BFD protocol"))

    def alive(self) -> bool:
        """BIRD answers on the socket and says it is up and running."""
        try:
            return is_up_status(self.run("show", "status"))
        except BirdError:
            return False
