"""Host-level /proc/sys settings (a handful, so plain file I/O)."""

from __future__ import annotations

from pathlib import Path

from ..model import Sysctl

PROC = Path("/proc/sys")


def _path(name: str) -> Path:
    return PROC / name.replace(".", "/")


def read(names: list[str]) -> list[Sysctl]:
    out = []
    for name in names:
        try:
            out.append(Sysctl(name, _path(name).read_text().strip()))
        except OSError:
            continue  # absent (e.g. IPv6 disabled): planned write will report it
    return out


def write(s: Sysctl) -> None:
    _path(s.name).write_text(s.value + "\n")
