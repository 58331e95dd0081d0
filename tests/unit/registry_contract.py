"""Backend-agnostic behaviour of the overlay registry.

Every check takes a RegistryConfig and runs against whatever backend it
names. tests/unit/test_registry_sqlite.py calls them in-process on an SQLite
file; tests/netns/test_registry_etcd.py runs this file as a script inside a
namespace with an etcd (`python registry_contract.py run CFG_JSON CHECK`),
because the etcd client must live in that namespace.

Checks that need another agent start this file again as a child process
(`child CFG_JSON OWNER MODE`), so "another process" really is one, and
SIGKILL really kills a publisher. Each check uses its own owner names and
cleans up after itself only through the registry API.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hvrouter.config import RegistryConfig
from hvrouter.overlay.registry import PublicationError, Registry, RegistryError, open_registry
from hvrouter.overlay.types import Entry, Member, Snapshot

LEASE = 2  # the shortest lease the config allows
Check = Callable[[RegistryConfig], "dict[str, float] | None"]
CHECKS: dict[str, Check] = {}


def check(fn: Check) -> Check:
    CHECKS[fn.__name__] = fn
    return fn


def vtep(k: int) -> str:
    return f"198.18.{k}.1"


def mac(k: int, i: int) -> str:
    return f"52:54:{k:02x}:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"


def dataset(owner: str, k: int, n: int, vnis: int = 3) -> tuple[list[Member], list[Entry]]:
    """Owner number k: n entries over `vnis` VNIs, an IPv4 and an IPv6 each."""
    members = [Member(100 + v, vtep(k), owner) for v in range(vnis)]
    entries = [
        Entry(100 + i % vnis, mac(k, i), (f"198.{18 + (i >> 16)}.{i >> 8 & 255}.{i & 255}", f"2001:db8:{k}::{i + 1:x}"),
              vtep(k), owner)
        for i in range(n)
    ]
    return members, entries


def of(snap: Snapshot, owner: str) -> tuple[set[Member], set[Entry]]:
    return {m for m in snap.members if m.owner == owner}, {e for e in snap.entries if e.owner == owner}


@contextmanager
def opened(cfg: RegistryConfig) -> Iterator[Registry]:
    reg = open_registry(cfg)
    try:
        yield reg
    finally:
        reg.close()


def wait_until(reg: Registry, cond: Callable[[Snapshot], bool], timeout: float, what: str) -> Snapshot:
    """Follow the registry with wait() until cond holds; the timeout is a safety net."""
    deadline = time.monotonic() + timeout
    snap = reg.snapshot()
    while not cond(snap):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last snapshot revision {snap.revision}")
        new = reg.wait(snap.revision, min(left, 1.0))
        if new is not None:
            assert new.revision != snap.revision
            snap = new
    return snap


# --- child processes -----------------------------------------------------------


def spawn(cfg: RegistryConfig, owner: str, mode: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "child", cfg.model_dump_json(), owner, mode, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def expect_line(proc: subprocess.Popen[bytes], want: str, timeout: float = 20) -> None:
    """The child's first line of output is `want` (select: a hung child fails the check)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    line = buf.split(b"\n")[0].decode(errors="replace").strip()
    if line != want:
        err = b""
        if proc.poll() is not None and proc.stderr is not None:
            err = proc.stderr.read()
        raise AssertionError(f"child said {line!r}, expected {want!r}: {err.decode(errors='replace')[-2000:]}")


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


def child(cfg: RegistryConfig, owner: str, mode: str, extra: list[str]) -> None:
    k = int(extra[0]) if extra else 7
    with opened(cfg) as reg:
        if mode == "publish-exit":  # publish, then vanish without withdrawing
            reg.publish(owner, *dataset(owner, k, 3))
            print("published", flush=True)
        elif mode == "publish-hold":  # publish and keep the lease alive until killed
            reg.publish(owner, *dataset(owner, k, 3))
            print("published", flush=True)
            while True:
                time.sleep(0.3)
                if not reg.keepalive(owner):
                    reg.publish(owner, *dataset(owner, k, 3))
        elif mode == "flip":  # republish two different sets forever (killed mid-publish)
            a, b = dataset(owner, k, 2000), dataset(owner, k + 1, 1500)
            reg.publish(owner, *a)
            print("published", flush=True)
            while True:
                reg.publish(owner, *b)
                reg.publish(owner, *a)
        else:
            raise SystemExit(f"unknown child mode {mode}")


