"""SQLite registry backend: one file shared by the agents of one machine.

Durability: WAL, synchronous=FULL, every change one transaction taken with
BEGIN IMMEDIATE (writers serialise; readers never block). Nothing lives only
in memory, so a SIGKILLed publisher loses nothing it had committed.

Leases: each owner row carries `expires`, a wall-clock timestamp (the agents
share the machine's clock). Readers ignore owners whose lease has run out;
every write transaction first reaps them (deletes their rows).

Revision: a counter in `meta`, bumped by every write that changes the
content (publish with a difference, withdraw, reap), combined with the
number of owners that expired but were not reaped yet:
`counter * 2**20 + expired`. At a given counter the set of expired owners
only grows with time (keepalive refuses to revive an expired owner), so the
pair names the content exactly and the revision changes on an expiry even
when no one writes; a reap bumps the counter, so the value only increases.

wait() polls cheaply: `PRAGMA data_version` (changes when another
connection commits) and the next expiry time, every POLL_S seconds; only
when one of them moved is the revision re-read, and only when the revision
moved is the full snapshot loaded.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .registry import RegistryError, check_owner, validate_publication
from .types import Entry, Member, Snapshot

SCHEMA_VERSION = 1
POLL_S = 0.025
EXPIRED_BITS = 20
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS owners (owner TEXT PRIMARY KEY, expires REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (
    owner TEXT NOT NULL, vni INTEGER NOT NULL, vtep TEXT NOT NULL,
    PRIMARY KEY (owner, vni, vtep)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    owner TEXT NOT NULL, vni INTEGER NOT NULL, mac TEXT NOT NULL,
    ips TEXT NOT NULL, vtep TEXT NOT NULL,
    PRIMARY KEY (owner, vni, mac)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS owners_expires ON owners (expires);
"""


