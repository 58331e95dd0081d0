"""Errors of the BIRD layer. Every message names the file, socket or command."""

from __future__ import annotations

from ..errors import HvrouterError


class BirdError(HvrouterError):
    """Something about BIRD failed (missing binary, timeout, bad answer)."""


class BirdConfigError(BirdError):
    """`bird -p` rejected a configuration; `message` is what bird said."""

    def __init__(self, message: str, text: str = "") -> None:
        self.message = message
        self.text = text  # the rejected configuration, for the caller to show or save
        super().__init__(f"BIRD rejected the configuration: {message}")


class BirdControlError(BirdError):
    """A birdc command failed; names the socket and the command."""

    def __init__(self, socket: str, command: str, message: str) -> None:
        self.socket = socket
        self.command = command
        self.message = message
        super().__init__(f"birdc -s {socket} {command}: {message}")
