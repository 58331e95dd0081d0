"""Desired-state store: SQLite in WAL mode, one transaction per change.

synchronous=FULL in WAL mode makes a committed change durable even across a
power cut; a SIGKILL at any moment leaves either the old or the new state.
Validation happens inside the write transaction (BEGIN IMMEDIATE), so two
concurrent `port add` cannot both pass the uniqueness checks.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .config import Config
from .errors import InputError, NotFound, Problem
from .model import Port
from .overlay.types import Attachment
from .ports import conflicts

SCHEMA_VERSION = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ports (
    name TEXT PRIMARY KEY,
    mac TEXT NOT NULL UNIQUE,
    network TEXT NOT NULL,
    ipv4 TEXT NOT NULL,
    ipv6 TEXT NOT NULL,
    extra TEXT NOT NULL,
    nat TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS attachments (
    interface TEXT PRIMARY KEY,
    network TEXT NOT NULL,
    mac TEXT NOT NULL,
    addresses TEXT NOT NULL,
    port TEXT,
    UNIQUE (network, mac)
);
"""


def _list(text: str) -> tuple[str, ...]:
    # Most ports have no extra or NAT addresses: skip the JSON decoder for
    # those (40k calls per load at 10k ports).
    return () if text == "[]" else tuple(json.loads(text))


def _row_to_port(row: sqlite3.Row | tuple[str, str, str, str, str, str, str]) -> Port:
    name, mac, network, ipv4, ipv6, extra, nat = row
    return Port(name, mac, network, _list(ipv4), _list(ipv6), _list(extra), _list(nat))


class Store:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "hvrouter.db"
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._write():
            for stmt in SCHEMA.strip().split(";"):
                if stmt.strip():
                    self._db.execute(stmt)
            # Schema 1 (before NAT addresses) gains the column in place.
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(ports)")}
            if "nat" not in columns:
                self._db.execute("ALTER TABLE ports ADD COLUMN nat TEXT NOT NULL DEFAULT '[]'")
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def data_version(self) -> int:
        """Changes when another connection commits (cheap change detection)."""
        row = self._db.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def list_ports(self) -> list[Port]:
        rows = self._db.execute(
            "SELECT name, mac, network, ipv4, ipv6, extra, nat FROM ports ORDER BY name"
        ).fetchall()
        return [_row_to_port(r) for r in rows]

    def get_port(self, name: str) -> Port:
        row = self._db.execute(
            "SELECT name, mac, network, ipv4, ipv6, extra, nat FROM ports WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            raise NotFound(f"port {name!r}: no such port")
        return _row_to_port(row)

    def add_ports(self, ports: Sequence[Port], cfg: Config | None = None) -> None:
        """Add ports in one transaction, or none of them if any conflicts."""
        with self._write() as db:
            existing = self.list_ports()
            problems = conflicts(ports, existing)
            if problems:
                raise InputError("port add" if len(ports) == 1 else "port import", problems)
            db.executemany(
                "INSERT INTO ports(name, mac, network, ipv4, ipv6, extra, nat) VALUES (?,?,?,?,?,?,?)",
                [
                    (
                        p.name,
                        p.mac,
                        p.network,
                        json.dumps(p.ipv4),
                        json.dumps(p.ipv6),
                        json.dumps(p.extra),
                        json.dumps(p.nat),
                    )
                    for p in ports
                ],
            )

    def delete_port(self, name: str) -> Port:
        return self.delete_ports([name])[0]

    def delete_ports(self, names: Sequence[str]) -> list[Port]:
        """Delete all the named ports in one transaction, or none if one is unknown."""
        with self._write() as db:
            ports: list[Port] = []
            problems: list[Problem] = []
            for name in names:
                try:
                    ports.append(self.get_port(name))
                except NotFound:
                    problems.append(Problem("name", name, "the name of an existing port"))
            if problems:
                raise InputError("port del (nothing deleted)", problems)
            db.executemany("DELETE FROM ports WHERE name = ?", [(n,) for n in names])
            # A port's overlay attachments (its VM's second interface) go with it.
            db.executemany("DELETE FROM attachments WHERE port = ?", [(n,) for n in names])
        return ports

    # --- overlay attachments ------------------------------------------------

    def list_attachments(self) -> list[Attachment]:
        rows = self._db.execute(
            "SELECT interface, network, mac, addresses, port FROM attachments ORDER BY interface"
        ).fetchall()
        return [Attachment(i, n, m, _list(a), p) for i, n, m, a, p in rows]

    def add_attachments(self, items: Sequence[Attachment], validate: Callable[[Attachment], list[Problem]]) -> None:
        """Add attachments in one transaction, or none: `validate` checks each
        one against the config; names and MACs must be unique (per network)."""
        with self._write() as db:
            existing = self.list_attachments()
            ports = {p.name for p in self.list_ports()}
            taken_if = {a.interface for a in existing}
            taken_mac = {(a.network, a.mac): a.interface for a in existing}
            problems: list[Problem] = []
            for a in items:
                problems += validate(a)
                if a.interface in taken_if:
                    problems.append(Problem("interface", a.interface, "an interface not attached already"))
                other = taken_mac.get((a.network, a.mac))
                if other is not None:
                    problems.append(Problem("mac", a.mac, f"a MAC not used in {a.network} already (by {other})"))
                if a.port is not None and a.port not in ports:
                    problems.append(Problem("port", a.port, "the name of an existing port"))
                taken_if.add(a.interface)
                taken_mac[(a.network, a.mac)] = a.interface
            if problems:
                raise InputError("overlay attach (nothing attached)", problems)
            db.executemany(
                "INSERT INTO attachments(interface, network, mac, addresses, port) VALUES (?,?,?,?,?)",
                [(a.interface, a.network, a.mac, json.dumps(a.addresses), a.port) for a in items],
            )

    def delete_attachments(self, interfaces: Sequence[str]) -> list[Attachment]:
        """Detach all named interfaces in one transaction, or none if one is unknown."""
        with self._write() as db:
            have = {a.interface: a for a in self.list_attachments()}
            missing = [i for i in interfaces if i not in have]
            if missing:
                raise InputError(
                    "overlay detach (nothing detached)",
                    [Problem("interface", i, "an attached interface") for i in missing],
                )
            db.executemany("DELETE FROM attachments WHERE interface = ?", [(i,) for i in interfaces])
        return [have[i] for i in interfaces]