# --- checks ---------------------------------------------------------------------


@check
def publish_replace_withdraw(cfg: RegistryConfig) -> None:
    with opened(cfg) as reg:
        s0 = reg.snapshot()
        members, entries = dataset("pr-a", 1, 5)
        reg.publish("pr-a", members, entries)
        s1 = reg.snapshot()
        assert s1.revision != s0.revision
        assert of(s1, "pr-a") == (set(members), set(entries))
        # Publishing the same content again changes nothing, not even the revision.
        reg.publish("pr-a", members, entries)
        assert reg.snapshot().revision == s1.revision
        # Replace: one entry gone, one changed, one new, a VNI left.
        changed = Entry(entries[1].vni, entries[1].mac, ("192.0.2.10",), entries[1].vtep, "pr-a")
        added = Entry(100, mac(1, 999), ("2001:db8::99",), vtep(1), "pr-a")
        new_entries = [changed, added, *entries[2:]]
        reg.publish("pr-a", members[:2], new_entries)
        s2 = reg.snapshot()
        assert s2.revision not in (s0.revision, s1.revision)
        assert of(s2, "pr-a") == (set(members[:2]), set(new_entries))
        assert reg.keepalive("pr-a") is True
        reg.withdraw("pr-a")
        s3 = reg.snapshot()
        assert of(s3, "pr-a") == (set(), set())
        assert s3.revision != s2.revision
        assert reg.keepalive("pr-a") is False  # withdrawn: the caller must publish again
        reg.withdraw("pr-a")  # idempotent


@check
def publication_is_normalised(cfg: RegistryConfig) -> None:
    with opened(cfg) as reg:
        reg.publish("nm-a", [Member(100, "2001:DB8:0:0::1", "nm-a")],
                    [Entry(100, "52:54:00:AB:CD:EF", ("2001:0db8::0001", "192.0.2.1", "192.0.2.1"), "198.18.0.1",
                           "nm-a")])
        members, entries = of(reg.snapshot(), "nm-a")
        assert members == {Member(100, "2001:db8::1", "nm-a")}
        assert entries == {Entry(100, "52:54:00:ab:cd:ef", ("2001:db8::1", "192.0.2.1"), "198.18.0.1", "nm-a")}
        reg.withdraw("nm-a")


@check
def two_owners(cfg: RegistryConfig) -> None:
    with opened(cfg) as a, opened(cfg) as b:
        ma, ea = dataset("two-a", 2, 4)
        mb, eb = dataset("two-b", 3, 6)
        a.publish("two-a", ma, ea)
        b.publish("two-b", mb, eb)
        for reg in (a, b):  # both connections see both owners
            snap = reg.snapshot()
            assert of(snap, "two-a") == (set(ma), set(ea))
            assert of(snap, "two-b") == (set(mb), set(eb))
        # the same MAC behind two owners (a VM moving): both kept, each under its owner
        moved = Entry(eb[0].vni, eb[0].mac, eb[0].ips, vtep(2), "two-a")
        a.publish("two-a", ma, [*ea, moved])
        snap = b.snapshot()
        assert moved in snap.entries and eb[0] in snap.entries
        b.withdraw("two-b")
        snap = a.snapshot()
        assert of(snap, "two-b") == (set(), set())
        assert of(snap, "two-a") == (set(ma), {*ea, moved})
        a.withdraw("two-a")


