"""The overlay registry: every VTEP agent publishes what it has locally and
watches the union of what the live agents published.

An owner (one agent, named by its vtep id) publishes its whole set of
Members and Entries at once; the set replaces what it published before.
Each owner holds a lease of `RegistryConfig.lease` seconds: publish and
keepalive refresh it, and when it runs out (the agent died, even by
SIGKILL) the owner's data is no longer part of any snapshot. Two backends:

* sqlite (registry_sqlite.py): one file shared by the agents on one machine
  (the lab, a single host);
* etcd (registry_etcd.py): etcd v3 through its JSON gateway (etcd3gw), keys
  attached to an etcd lease.

Both validate a publication the same way (validate_publication): every
problem is reported at once, naming the entry.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Protocol

from ..config import RegistryConfig
from ..errors import HvrouterError, Problem
from .types import Entry, Member, Snapshot

VNI_MAX = 2**24 - 1
# Owner names end up in etcd keys and SQL rows: no '/', bounded length.
OWNER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$")
_SHOWN = 20  # problems listed in one error; the rest are counted


class RegistryError(HvrouterError):
    """A registry operation failed; the message names the backend, where
    (file or endpoint) and what was being done."""


class PublicationError(RegistryError):
    """A publication was refused: every problem, each naming its entry."""

    def __init__(self, owner: str, problems: Iterable[Problem]) -> None:
        self.owner = owner
        self.problems = list(problems)
        lines = [f"registry: publication of owner {owner!r} refused: {len(self.problems)} problem(s)"]
        lines.extend(f"  - {p}" for p in self.problems[:_SHOWN])
        if len(self.problems) > _SHOWN:
            lines.append(f"  ... and {len(self.problems) - _SHOWN} more")
        super().__init__("\n".join(lines))


class Registry(Protocol):
    def publish(self, owner: str, members: Iterable[Member], entries: Iterable[Entry]) -> None:
        """Replace everything `owner` published, atomically; (re)starts or
        refreshes its lease."""

    def keepalive(self, owner: str) -> bool:
        """Refresh the lease. False if the lease was lost (expired or
        revoked): the caller must publish again."""

    def withdraw(self, owner: str) -> None:
        """Remove everything `owner` published, now (clean shutdown)."""

    def snapshot(self) -> Snapshot:
        """What the live owners published. `revision` changes whenever the
        content changes, expiry included."""

    def wait(self, revision: int, timeout: float) -> Snapshot | None:
        """Block until the live content differs from the one of `revision`
        and return the new snapshot, or return None after `timeout` seconds.
        A negative revision returns the current snapshot at once."""

    def close(self) -> None: ...


def open_registry(cfg: RegistryConfig) -> Registry:
    """The backend `cfg.backend` names; connection problems raise RegistryError."""
    if cfg.backend == "sqlite":
        from .registry_sqlite import SqliteRegistry

        return SqliteRegistry(cfg.path, cfg.lease)
    if cfg.backend == "etcd":
        from .registry_etcd import EtcdRegistry

        return EtcdRegistry(cfg.endpoints, cfg.prefix, cfg.lease)
    raise RegistryError(f"registry: unknown backend {cfg.backend!r}; expected sqlite or etcd")


# --- validation ----------------------------------------------------------------


def check_owner(owner: object) -> str:
    if not isinstance(owner, str) or not OWNER_RE.fullmatch(owner):
        raise RegistryError(f"registry: owner {owner!r} is not a valid name; expected {OWNER_RE.pattern}")
    return owner


# Field checkers: the normalised value, or None after appending
# (field, value, expected) to `bad`; the caller names the entry only when
# something is wrong (the happy path of 10k entries builds no strings).
_Bad = list[tuple[str, object, str]]


def _vni(value: object, bad: _Bad) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= VNI_MAX:
        bad.append(("vni", value, f"an integer in 1..{VNI_MAX}"))
        return None
    return value


def _addr(text: object) -> tuple[str, bool] | None:
    """(normalised text, is unicast) or None when `text` is not an address.

    inet_pton/inet_ntop is ~10x faster than ipaddress (10k entries are
    published at once) and gives the same text, except where glibc prints an
    embedded IPv4 in dotted form: those few go through ipaddress."""
    if not isinstance(text, str) or "%" in text:
        return None
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    try:
        packed = socket.inet_pton(family, text)
    except (OSError, ValueError):
        return None
    norm = socket.inet_ntop(family, packed)
    if family == socket.AF_INET6 and "." in norm:
        norm = str(ipaddress.IPv6Address(packed))
    if family == socket.AF_INET:
        unicast = packed != b"\0\0\0\0" and not 224 <= packed[0] <= 239
    else:
        unicast = packed != bytes(16) and packed[0] != 0xFF
    return norm, unicast


def normalise_ip(text: str) -> str:
    """The text ipaddress prints for `text`; ValueError if not an address."""
    parsed = _addr(text)
    if parsed is None:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address")
    return parsed[0]


def _vtep(value: object, bad: _Bad, cache: dict[object, str]) -> str | None:
    if isinstance(value, str) and value in cache:  # an owner shares a few VTEP addresses
        return cache[value]
    parsed = _addr(value)
    if parsed is None:
        bad.append(("vtep", value, "an IPv4 or IPv6 address"))
        return None
    if not parsed[1]:
        bad.append(("vtep", value, "a unicast address (the VTEP's underlay address)"))
        return None
    cache[value] = parsed[0]
    return parsed[0]


def _mac(value: object, bad: _Bad) -> str | None:
    mac = value.lower() if isinstance(value, str) else ""
    if not _MAC_RE.fullmatch(mac):
        bad.append(("mac", value, "a MAC address aa:bb:cc:dd:ee:ff"))
        return None
    if int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        bad.append(("mac", value, "a unicast MAC (not zero, group bit clear)"))
        return None
    return mac


def _ips(value: object, bad: _Bad) -> tuple[str, ...] | None:
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        bad.append(("ips", value, "a tuple of IP addresses"))
        return None
    out: dict[str, None] = {}  # normalised, duplicates dropped, order kept
    ok = True
    for ip in value:
        parsed = _addr(ip)
        if parsed is None or not parsed[1]:
            bad.append(("ips", ip, "a unicast IPv4 or IPv6 address"))
            ok = False
        else:
            out[parsed[0]] = None
    return tuple(out) if ok else None


def _name(kind: str, obj: object, **fields: object) -> str:
    shown = ", ".join(f"{k}={getattr(obj, k, '?')!s}" for k in fields)
    return f"{kind} ({shown})"


def validate_publication(
    owner: str, members: Iterable[Member], entries: Iterable[Entry]
) -> tuple[list[Member], list[Entry]]:
    """Normalised members and entries of `owner` (MACs lowercase, addresses
    in ipaddress' compressed form, exact duplicates dropped), or
    PublicationError listing every problem, each naming its member or entry.
    Entries are unique per (vni, mac)."""
    check_owner(owner)
    problems: list[Problem] = []
    vteps: dict[object, str] = {}
    bad: _Bad = []

    def report(where: str) -> None:
        problems.extend(Problem(f"{where}.{f}", v, exp) for f, v, exp in bad)
        bad.clear()

    out_members: dict[tuple[int, str], Member] = {}
    for m in members:
        if not isinstance(m, Member):
            problems.append(Problem("member", m, "a Member"))
            continue
        if m.owner != owner:
            bad.append(("owner", m.owner, f"the publishing owner {owner!r}"))
        vni, vtep = _vni(m.vni, bad), _vtep(m.vtep, bad, vteps)
        if bad:
            report(_name("member", m, vni=1, vtep=1))
        elif vni is not None and vtep is not None:
            out_members[(vni, vtep)] = Member(vni, vtep, owner)
    out_entries: dict[tuple[int, str], Entry] = {}
    for e in entries:
        if not isinstance(e, Entry):
            problems.append(Problem("entry", e, "an Entry"))
            continue
        if e.owner != owner:
            bad.append(("owner", e.owner, f"the publishing owner {owner!r}"))
        vni, mac = _vni(e.vni, bad), _mac(e.mac, bad)
        ips, vtep = _ips(e.ips, bad), _vtep(e.vtep, bad, vteps)
        if bad:
            report(_name("entry", e, vni=1, mac=1))
            continue
        if vni is None or mac is None or ips is None or vtep is None:  # pragma: no cover - bad is set then
            continue
        entry = Entry(vni, mac, ips, vtep, owner)
        prev = out_entries.setdefault((vni, mac), entry)
        if prev != entry:
            problems.append(Problem(_name("entry", e, vni=1, mac=1), f"{entry.ips} behind {entry.vtep}",
                                    f"one entry per (vni, mac); already {prev.ips} behind {prev.vtep}"))
    if problems:
        raise PublicationError(owner, problems)
    return list(out_members.values()), list(out_entries.values())
