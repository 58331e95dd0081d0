"""Miss controller core: answers from the cache, negative cache, rate limit, GC."""

from __future__ import annotations

from hvrouter.config import MissConfig
from hvrouter.overlay.controller import MissCache, fdb_entry, neigh_entry
from hvrouter.overlay.plan import MissTables
from hvrouter.overlay.types import Miss


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(rate: int = 1000, neg: float = 5.0) -> tuple[MissCache, Clock]:
    clock = Clock()
    c = MissCache(MissConfig(rate=rate, negative_ttl=neg), clock=clock)
    tables = MissTables({"vx": {"52:54:00:00:00:02": "2001:db8::2"}}, {"vx": {"198.19.100.11": "52:54:00:00:00:02"}})
    c.update({7: "vx"}, tables)
    return c, clock


def test_l2_and_l3_misses_resolve() -> None:
    c, _ = make()
    out = c.handle([Miss("l2", 7, "52:54:00:00:00:02")])
    assert out == [fdb_entry("vx", "52:54:00:00:00:02", "2001:db8::2")]
    out = c.handle([Miss("l3", 7, "198.19.100.11")])
    assert neigh_entry("vx", "198.19.100.11", "52:54:00:00:00:02") in out
    assert c.counters.resolved == 2


def test_unknown_is_negative_cached_until_ttl() -> None:
    c, clock = make(neg=5.0)
    assert c.handle([Miss("l2", 7, "52:54:00:00:00:99")] * 3) == []
    assert c.counters.unknown == 1 and c.counters.negative_hits == 2
    clock.t += 6
    c.handle([Miss("l2", 7, "52:54:00:00:00:99")])
    assert c.counters.unknown == 2


def test_registry_update_clears_negative_cache_and_removes_stale() -> None:
    c, clock = make()
    c.handle([Miss("l2", 7, "52:54:00:00:00:03")])  # unknown for now
    c.handle([Miss("l2", 7, "52:54:00:00:00:02")])
    delete, replace = c.update({7: "vx"}, MissTables({"vx": {"52:54:00:00:00:03": "2001:db8::3"}}, {"vx": {}}))
    assert delete == [fdb_entry("vx", "52:54:00:00:00:02", "2001:db8::2")] and replace == []
    assert c.handle([Miss("l2", 7, "52:54:00:00:00:03")]) == [fdb_entry("vx", "52:54:00:00:00:03", "2001:db8::3")]
    # moved VM: the entry is rewritten with its new VTEP
    _, replace = c.update({7: "vx"}, MissTables({"vx": {"52:54:00:00:00:03": "2001:db8::4"}}, {"vx": {}}))
    assert replace == [fdb_entry("vx", "52:54:00:00:00:03", "2001:db8::4")]


def test_rate_limit_drops_excess_writes() -> None:
    clock = Clock()
    c = MissCache(MissConfig(rate=10, negative_ttl=1), clock=clock)
    macs = {f"52:54:00:00:01:{i:02x}": "2001:db8::2" for i in range(50)}
    c.update({1: "vx"}, MissTables({"vx": macs}, {}))
    out = c.handle([Miss("l2", 1, m) for m in macs])
    assert len(out) == 10 and c.counters.rate_limited == 40
    clock.t += 1.0
    assert len(c.handle([Miss("l2", 1, m) for m in list(macs)[10:]])) == 10


def test_foreign_devices_and_repeats_ignored() -> None:
    c, clock = make()
    assert c.handle([Miss("l2", 99, "52:54:00:00:00:02")]) == []
    assert c.counters.foreign == 1
    c.handle([Miss("l2", 7, "52:54:00:00:00:02")])
    assert c.handle([Miss("l2", 7, "52:54:00:00:00:02")]) == []  # in flight
    clock.t += 1
    assert len(c.handle([Miss("l2", 7, "52:54:00:00:00:02")])) == 1  # aged out in the kernel: written again


def test_storm_of_unknown_misses_stays_bounded() -> None:
    c, _ = make(rate=100000)
    misses = [Miss("l2", 7, f"52:54:01:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}") for i in range(100_000)]
    assert c.handle(misses) == []
    assert c.counters.unknown == 100_000
    assert c.handle([Miss("l2", 7, "52:54:00:00:00:02")]) != []