@check
def validation_names_every_entry(cfg: RegistryConfig) -> None:
    with opened(cfg) as reg:
        good = dataset("va-a", 4, 2)
        reg.publish("va-a", *good)
        before = reg.snapshot()
        bad_entries = [
            Entry(0, mac(4, 1), ("192.0.2.1",), vtep(4), "va-a"),
            Entry(100, "52:54:00:zz:00:01", ("192.0.2.1",), vtep(4), "va-a"),
            Entry(100, "01:00:5e:00:00:01", ("192.0.2.1",), vtep(4), "va-a"),
            Entry(100, mac(4, 2), ("192.0.2.300", "2001:db8::1"), vtep(4), "va-a"),
            Entry(100, mac(4, 3), ("192.0.2.3",), "not-an-ip", "va-a"),
            Entry(100, mac(4, 4), ("192.0.2.4",), vtep(4), "someone-else"),
            Entry(100, mac(4, 5), ("192.0.2.5",), vtep(4), "va-a"),
            Entry(100, mac(4, 5), ("192.0.2.6",), vtep(4), "va-a"),  # same (vni, mac), other content
        ]
        try:
            reg.publish("va-a", [Member(2**24, vtep(4), "va-a"), Member(100, "239.1.1.1", "va-a")], bad_entries)
        except PublicationError as exc:
            text = str(exc)
            assert "'va-a'" in text and "9 problem(s)" in text, text
            for needle in ("member (vni=16777216, vtep=198.18.4.1).vni", "member (vni=100, vtep=239.1.1.1).vtep",
                           f"entry (vni=0, mac={mac(4, 1)}).vni", "entry (vni=100, mac=52:54:00:zz:00:01).mac",
                           "entry (vni=100, mac=01:00:5e:00:00:01).mac", "'192.0.2.300'", "'not-an-ip'",
                           "'someone-else'", "one entry per (vni, mac)"):
                assert needle in text, (needle, text)
        else:
            raise AssertionError("invalid publication accepted")
        try:
            reg.publish("bad/owner", [], [])
        except RegistryError as exc:
            assert "'bad/owner'" in str(exc)
        else:
            raise AssertionError("owner with '/' accepted")
        after = reg.snapshot()
        assert after.revision == before.revision and of(after, "va-a") == (set(good[0]), set(good[1]))
        reg.withdraw("va-a")


@check
def wait_times_out_and_wakes_on_other_process(cfg: RegistryConfig) -> None:
    with opened(cfg) as reg:
        snap = reg.snapshot()
        assert reg.wait(-1, 0).revision == snap.revision  # type: ignore[union-attr]
        t = time.monotonic()
        assert reg.wait(snap.revision, 0.4) is None
        took = time.monotonic() - t
        assert 0.35 <= took < 1.5, took
        proc = spawn(cfg, "wk-child", "publish-exit", "5")
        try:
            t = time.monotonic()
            new = reg.wait(snap.revision, 20)
            assert new is not None and new.revision != snap.revision
            new = wait_until(reg, lambda s: bool(of(s, "wk-child")[1]), 20, "the child's entries")
            assert of(new, "wk-child")[1] == set(dataset("wk-child", 5, 3)[1])
            assert proc.wait(20) == 0, proc.stderr.read().decode() if proc.stderr else ""
        finally:
            kill(proc)
        reg.withdraw("wk-child")


@check
def expiry_removes_data_and_changes_revision(cfg: RegistryConfig) -> None:
    cfg = cfg.model_copy(update={"lease": LEASE})
    with opened(cfg) as reg:
        ma, ea = dataset("ex-a", 6, 3)
        mb, eb = dataset("ex-b", 7, 3)
        reg.publish("ex-a", ma, ea)
        reg.publish("ex-b", mb, eb)
        t0 = time.monotonic()
        snap = reg.snapshot()
        assert of(snap, "ex-a")[1] == set(ea)
        # ex-b is kept alive, ex-a is not; no one publishes: wait() must see the expiry.
        while time.monotonic() - t0 < LEASE + 6:
            assert reg.keepalive("ex-b")
            new = reg.wait(snap.revision, 0.3)
            if new is not None and not of(new, "ex-a")[1]:
                break
        else:
            raise AssertionError("ex-a did not expire")
        gone_after = time.monotonic() - t0
        assert LEASE - 0.5 <= gone_after <= LEASE + 3, gone_after
        assert new.revision != snap.revision
        assert of(new, "ex-b") == (set(mb), set(eb))
        assert reg.keepalive("ex-a") is False
        reg.publish("ex-a", ma, ea)  # publishing again brings it back
        assert of(reg.snapshot(), "ex-a")[1] == set(ea)
        reg.withdraw("ex-a")
        reg.withdraw("ex-b")


