"""The miss controller: answers the kernel's L2/L3 miss notifications from a
local cache of the registry (no registry round trip per miss).

Defences against miss storms (flannel dropped its miss handling after "L3
miss and route not found" loops):
* negative cache: an address the registry does not know is not looked up
  again for `negative_ttl` seconds (and costs one dict lookup meanwhile);
* a token bucket on kernel writes (`rate` per second): misses above it are
  dropped and counted; the kernel signals a miss again on the next packet;
* repeated misses for an entry written less than `REPEAT_S` ago are ignored
  (the entry is on its way).

The core (`MissCache`) is pure and unit-tested; `run` wires it to the kernel.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import MissConfig
from .plan import MissTables
from .types import Fdb, Miss, Neigh

REPEAT_S = 0.2
NEGATIVE_MAX = 200_000  # entries kept in the negative cache at most


def fdb_entry(dev: str, mac: str, vtep: str) -> Fdb:
    """What the controller writes for a MAC: kept until the registry drops it
    (no ageing: with nolearning nothing would refresh it, and a flow would
    lose a packet to a new miss every ageing period), marked extern_learn so
    the planner's pass leaves it alone."""
    return Fdb(dev, mac, vtep, permanent=True, ext_learned=True)


def neigh_entry(dev: str, ip: str, mac: str) -> Neigh:
    """Permanent: a REACHABLE entry turns STALE after ~30 s and the VXLAN
    proxy then neither answers nor signals a miss again; permanent entries
    are also exempt from the neighbour table's gc_thresh limits (1024 by
    default, shared by every namespace)."""
    return Neigh(dev, ip, mac, permanent=True, ext_learned=True)


@dataclass
class Counters:
    misses: int = 0
    resolved: int = 0
    unknown: int = 0
    negative_hits: int = 0
    repeats: int = 0
    rate_limited: int = 0
    foreign: int = 0  # misses on devices that are not dynamic overlay devices
    removed: int = 0
    overruns: int = 0
    kernel_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class MissCache:
    cfg: MissConfig
    clock: Callable[[], float] = time.monotonic
    devices: dict[int, str] = field(default_factory=dict)  # ifindex -> vxlan device name
    tables: MissTables = field(default_factory=lambda: MissTables({}, {}))
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        self._negative: dict[tuple[str, int, str], float] = {}
        self._installed: dict[tuple[str, str, str], tuple[str, float]] = {}  # (kind, dev, key) -> (value, when)
        self._tokens = float(self.cfg.rate)
        self._last = self.clock()

    # -- cache updates ------------------------------------------------------

    def update(self, devices: dict[int, str], tables: MissTables) -> tuple[list[Fdb | Neigh], list[Fdb | Neigh]]:
        """New registry content. Returns (delete, replace): entries we wrote
        that the registry no longer has, and ones whose answer changed."""
        self.devices = dict(devices)
        self.tables = tables
        self._negative.clear()  # anything may be known now
        delete: list[Fdb | Neigh] = []
        replace: list[Fdb | Neigh] = []
        now = self.clock()
        for (kind, dev, key), (value, _) in list(self._installed.items()):
            table = (tables.l2 if kind == "l2" else tables.l3).get(dev, {})
            new = table.get(key)
            if new == value:
                continue
            if new is None:
                del self._installed[(kind, dev, key)]
                delete.append(self._entry(kind, dev, key, value))
            else:
                self._installed[(kind, dev, key)] = (new, now)
                replace.append(self._entry(kind, dev, key, new))
        self.counters.removed += len(delete)
        return delete, replace

    @staticmethod
    def _entry(kind: str, dev: str, key: str, value: str) -> Fdb | Neigh:
        return fdb_entry(dev, key, value) if kind == "l2" else neigh_entry(dev, key, value)

    def adopt(self, entry: Fdb | Neigh) -> None:
        """An entry a previous agent wrote and the registry still has: ours
        now (so its withdrawal removes it)."""
        if isinstance(entry, Fdb):
            self._installed[("l2", entry.device, entry.mac)] = (entry.dst, self.clock())
        else:
            self._installed[("l3", entry.device, entry.ip)] = (entry.mac, self.clock())

    # -- misses ---------------------------------------------------------------

    def _take(self, now: float) -> bool:
        self._tokens = min(float(self.cfg.rate), self._tokens + (now - self._last) * self.cfg.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def handle(self, misses: list[Miss]) -> list[Fdb | Neigh]:
        """Kernel entries answering these misses (to be written with replace)."""
        out: list[Fdb | Neigh] = []
        now = self.clock()
        c = self.counters
        negative = self._negative
        installed = self._installed
        for miss in misses:
            c.misses += 1
            dev = self.devices.get(miss.ifindex)
            if dev is None:
                c.foreign += 1
                continue
            nkey = (miss.kind, miss.ifindex, miss.key)
            exp = negative.get(nkey)
            if exp is not None:
                if exp > now:
                    c.negative_hits += 1
                    continue
                del negative[nkey]
            if miss.kind == "l2":
                value = self.tables.l2.get(dev, {}).get(miss.key)
            else:
                value = self.tables.l3.get(dev, {}).get(miss.key)
            if value is None:
                c.unknown += 1
                if len(negative) >= NEGATIVE_MAX:
                    self._purge(now)
                negative[nkey] = now + self.cfg.negative_ttl
                continue
            ikey = (miss.kind, dev, miss.key)
            prev = installed.get(ikey)
            if prev is not None and prev[0] == value and now - prev[1] < REPEAT_S:
                c.repeats += 1
                continue
            if not self._take(now):
                c.rate_limited += 1
                continue
            installed[ikey] = (value, now)
            c.resolved += 1
            if miss.kind == "l2":
                out.append(fdb_entry(dev, miss.key, value))
            else:
                out.append(neigh_entry(dev, miss.key, value))
                # The unicast frame that follows the ARP/ND answer would miss
                # on the MAC next: answer that now too.
                vtep = self.tables.l2.get(dev, {}).get(value)
                if vtep is not None:
                    installed[("l2", dev, value)] = (vtep, now)
                    out.append(fdb_entry(dev, value, vtep))
        return out

    def _purge(self, now: float) -> None:
        for k in [k for k, exp in self._negative.items() if exp <= now]:
            del self._negative[k]
        if len(self._negative) >= NEGATIVE_MAX:  # all fresh: drop the oldest half
            for k in list(self._negative)[: NEGATIVE_MAX // 2]:
                del self._negative[k]

    def stats(self) -> dict[str, int]:
        d = self.counters.as_dict()
        d["installed"] = len(self._installed)
        d["negative_cached"] = len(self._negative)
        return d
