"""parse_port (one port against the config) and conflicts (ports against each other)."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network
from typing import Any

import pytest
from factories import mac_of, wide_port
from hypothesis import given, settings
from hypothesis import strategies as st

from hvrouter.config import Config
from hvrouter.errors import Problem
from hvrouter.model import Port
from hvrouter.ports import claimed, conflicts, eui64_link_local, parse_port


def good(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "tap1",
        "mac": "52:54:00:00:00:01",
        "network": "public",
        "ipv4": ["203.0.113.10"],
        "ipv6": ["2001:db8:cb00:7101::/64"],
    }
    data.update(over)
    return data


def bad(cfg: Config, **over: Any) -> list[Problem]:
    port, problems = parse_port(good(**over), cfg)
    assert port is None
    assert problems
    return problems


def one(cfg: Config, where: str, **over: Any) -> Problem:
    (problem,) = bad(cfg, **over)
    assert problem.where == where
    return problem


# -- parse_port ---------------------------------------------------------------


def test_good_port(example_cfg: Config) -> None:
    port, problems = parse_port(good(mac="52-54-00-AB-CD-EF"), example_cfg)
    assert problems == []
    assert port == Port("tap1", "52:54:00:ab:cd:ef", "public", ("203.0.113.10",), ("2001:db8:cb00:7101::/64",))


def test_addresses_are_normalized(example_cfg: Config) -> None:
    port, problems = parse_port(
        good(ipv4=[" 203.0.113.10 "], ipv6=["2001:DB8:CB00:7101:0:0:0:0/64"], extra=["2001:db8:ffff:0::53"]),
        example_cfg,
    )
    assert problems == []
    assert port is not None
    assert port.ipv4 == ("203.0.113.10",)
    assert port.ipv6 == ("2001:db8:cb00:7101::/64",)
    assert port.extra == ("2001:db8:ffff::53/128",)


@pytest.mark.parametrize("mac", ["52:54:00:00:00", "52:54:00:00:00:0g", "525400000001", "", None, 42])
def test_malformed_mac(example_cfg: Config, mac: object) -> None:
    assert one(example_cfg, "port.mac", mac=mac).value == mac


@pytest.mark.parametrize("mac", ["01:00:5e:00:00:01", "33:33:00:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"])
def test_multicast_broadcast_and_zero_mac(example_cfg: Config, mac: str) -> None:
    assert "unicast" in one(example_cfg, "port.mac", mac=mac).expected


@pytest.mark.parametrize("addr", ["203.0.113.300", "203.0.113", "not-an-ip", "203.0.113.10/32"])
def test_bad_ipv4(example_cfg: Config, addr: str) -> None:
    p = one(example_cfg, "port.ipv4[0]", ipv4=[addr])
    assert p.value == addr
    assert "IPv4 address" in p.expected


def test_ipv6_address_in_ipv4_field(example_cfg: Config) -> None:
    p = one(example_cfg, "port.ipv4[0]", ipv4=["2001:db8:cb00:7101::1"])
    assert "IPv4" in p.expected


def test_ipv4_outside_network(example_cfg: Config) -> None:
    p = one(example_cfg, "port.ipv4[0]", ipv4=["198.51.100.10"])
    assert "203.0.113.0/24" in p.expected


@pytest.mark.parametrize(
    ("addr", "fragment"),
    [("203.0.113.254", "gateway"), ("203.0.113.0", "network/broadcast"), ("203.0.113.255", "network/broadcast")],
)
def test_reserved_ipv4(example_cfg: Config, addr: str, fragment: str) -> None:
    assert fragment in one(example_cfg, "port.ipv4[0]", ipv4=[addr]).expected


def test_same_address_twice(example_cfg: Config) -> None:
    assert one(example_cfg, "port.ipv4[1]", ipv4=["203.0.113.10", "203.0.113.10"]).value == "203.0.113.10"


def test_unknown_network(example_cfg: Config) -> None:
    p = one(example_cfg, "port.network", network="pubic")
    assert p.value == "pubic"
    assert "public" in p.expected


@pytest.mark.parametrize("pfx", ["2001:db8:cb00:7100::/60", "2001:db8:cb00:7101::/96", "2001:db8:cb00:7101::1"])
def test_prefix_of_wrong_length(example_cfg: Config, pfx: str) -> None:
    assert "/64" in one(example_cfg, "port.ipv6[0]", ipv6=[pfx]).expected


def test_ipv6_outside_network_and_host_bits(example_cfg: Config) -> None:
    problems = bad(example_cfg, ipv6=["2001:db8:ffff::/64", "2001:db8:cb00:7101::1/64"])
    assert [p.where for p in problems] == ["port.ipv6[0]", "port.ipv6[1]"]
    assert "2001:db8:cb00:7100::/56" in problems[0].expected


def test_bare_address_in_shared_prefix_is_a_128(shared_cfg: Config) -> None:
    port, problems = parse_port(
        {"name": "vm1", "mac": "52:54:00:00:00:01", "network": "lan", "ipv6": "2001:db8:aa::10"}, shared_cfg
    )
    assert problems == []
    assert port is not None
    assert port.ipv6 == ("2001:db8:aa::10/128",)
    assert port.to_json()["ipv6"] == ["2001:db8:aa::10"]


def test_shared_prefix_rejects_a_64(shared_cfg: Config) -> None:
    problems = parse_port(
        {"name": "vm1", "mac": "52:54:00:00:00:01", "network": "lan", "ipv6": ["2001:db8:aa::/64"]}, shared_cfg
    )[1]
    assert [p.where for p in problems] == ["port.ipv6[0]"]


def test_all_problems_reported_together(example_cfg: Config) -> None:
    problems = bad(
        example_cfg,
        name="a-name-that-is-far-too-long",
        mac="01:00:5e:00:00:01",
        ipv4=["203.0.113.300", "198.51.100.1", "2001:db8::1", "203.0.113.254", "203.0.113.11"],
        ipv6=["2001:db8:cb00:7100::/60", "2001:db8:cb00:7102::/64"],
        colour="blue",
    )
    assert [p.where for p in problems] == [
        "port.colour",
        "port.name",
        "port.mac",
        "port.ipv4[0]",
        "port.ipv4[1]",
        "port.ipv4[2]",
        "port.ipv4[3]",
        "port.ipv6[0]",
    ]


def test_where_prefix_is_used(example_cfg: Config) -> None:
    problems = parse_port(good(mac="zz"), example_cfg, "ports.jsonl:7")[1]
    assert [p.where for p in problems] == ["ports.jsonl:7.mac"]


def test_eui64_link_local() -> None:
    assert eui64_link_local("52:54:00:12:34:56") == "fe80::5054:ff:fe12:3456"
    assert eui64_link_local("00:16:3e:00:00:01") == "fe80::216:3eff:fe00:1"


# -- conflicts -----------------------------------------------------------------


def port(
    name: str, mac: str, ipv4: tuple[str, ...] = (), ipv6: tuple[str, ...] = (), extra: tuple[str, ...] = ()
) -> Port:
    return Port(name, mac, "public", ipv4, ipv6, extra)


EXISTING = port("tap1", "52:54:00:00:00:01", ("203.0.113.10",), ("2001:db8:cb00:7100::/56",))


def test_duplicate_name() -> None:
    (p,) = conflicts([port("tap1", "52:54:00:00:00:02")], [EXISTING])
    assert (p.where, p.value) == ("port.name", "tap1")


def test_mac_reused() -> None:
    (p,) = conflicts([port("tap2", "52:54:00:00:00:01")], [EXISTING])
    assert (p.where, p.value) == ("port.mac", "52:54:00:00:00:01")
    assert "tap1" in p.expected


def test_same_ipv4_on_two_ports() -> None:
    (p,) = conflicts([port("tap2", "52:54:00:00:00:02", ("203.0.113.10",))], [EXISTING])
    assert (p.where, p.value) == ("port.address", "203.0.113.10")
    assert "tap1" in p.expected


@pytest.mark.parametrize(
    ("existing", "new"),
    [
        ("2001:db8:cb00:7100::/56", "2001:db8:cb00:7101::/64"),  # new inside existing
        ("2001:db8:cb00:71ff::/64", "2001:db8:cb00:7100::/56"),  # existing inside new (last /64)
        ("2001:db8:cb00:7101::/64", "2001:db8:cb00:7101::/64"),  # exact duplicate
        ("2001:db8:cb00:7101::/64", "2001:db8:cb00:7101::5"),  # a /128 inside
    ],
)
def test_overlapping_ipv6(existing: str, new: str) -> None:
    old = port("tap1", "52:54:00:00:00:01", ipv6=(existing,))
    (p,) = conflicts([port("tap2", "52:54:00:00:00:02", ipv6=(new if "/" in new else new + "/128",))], [old])
    assert p.where == "port.address"
    assert p.value == new
    assert "tap1" in p.expected


def test_adjacent_prefixes_and_other_family_do_not_conflict() -> None:
    old = port("tap1", "52:54:00:00:00:01", ("203.0.113.10",), ("2001:db8:cb00:7100::/64",))
    new = port(
        "tap2",
        "52:54:00:00:00:02",
        ("203.0.113.11",),
        # ::cb00:710a is 203.0.113.10 as an integer: families must not mix.
        ("2001:db8:cb00:7101::/64", "::cb00:710a/128"),
    )
    assert conflicts([new], [old]) == []


def test_shared_extra_prefix_is_not_a_conflict() -> None:
    a = port("tap1", "52:54:00:00:00:01", extra=("192.0.2.53/32",))
    b = port("tap2", "52:54:00:00:00:02", extra=("192.0.2.53/32",))
    assert conflicts([b], [a]) == []


def test_duplicates_within_one_batch() -> None:
    batch = [
        port("tap1", "52:54:00:00:00:01", ("203.0.113.10",), ("2001:db8:cb00:7101::/64",)),
        port("tap2", "52:54:00:00:00:02", ("203.0.113.11",)),
        port("tap1", "52:54:00:00:00:02", ("203.0.113.10",), ("2001:db8:cb00:7101::/64",)),
    ]
    problems = conflicts(batch, [])
    assert {(p.where, p.value) for p in problems if p.where.endswith((".name", ".mac"))} == {
        ("ports[2].name", "tap1"),
        ("ports[2].mac", "52:54:00:00:00:02"),
    }
    addr = sorted(str(p.value) for p in problems if p.where.endswith(".address"))
    assert addr == ["2001:db8:cb00:7101::/64", "203.0.113.10"]


def test_no_false_positives_for_2000_ports() -> None:
    ports = [wide_port(i) for i in range(2000)]
    assert conflicts(ports, []) == []
    assert conflicts(ports[1000:], ports[:1000]) == []


def test_10k_ports_with_one_clash() -> None:
    ports = [wide_port(i) for i in range(10_000)]
    assert conflicts(ports[5000:], ports[:5000]) == []
    clash = Port("dup", "52:54:01:00:00:01", "wide", ports[7777].ipv4)
    (p,) = conflicts([clash], ports)
    assert (p.where, p.value) == ("port.address", str(ports[7777].ipv4[0]))
    assert "tap7777" in p.expected


# Tiny address pools so that random ports collide often.
_BASE6 = int(IPv6Address("2001:db8::"))
_v4 = st.sampled_from([f"203.0.113.{i}" for i in range(1, 9)])


def _v6(plen: int) -> st.SearchStrategy[str]:
    return st.integers(0, 15).map(lambda off: str(IPv6Network((_BASE6 + (off >> (128 - plen) << (128 - plen)), plen))))


def _ports(first_mac: int) -> st.SearchStrategy[list[Port]]:
    # One prefix length per port, as parse_port enforces; lengths differ between ports.
    v6 = st.sampled_from([124, 126, 128]).flatmap(lambda plen: st.lists(_v6(plen), max_size=2, unique=True))
    spec = st.tuples(st.lists(_v4, max_size=2, unique=True), v6)
    return st.lists(spec, max_size=5).map(
        lambda specs: [
            Port(f"p{first_mac + i}", mac_of(first_mac + i), "public", tuple(a), tuple(b))
            for i, (a, b) in enumerate(specs)
        ]
    )


def _overlap(a: Port, b: Port) -> bool:
    return any(x.overlaps(y) for x in claimed(a) for y in claimed(b) if x.version == y.version)


def _named(problems: list[Problem], n_new: int) -> set[int]:
    """Indexes of the new ports named by address problems."""
    return {int(p.where[6:].split("]")[0]) if n_new > 1 else 0 for p in problems if p.where.endswith(".address")}


@settings(max_examples=200)
@given(new=_ports(100), existing=_ports(200))
def test_address_conflicts_match_brute_force(new: list[Port], existing: list[Port]) -> None:
    problems = conflicts(new, existing)
    named = _named(problems, len(new))
    clashing = {
        i
        for i, n in enumerate(new)
        if any(_overlap(n, e) for e in existing) or any(_overlap(n, m) for j, m in enumerate(new) if j != i)
    }
    assert bool(named) == bool(clashing)  # refused exactly when something overlaps
    assert named <= clashing  # and never naming a port without a clash


def test_every_port_clashing_with_an_existing_one_is_named() -> None:
    old = port("tap1", "52:54:00:00:00:01", ipv6=("2001:db8:cb00:7100::/56",))
    batch = [
        port("tapa", "52:54:00:00:00:0a", ipv6=("2001:db8:cb00:7100::/64",)),
        port("tapb", "52:54:00:00:00:0b", ipv6=("2001:db8:cb00:7100::/60",)),
    ]
    problems = conflicts(batch, [old])
    assert any(p.where == "ports[0].address" and "tap1" in p.expected for p in problems)
    assert any(p.where == "ports[1].address" and "tap1" in p.expected for p in problems)
