"""The SQLite overlay registry: the backend-agnostic contract (real child
processes, SIGKILL, real leases of 2 s) plus SQLite specifics driven by an
injected clock (expiry without writers, reaping, durability of the file)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
import registry_contract as contract

from hvrouter.config import RegistryConfig
from hvrouter.overlay.registry import PublicationError, RegistryError, normalise_ip, open_registry
from hvrouter.overlay.registry_sqlite import SqliteRegistry
from hvrouter.overlay.types import Entry, Member


def cfg_for(tmp_path: Path, lease: int = 10) -> RegistryConfig:
    return RegistryConfig(backend="sqlite", path=tmp_path / "reg" / "registry.sqlite", lease=lease)


@pytest.mark.parametrize("name", sorted(contract.CHECKS))
def test_contract(name: str, tmp_path: Path) -> None:
    times = contract.CHECKS[name](cfg_for(tmp_path))
    if times:
        print(f"sqlite {name}: {times}")
        # The brief's budget is 0.5 s; the bound leaves room for a busy shared machine.
        slow = {k: v for k, v in times.items() if v > 1.0}
        assert not slow, slow


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def test_expiry_changes_revision_without_any_write(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "r.sqlite"
    reg = SqliteRegistry(path, 2, clock=clock)
    reader = SqliteRegistry(path, 2, clock=clock)
    try:
        reg.publish("a", *contract.dataset("a", 1, 3))
        reg.publish("b", *contract.dataset("b", 2, 3))
        s1 = reader.snapshot()
        assert {e.owner for e in s1.entries} == {"a", "b"}
        clock.advance(1.5)
        assert reg.keepalive("b")
        clock.advance(1.0)  # a: 2.5 s since its publish, b: 1.0 s since its keepalive
        version = reader.db.execute("PRAGMA data_version").fetchone()[0]
        s2 = reader.snapshot()
        assert reader.db.execute("PRAGMA data_version").fetchone()[0] == version  # nobody wrote
        assert {e.owner for e in s2.entries} == {"b"} and {m.owner for m in s2.members} == {"b"}
        assert s2.revision > s1.revision
        # The rows are still in the file until a writer reaps them ...
        assert reader.db.execute("SELECT count(*) FROM entries WHERE owner = 'a'").fetchone()[0] == 3
        assert reader.snapshot().revision == s2.revision  # ... and the revision is stable meanwhile
        assert reg.keepalive("a") is False  # an expired owner is not revived; keepalive reaps it
        assert reader.db.execute("SELECT count(*) FROM entries WHERE owner = 'a'").fetchone()[0] == 0
        s3 = reader.snapshot()
        assert s3.entries == s2.entries and s3.revision > s2.revision
    finally:
        reg.close()
        reader.close()


def test_wait_wakes_on_expiry_with_no_writer(tmp_path: Path) -> None:
    clock = Clock()
    reg = SqliteRegistry(tmp_path / "r.sqlite", 5, clock=clock)
    try:
        reg.publish("a", *contract.dataset("a", 1, 3))
        snap = reg.snapshot()
        assert reg.wait(snap.revision, 0.1) is None
        timer = threading.Timer(0.2, clock.advance, (6.0,))
        timer.start()
        t = time.monotonic()
        new = reg.wait(snap.revision, 5)
        took = time.monotonic() - t
        timer.join()
        assert new is not None and not new.entries and new.revision != snap.revision
        assert took < 0.5, took  # polled at POLL_S, not at the timeout
    finally:
        reg.close()


def test_wait_wakes_on_another_connection_quickly(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    reader, writer = SqliteRegistry(path, 10), SqliteRegistry(path, 10)
    try:
        snap = reader.snapshot()
        timer = threading.Timer(0.2, writer.publish, ("w", *contract.dataset("w", 3, 2)))
        timer.start()
        t = time.monotonic()
        new = reader.wait(snap.revision, 5)
        took = time.monotonic() - t
        timer.join()
        assert new is not None and {e.owner for e in new.entries} == {"w"}
        assert took < 0.5, took
        # A keepalive commits (data_version moves) but changes no content: no wake-up.
        assert reader.wait(new.revision, 0.1) is None
        timer = threading.Timer(0.05, writer.keepalive, ("w",))
        timer.start()
        assert reader.wait(new.revision, 0.3) is None
        timer.join()
    finally:
        reader.close()
        writer.close()


def test_committed_publication_is_in_the_file(tmp_path: Path) -> None:
    """Nothing is kept only in memory: a plain sqlite3 reader of the file
    (another process's view) sees the publication right after publish()."""
    path = tmp_path / "r.sqlite"
    reg = SqliteRegistry(path, 60)
    try:
        reg.publish("a", [Member(100, "198.18.0.1", "a")], [Entry(100, "52:54:00:00:00:01", ("192.0.2.1",),
                                                                   "198.18.0.1", "a")])
        db = sqlite3.connect(path)
        try:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute("SELECT vni, mac, ips, vtep FROM entries WHERE owner = 'a'").fetchall() == [
                (100, "52:54:00:00:00:01", "192.0.2.1", "198.18.0.1")]
        finally:
            db.close()
        assert reg.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        reg.close()


def test_open_errors_name_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RegistryError, match=r"sqlite registry .*file/sub/r\.sqlite"):
        open_registry(RegistryConfig(backend="sqlite", path=blocker / "sub" / "r.sqlite"))
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RegistryError, match=r"garbage\.sqlite.*cannot open"):
        SqliteRegistry(garbage, 10)
    reg = SqliteRegistry(tmp_path / "ok.sqlite", 10)
    reg.close()
    with pytest.raises(RegistryError, match="after close"):
        reg.snapshot()


def test_schema_version_mismatch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    SqliteRegistry(path, 10).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = 99 WHERE key = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(RegistryError, match="schema version 99"):
        SqliteRegistry(path, 10)


def test_publication_error_lists_problems_and_caps_them(tmp_path: Path) -> None:
    reg = SqliteRegistry(tmp_path / "r.sqlite", 10)
    try:
        bad = [Entry(100, f"52:54:00:00:00:{i:02x}", (f"192.0.2.{300 + i}",), "198.18.0.1", "a") for i in range(30)]
        with pytest.raises(PublicationError) as err:
            reg.publish("a", [], bad)
        assert len(err.value.problems) == 30
        assert "30 problem(s)" in str(err.value) and "... and 10 more" in str(err.value)
        assert "entry (vni=100, mac=52:54:00:00:00:00).ips: got '192.0.2.300'" in str(err.value)
    finally:
        reg.close()


@pytest.mark.parametrize("text", [
    "192.0.2.1", "2001:db8::1", "2001:DB8:0:0:0:0:0:1", "2001:db8:0:1:1:1:1:1", "::ffff:192.0.2.1",
    "::192.0.2.1", "::1", "fe80::1", "2001:db8::", "1:0:0:1:0:0:0:1", "0:0:1::", "::ffff:0:0",
])
def test_fast_ip_normalisation_matches_ipaddress(text: str) -> None:
    import ipaddress

    assert normalise_ip(text) == str(ipaddress.ip_address(text))


@pytest.mark.parametrize("text", ["192.0.2.01", "192.0.2", "1.2.3.4.5", "2001:db8::1::2", "fe80::1%eth0", "", "x"])
def test_fast_ip_normalisation_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        normalise_ip(text)
