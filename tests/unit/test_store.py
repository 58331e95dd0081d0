"""The SQLite desired-state store: round trips, all-or-nothing writes, persistence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from factories import wide_port

from hvrouter.errors import InputError, NotFound
from hvrouter.model import Port
from hvrouter.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "state")
    yield s
    s.close()


def rich_port() -> Port:
    base = wide_port(1)
    return Port(
        base.name,
        base.mac,
        base.network,
        base.ipv4,
        base.ipv6,
        ("192.0.2.53/32", "2001:db8:ffff::53/128"),
    )


def test_add_list_get_delete(store: Store) -> None:
    a, b = rich_port(), wide_port(2)
    store.add_ports([b])
    store.add_ports([a])
    assert store.list_ports() == [a, b]  # ordered by name
    assert store.get_port("tap1") == a
    assert store.delete_port("tap1") == a
    assert store.list_ports() == [b]
    with pytest.raises(NotFound):
        store.get_port("tap1")


def test_conflicting_add_changes_nothing(store: Store) -> None:
    store.add_ports([wide_port(0), wide_port(1)])
    before = store.list_ports()
    clash = Port("tap9", "52:54:00:99:99:99", "wide", wide_port(1).ipv4)
    with pytest.raises(InputError) as info:
        store.add_ports([clash])
    assert [p.where for p in info.value.problems] == ["port.address"]
    assert store.list_ports() == before


def test_batch_is_all_or_nothing(store: Store) -> None:
    store.add_ports([wide_port(0)])
    before = store.list_ports()
    batch = [wide_port(1), wide_port(2), Port("tap0", "52:54:00:99:99:99", "wide")]
    with pytest.raises(InputError) as info:
        store.add_ports(batch)
    assert [(p.where, p.value) for p in info.value.problems] == [("ports[2].name", "tap0")]
    assert store.list_ports() == before


def test_batch_with_internal_duplicate_is_rejected(store: Store) -> None:
    dup = Port("other", wide_port(1).mac, "wide")
    with pytest.raises(InputError):
        store.add_ports([wide_port(1), dup])
    assert store.list_ports() == []


def test_delete_unknown_port(store: Store) -> None:
    store.add_ports([wide_port(0)])
    with pytest.raises(InputError) as info:
        store.delete_port("nope")
    assert info.value.exit_code == 2
    assert [(p.where, p.value) for p in info.value.problems] == [("name", "nope")]
    assert [p.name for p in store.list_ports()] == ["tap0"]


def test_data_persists_across_reopen(tmp_path: Path) -> None:
    ports = [rich_port(), wide_port(2), wide_port(3)]
    first = Store(tmp_path)
    first.add_ports(ports)
    first.close()
    again = Store(tmp_path)
    assert again.list_ports() == sorted(ports, key=lambda p: p.name)
    again.close()


def test_data_version_sees_other_connections(tmp_path: Path) -> None:
    reader, writer = Store(tmp_path), Store(tmp_path)
    v0 = reader.data_version()
    assert reader.data_version() == v0  # nothing committed: stable
    writer.add_ports([wide_port(0)])
    v1 = reader.data_version()
    assert v1 != v0
    writer.delete_port("tap0")
    assert reader.data_version() != v1
    reader.close()
    writer.close()
