"""Error types shared by every layer.

Validation never stops at the first problem: it collects every Problem and
raises one InputError, so the operator fixes everything in one pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the input: where, what was given, what was expected."""

    where: str
    value: object
    expected: str

    def __str__(self) -> str:
        return f"{self.where}: got {self.value!r}; expected {self.expected}"


class HvrouterError(Exception):
    """Base class of the errors the CLI turns into a message and an exit code."""

    exit_code = 1


class InputError(HvrouterError):
    """Bad input from the user: nothing was changed (exit code 2)."""

    exit_code = 2

    def __init__(self, context: str, problems: Iterable[Problem]) -> None:
        self.context = context
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.context}: {len(self.problems)} problem(s)"]
        lines.extend(f"  - {p}" for p in self.problems)
        return "\n".join(lines)


class NotFound(HvrouterError):
    exit_code = 2


class KernelError(HvrouterError):
    """A netlink request failed; carries the object and the kernel's reason."""

    def __init__(self, what: str, errno: int, reason: str = "") -> None:
        self.what = what
        self.errno = errno
        self.reason = reason
        super().__init__(f"{what}: errno {errno}{': ' + reason if reason else ''}")
