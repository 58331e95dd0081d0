"""The etcd backend's incremental watch: after every wait, the snapshot it
built from the changed owners equals a full read by another client, over a
random sequence of publishes, withdrawals and a lease expiry by 4 owners."""

from __future__ import annotations

import textwrap

import pytest
from etcd_fixture import EtcdNs, etcd_ns  # noqa: F401 - etcd_ns is a fixture

pytestmark = pytest.mark.netns

CODE = """
import random, sys, time
from hvrouter.config import RegistryConfig
from hvrouter.overlay.registry import open_registry
from hvrouter.overlay.types import Entry, Member

cfg = RegistryConfig(backend="etcd", endpoints=(sys.argv[1],), prefix="/watchtest/", lease=30)
short = RegistryConfig(backend="etcd", endpoints=(sys.argv[1],), prefix="/watchtest/", lease=2)
pub, watcher, reader = open_registry(cfg), open_registry(cfg), open_registry(cfg)


def drain(snap):
    while True:
        new = watcher.wait(snap.revision, 0.3)
        if new is None:
            return snap
        snap = new

rng = random.Random(7)
snap = watcher.wait(-1, 1.0)
checked = 0
for step in range(25):
    owner = f"o{rng.randrange(4)}"
    action = rng.random()
    if action < 0.15:
        pub.withdraw(owner)
    else:
        n = rng.randrange(0, 30)
        entries = [Entry(100 + rng.randrange(2), f"52:54:00:00:{i:02x}:{int(owner[1]):02x}", (f"198.19.{i}.{int(owner[1]) + 1}",),
                         f"2001:db8:ff00::{int(owner[1]) + 1}", owner) for i in rng.sample(range(64), n)]
        pub.publish(owner, [Member(100, f"2001:db8:ff00::{int(owner[1]) + 1}", owner)], entries)
    snap = drain(snap)
    full = reader.snapshot()
    assert (snap.members, snap.entries) == (full.members, full.entries), (step, owner, len(snap.entries), len(full.entries))
    checked += 1
for owner in ("o0", "o1", "o2", "o3"):
    pub.withdraw(owner)
# a short-lease owner that stops keeping its lease: the view follows etcd's DELETE events
gone = open_registry(short)
gone.publish("x", [Member(100, "2001:db8:ff00::9", "x")], [Entry(100, "52:54:00:00:09:09", (), "2001:db8:ff00::9", "x")])
snap = drain(snap)
assert {e.owner for e in snap.entries} == {"x"}, snap.entries
deadline = time.monotonic() + 10
while time.monotonic() < deadline and (snap.members or snap.entries):
    new = watcher.wait(snap.revision, 1.0)
    if new is not None:
        snap = new
assert not snap.members and not snap.entries, len(snap.entries)
assert snap.members == reader.snapshot().members
print("ok", checked)
"""


def test_incremental_view_matches_full_reads(etcd_ns: EtcdNs) -> None:  # noqa: F811
    out = etcd_ns.python("-c", textwrap.dedent(CODE), etcd_ns.endpoint, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert out.stdout.strip() == "ok 25"