@check
def sigkill_publisher_vanishes_other_owner_stays(cfg: RegistryConfig) -> None:
    cfg = cfg.model_copy(update={"lease": LEASE})
    with opened(cfg) as reg:
        ms, es = dataset("sk-stay", 8, 3)
        reg.publish("sk-stay", ms, es)
        proc = spawn(cfg, "sk-victim", "publish-hold", "9")
        try:
            expect_line(proc, "published")
            snap = reg.snapshot()
            assert of(snap, "sk-victim")[1] == set(dataset("sk-victim", 9, 3)[1])
            # The child's keepalives hold its data past its lease.
            t = time.monotonic()
            while time.monotonic() - t < LEASE + 1:
                assert reg.keepalive("sk-stay")
                time.sleep(0.3)
            assert of(reg.snapshot(), "sk-victim")[1], "kept-alive data expired"
            proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            proc.wait(10)
            deadline = killed + LEASE + 6
            snap = reg.snapshot()
            while of(snap, "sk-victim")[1] or of(snap, "sk-victim")[0]:
                assert time.monotonic() < deadline, "killed publisher's data did not expire"
                assert reg.keepalive("sk-stay")
                snap = reg.wait(snap.revision, 0.3) or snap
            took = time.monotonic() - killed
            assert took <= LEASE + 3, took
            assert of(snap, "sk-stay") == (set(ms), set(es))
        finally:
            kill(proc)
        reg.withdraw("sk-stay")


@check
def sigkill_mid_publish_leaves_old_or_new(cfg: RegistryConfig) -> None:
    with opened(cfg) as reg:
        a, b = dataset("fl-x", 10, 2000), dataset("fl-x", 11, 1500)
        sets = [frozenset(a[1]), frozenset(b[1])]
        for delay in (0.35, 0.6, 0.9):
            proc = spawn(cfg, "fl-x", "flip", "10")
            try:
                expect_line(proc, "published")
                time.sleep(delay)
            finally:
                kill(proc)
            entries = frozenset(of(reg.snapshot(), "fl-x")[1])
            assert entries in sets, f"after SIGKILL: {len(entries)} entries, neither the old nor the new set"
        reg.withdraw("fl-x")


@check
def large_publication_timed(cfg: RegistryConfig) -> dict[str, float]:
    """10k entries per owner, three owners; prints the timings (see the report)."""
    with opened(cfg) as reg:
        times: dict[str, float] = {}
        for k in range(3):
            data = dataset(f"lg-{k}", 20 + k, 10_000)
            t = time.perf_counter()
            reg.publish(f"lg-{k}", *data)
            times[f"publish-10k-new-{k}"] = time.perf_counter() - t
        t = time.perf_counter()
        snap = reg.snapshot()
        times["snapshot-30k"] = time.perf_counter() - t
        assert sum(1 for e in snap.entries if e.owner.startswith("lg-")) == 30_000
        members, entries = dataset("lg-0", 20, 10_000)
        entries[17] = Entry(entries[17].vni, entries[17].mac, ("192.0.2.17",), entries[17].vtep, "lg-0")
        t = time.perf_counter()
        reg.publish("lg-0", members, entries)
        times["publish-10k-one-changed"] = time.perf_counter() - t
        t = time.perf_counter()
        new = reg.wait(snap.revision, 10)
        times["wait-30k"] = time.perf_counter() - t
        assert new is not None and entries[17] in new.entries
        for k in range(3):
            reg.withdraw(f"lg-{k}")
        return times


def main(argv: list[str]) -> None:
    cmd, cfg = argv[0], RegistryConfig.model_validate_json(argv[1])
    if cmd == "child":
        child(cfg, argv[2], argv[3], argv[4:])
    elif cmd == "run":
        times = CHECKS[argv[2]](cfg)
        print(f"ok {argv[2]} {json.dumps(times or {})}", flush=True)
    else:
        raise SystemExit(f"usage: {argv[0]} run CFG_JSON CHECK | child CFG_JSON OWNER MODE [K]")


if __name__ == "__main__":
    main(sys.argv[1:])
