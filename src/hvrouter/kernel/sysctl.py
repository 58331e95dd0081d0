"""/proc/sys settings: host-wide ones and a few per tap (neighbour proxy delay
cannot be read or set in bulk over netlink without an O(n) walk per device)."""

from __future__ import annotations

import os
from collections.abc import Iterable

from ..model import Sysctl

PROC = "/proc/sys/"


def read(paths: Iterable[str]) -> list[Sysctl]:
    out = []
    for path in paths:
        try:
            fd = os.open(PROC + path, os.O_RDONLY)
        except OSError:
            continue  # absent (device gone, IPv6 disabled): a planned write reports it
        try:
            out.append(Sysctl(path, os.read(fd, 64).decode().strip()))
        finally:
            os.close(fd)
    return out


def proxy_delay_paths(ifname: str) -> list[str]:
    """Proxy ARP/NDP answers to broadcast/multicast solicitations are delayed
    up to 0.8 s by default. The per-device value is only reachable here: the
    netlink route walks every device's parms (3.2 s per 10k taps) and the
    "default" entry does not exist outside the initial namespace."""
    paths = [f"net/ipv4/neigh/{ifname}/proxy_delay"]
    if os.path.exists(f"{PROC}net/ipv6/neigh/{ifname}"):
        paths.append(f"net/ipv6/neigh/{ifname}/proxy_delay")
    return paths


def write(s: Sysctl) -> None:
    fd = os.open(PROC + s.name, os.O_WRONLY)
    try:
        os.write(fd, s.value.encode() + b"\n")
    finally:
        os.close(fd)