class SqliteRegistry:
    """Registry in the SQLite file `path`; `lease` seconds per owner.
    `clock` (wall-clock seconds) is injectable for tests; every process
    sharing the file must use the same clock."""

    def __init__(self, path: Path, lease: float, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.lease = float(lease)
        self.clock = clock
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db: sqlite3.Connection | None = sqlite3.connect(
                str(self.path), timeout=30, isolation_level=None, check_same_thread=False
            )
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RegistryError(f"sqlite registry {self.path}: cannot enable WAL (journal_mode is {mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._write("create schema"):
                # not executescript(): it would COMMIT our BEGIN IMMEDIATE
                for stmt in filter(str.strip, SCHEMA.split(";")):
                    self._db.execute(stmt)
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('revision', 1)")
                found = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
                if found != SCHEMA_VERSION:
                    raise RegistryError(
                        f"sqlite registry {self.path}: schema version {found}; this hvrouter expects {SCHEMA_VERSION}"
                    )
        except sqlite3.Error as exc:
            raise RegistryError(f"sqlite registry {self.path}: cannot open: {exc}") from exc
        except OSError as exc:
            raise RegistryError(f"sqlite registry {self.path}: cannot create its directory: {exc}") from exc

    # -- plumbing ----------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RegistryError(f"sqlite registry {self.path}: used after close()")
        return self._db

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise RegistryError(f"sqlite registry {self.path}: {what} failed: {exc}") from exc

    @contextmanager
    def _read(self, what: str) -> Iterator[sqlite3.Connection]:
        db = self.db
        try:
            db.execute("BEGIN")  # one consistent read view for all the SELECTs
            try:
                yield db
            finally:
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise RegistryError(f"sqlite registry {self.path}: {what} failed: {exc}") from exc

    def _reap(self, db: sqlite3.Connection, now: float) -> bool:
        expired = [r[0] for r in db.execute("SELECT owner FROM owners WHERE expires <= ?", (now,))]
        for owner in expired:
            self._delete_owner(db, owner)
        return bool(expired)

    @staticmethod
    def _delete_owner(db: sqlite3.Connection, owner: str) -> bool:
        existed = db.execute("DELETE FROM owners WHERE owner = ?", (owner,)).rowcount > 0
        db.execute("DELETE FROM members WHERE owner = ?", (owner,))
        db.execute("DELETE FROM entries WHERE owner = ?", (owner,))
        return existed

    @staticmethod
    def _bump(db: sqlite3.Connection) -> None:
        db.execute("UPDATE meta SET value = value + 1 WHERE key = 'revision'")

    def _state(self, db: sqlite3.Connection, now: float) -> tuple[int, float | None]:
        """(revision, next expiry time of a live owner or None)."""
        counter = db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0]
        expired, nxt = db.execute(
            "SELECT COALESCE(SUM(expires <= ?1), 0), MIN(CASE WHEN expires > ?1 THEN expires END) FROM owners",
            (now,),
        ).fetchone()
        return (int(counter) << EXPIRED_BITS) + min(int(expired), 2**EXPIRED_BITS - 1), nxt

    # -- Registry -----------------------------------------------------------------

    def publish(self, owner: str, members: Iterable[Member], entries: Iterable[Entry]) -> None:
        ms, es = validate_publication(owner, members, entries)
        new_m = {(m.vni, m.vtep) for m in ms}
        new_e = {(e.vni, e.mac): (" ".join(e.ips), e.vtep) for e in es}
        with self._lock, self._write(f"publish of owner {owner!r}") as db:
            now = self.clock()
            changed = self._reap(db, now)
            live = db.execute("SELECT 1 FROM owners WHERE owner = ?", (owner,)).fetchone() is not None
            if live:
                old_m = {(v, t) for v, t in db.execute("SELECT vni, vtep FROM members WHERE owner = ?", (owner,))}
                old_e = {(v, m): (i, t) for v, m, i, t in
                         db.execute("SELECT vni, mac, ips, vtep FROM entries WHERE owner = ?", (owner,))}
            else:
                changed |= self._delete_owner(db, owner)  # leftovers, defensively
                old_m, old_e = set(), {}
            del_m = old_m - new_m
            add_m = new_m - old_m
            del_e = [k for k in old_e if k not in new_e]
            put_e = [(owner, k[0], k[1], v[0], v[1]) for k, v in new_e.items() if old_e.get(k) != v]
            if del_m:
                db.executemany("DELETE FROM members WHERE owner = ? AND vni = ? AND vtep = ?",
                               [(owner, v, t) for v, t in del_m])
            if add_m:
                db.executemany("INSERT INTO members VALUES (?, ?, ?)", [(owner, v, t) for v, t in add_m])
            if del_e:
                db.executemany("DELETE FROM entries WHERE owner = ? AND vni = ? AND mac = ?",
                               [(owner, v, m) for v, m in del_e])
            if put_e:
                db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)", put_e)
            db.execute("INSERT OR REPLACE INTO owners VALUES (?, ?)", (owner, now + self.lease))
            if changed or not live or del_m or add_m or del_e or put_e:
                self._bump(db)

    def keepalive(self, owner: str) -> bool:
        check_owner(owner)
        with self._lock, self._write(f"keepalive of owner {owner!r}") as db:
            now = self.clock()
            if self._reap(db, now):
                self._bump(db)
            return db.execute("UPDATE owners SET expires = ? WHERE owner = ?",
                              (now + self.lease, owner)).rowcount > 0

    def withdraw(self, owner: str) -> None:
        check_owner(owner)
        with self._lock, self._write(f"withdraw of owner {owner!r}") as db:
            changed = self._reap(db, self.clock())
            if self._delete_owner(db, owner) or changed:
                self._bump(db)

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot()[0]

    def _snapshot(self) -> tuple[Snapshot, float | None]:
        with self._read("snapshot") as db:
            now = self.clock()
            revision, nxt = self._state(db, now)
            members = frozenset(
                Member(vni, vtep, owner) for vni, vtep, owner in db.execute(
                    "SELECT m.vni, m.vtep, m.owner FROM members m JOIN owners o ON o.owner = m.owner "
                    "WHERE o.expires > ?", (now,))
            )
            entries = frozenset(
                Entry(vni, mac, tuple(ips.split()) if ips else (), vtep, owner)
                for vni, mac, ips, vtep, owner in db.execute(
                    "SELECT e.vni, e.mac, e.ips, e.vtep, e.owner FROM entries e JOIN owners o ON o.owner = e.owner "
                    "WHERE o.expires > ?", (now,))
            )
        return Snapshot(revision, members, entries), nxt

    def revision(self) -> int:
        """The current revision, without loading the content."""
        with self._lock, self._read("revision") as db:
            return self._state(db, self.clock())[0]

    def wait(self, revision: int, timeout: float) -> Snapshot | None:
        deadline = time.monotonic() + timeout
        with self._lock:
            if revision < 0:
                return self._snapshot()[0]
            try:
                seen = self.db.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error as exc:
                raise RegistryError(f"sqlite registry {self.path}: wait failed: {exc}") from exc
            with self._read("wait") as db:
                current, nxt = self._state(db, self.clock())
        while True:
            if current != revision:
                with self._lock:
                    snap, nxt = self._snapshot()
                current = snap.revision
                if current != revision:
                    return snap
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(POLL_S, remaining))
            with self._lock:
                try:
                    version = self.db.execute("PRAGMA data_version").fetchone()[0]
                except sqlite3.Error as exc:
                    raise RegistryError(f"sqlite registry {self.path}: wait failed: {exc}") from exc
                now = self.clock()
                if version == seen and (nxt is None or now < nxt):
                    continue
                seen = version
                with self._read("wait") as db:
                    current, nxt = self._state(db, now)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
