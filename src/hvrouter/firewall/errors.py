"""Errors of the firewall layer. Every message names the table and the command."""

from __future__ import annotations

from ..errors import HvrouterError


class FirewallError(HvrouterError):
    """nft failed: missing binary, timeout, or a rejected ruleset.

    `message` is what nft said (file names replaced by what the caller knows:
    the hvrouter table); `command` the command line that failed."""

    def __init__(self, command: str, message: str) -> None:
        self.command = command
        self.message = message
        super().__init__(f"{command}: {message}")
