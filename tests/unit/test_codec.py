"""rtnetlink codec: what we encode decodes back to the same model object.

Decoded objects are compared against planned ones by equality, so any
difference here would make a no-op reconcile churn."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, IPv6Network

import pytest
from factories import example_dict, make_config
from hypothesis import example, given
from hypothesis import strategies as st

from hvrouter.config import Config
from hvrouter.kernel import codec
from hvrouter.kernel.netlink import attr, parse_attrs
from hvrouter.model import (
    AF_INET,
    AF_INET6,
    DEVCONF_FORWARDING,
    DEVCONF_PROXY_ARP,
    DEVCONF_RP_FILTER,
    RT_SCOPE_HOST,
    RT_SCOPE_LINK,
    RT_SCOPE_UNIVERSE,
    RTN_BLACKHOLE,
    RTN_UNICAST,
    RTN_UNREACHABLE,
    Address,
    DevConf,
    Link,
    ProxyNeigh,
    Route,
    Rule,
)
from hvrouter.plan.desired import plan, plan_rules
from hvrouter.ports import parse_port

PROTO = 211
OTHER_PROTO = 186  # BIRD's: seen in the same dumps, never ours
decode_route = codec.make_route_decoder(PROTO)
decode_address = codec.make_address_decoder(PROTO)
decode_rule = codec.make_rule_decoder(PROTO, 20000, 20099)
decode_proxy = codec.make_proxy_decoder(PROTO)


def wire(body: bytes, msg_type: int = 0) -> bytes:
    """What a dump hands the decoders: netlink header + body."""
    return struct.pack("=IHHII", 16 + len(body), msg_type, 0, 0, 0) + body


def decode(decoder: Callable[[bytes, int, int], object], request: codec.Request) -> object:
    msg = wire(request[2], request[0])
    return decoder(msg, 16, len(msg))


ROUTES = [
    Route(AF_INET, 90, "203.0.113.10/32", 0, RTN_UNICAST, RT_SCOPE_LINK, 7),
    Route(AF_INET6, 90, "2001:db8:cb00:7101::/64", 1024, RTN_UNICAST, RT_SCOPE_UNIVERSE, 7, "fe80::5054:ff:fe00:1"),
    Route(AF_INET6, 90, "2001:db8:aa::10/128", 1024, RTN_UNICAST, RT_SCOPE_UNIVERSE, 7),
    Route(AF_INET, 90, "0.0.0.0/0", 2**32 - 1, RTN_UNREACHABLE),
    Route(AF_INET6, 20, "::/0", 2**32 - 1, RTN_UNREACHABLE),
    Route(AF_INET, 100_000, "198.51.100.0/24", 5, RTN_BLACKHOLE),  # table id > 255
]


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.dst)
def test_route_round_trip(route: Route) -> None:
    request = codec.route_msg(route, PROTO, codec.ADD)
    assert request[:2] == (codec.RTM_NEWROUTE, codec.ADD)
    assert decode(decode_route, request) == route
    assert decode(codec.make_route_decoder(OTHER_PROTO), request) is None


def test_route_delete_request() -> None:
    request = codec.route_msg(ROUTES[0], PROTO, codec.ADD, delete=True)
    assert request[:2] == (codec.RTM_DELROUTE, 0)
    assert decode(decode_route, request) == ROUTES[0]


@pytest.mark.parametrize(
    "addr",
    [
        Address(AF_INET, 7, "203.0.113.254", 32, RT_SCOPE_LINK),
        Address(AF_INET6, 7, "2001:db8::1", 64, RT_SCOPE_UNIVERSE),
        Address(AF_INET, 1, "192.0.2.1", 24, RT_SCOPE_HOST),
    ],
    ids=lambda a: a.address,
)
def test_address_round_trip(addr: Address) -> None:
    request = codec.address_msg(addr, PROTO, codec.ADD)
    assert request[0] == codec.RTM_NEWADDR
    assert decode(decode_address, request) == addr
    assert decode(codec.make_address_decoder(OTHER_PROTO), request) is None


RULES = [
    Rule(AF_INET, 20000, 254, iif="lo", suppress_prefixlen=0),
    Rule(AF_INET6, 20010, 20, dst="2001:db8::/32"),
    Rule(AF_INET, 20011, 20, src="198.18.15.0/24"),
    Rule(AF_INET, 20099, 90),
    Rule(AF_INET6, 20012, 100_000, iif="eth1"),
]


@pytest.mark.parametrize("rule", RULES, ids=str)
def test_rule_round_trip(rule: Rule) -> None:
    request = codec.rule_msg(rule, PROTO)
    assert request[0] == codec.RTM_NEWRULE
    assert decode(decode_rule, request) == rule
    assert decode(codec.make_rule_decoder(OTHER_PROTO, 20000, 20099), request) is None


def test_rule_outside_our_range_is_not_ours() -> None:
    assert decode(decode_rule, codec.rule_msg(Rule(AF_INET, 20100, 90), PROTO)) is None
    assert decode(decode_rule, codec.rule_msg(Rule(AF_INET, 19999, 90), PROTO)) is None


def test_planned_rules_round_trip(example_cfg: Config) -> None:
    lo = example_cfg.rules.priority
    decoder = codec.make_rule_decoder(PROTO, lo, lo + 99)
    for rule in plan_rules(example_cfg):
        assert decode(decoder, codec.rule_msg(rule, PROTO)) == rule


@pytest.mark.parametrize(
    "proxy", [ProxyNeigh(AF_INET6, 7, "fe80::1", True), ProxyNeigh(AF_INET6, 2, "2001:db8:aa::10", False)]
)
def test_proxy_round_trip(proxy: ProxyNeigh) -> None:
    request = codec.proxy_msg(proxy, PROTO)
    assert request[0] == codec.RTM_NEWNEIGH
    assert decode(decode_proxy, request) == proxy
    assert decode(codec.make_proxy_decoder(OTHER_PROTO), request) is None


def test_ordinary_neighbour_is_not_a_proxy_entry() -> None:
    body = codec.NDMSG.pack(AF_INET6, 7, codec.NUD_PERMANENT, 0, 0)
    body += attr(codec.NDA_DST, socket.inet_pton(socket.AF_INET6, "fe80::1"))
    body += attr(codec.NDA_PROTOCOL, bytes([PROTO]))
    msg = wire(body)
    assert decode_proxy(msg, 16, len(msg)) is None


def test_devconf_request_nests_values_under_af_inet() -> None:
    mtype, _, body = codec.devconf_msg(DevConf(7, "tap0", ((1, 1), (3, 1), (8, 2))))
    assert mtype == codec.RTM_SETLINK
    assert codec.IFINFO.unpack_from(body, 0)[2] == 7
    spec = parse_attrs(body, codec.IFINFO.size, len(body))[codec.IFLA_AF_SPEC]
    inet = parse_attrs(body, *spec)[AF_INET]
    conf = parse_attrs(body, *parse_attrs(body, *inet)[codec.IFLA_INET_CONF])
    assert {k: struct.unpack_from("=I", body, start)[0] for k, (start, _) in conf.items()} == {1: 1, 3: 1, 8: 2}


def test_decode_link() -> None:
    body = codec.IFINFO.pack(0, 1, 42, codec.IFF_UP, 0)
    body += attr(13, struct.pack("=I", 1500))  # IFLA_MTU before the name
    body += attr(codec.IFLA_IFNAME, b"tap.42\0")
    msg = wire(body, codec.RTM_NEWLINK)
    assert codec.decode_link(msg, 16, len(msg)) == (42, "tap.42", True)


def netconf(ifindex: int, **values: int) -> bytes:
    ids = {"forwarding": 2, "rp_filter": 3, "proxy_neigh": 5}  # NETCONFA_* (netconf.h)
    body = codec.NETCONFMSG.pack(AF_INET) + attr(codec.NETCONFA_IFINDEX, struct.pack("=i", ifindex))
    for name, v in values.items():
        body += attr(ids[name], struct.pack("=i", v))
    return wire(body, codec.RTM_NEWNETCONF)


def test_decode_netconf() -> None:
    msg = netconf(42, forwarding=1, rp_filter=2, proxy_neigh=1)
    assert codec.decode_netconf(msg, 16, len(msg)) == (
        42,
        {DEVCONF_FORWARDING: 1, DEVCONF_RP_FILTER: 2, DEVCONF_PROXY_ARP: 1},
    )


@pytest.mark.parametrize("pseudo", [-1, -2])  # NETCONFA_IFINDEX_ALL / _DEFAULT
def test_netconf_of_all_and_default_is_skipped(pseudo: int) -> None:
    msg = netconf(pseudo, forwarding=1)
    assert codec.decode_netconf(msg, 16, len(msg)) is None


# -- the planner writes str(ipaddress), the decoder inet_ntop: they must agree ----

v4_prefixes = st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 32)).map(
    lambda t: f"{IPv4Address(t[0] >> (32 - t[1]) << (32 - t[1]))}/{t[1]}"
)


@given(dst=v4_prefixes, table=st.integers(1, 2**32 - 1), oif=st.integers(0, 2**31 - 1))
def test_ipv4_route_round_trip_property(dst: str, table: int, oif: int) -> None:
    route = Route(AF_INET, table, dst, 0, RTN_UNICAST, RT_SCOPE_LINK, oif)
    assert decode(decode_route, codec.route_msg(route, PROTO, codec.ADD)) == route


@given(st.ip_addresses(v=4))
def test_inet_ntop_matches_ipaddress_v4(addr: IPv4Address) -> None:
    assert socket.inet_ntop(socket.AF_INET, addr.packed) == str(addr)


# Hextets biased to zero so that "::" compression (and its ties) is exercised.
hextet = st.one_of(st.just(0), st.just(0), st.just(1), st.just(0xFFFF), st.integers(0, 0xFFFF))
v6_addresses = st.one_of(
    st.ip_addresses(v=6),
    st.lists(hextet, min_size=8, max_size=8).map(lambda h: IPv6Address(b"".join(x.to_bytes(2, "big") for x in h))),
)
# Addresses that embed an IPv4 address: glibc prints the low 32 bits dotted.
EMBEDS_V4 = (IPv6Network("::/96"), IPv6Network("::ffff:0:0/96"))


@given(v6_addresses.filter(lambda a: not any(a in n for n in EMBEDS_V4)))
def test_inet_ntop_matches_ipaddress_v6(addr: IPv6Address) -> None:
    assert socket.inet_ntop(socket.AF_INET6, addr.packed) == str(addr)


CFG = make_config(example_dict())


@given(st.integers(0, 2**32 - 1).map(lambda v: IPv6Address((0xFFFF << 32) | v)))
@example(IPv6Address("::ffff:198.51.100.0"))
def test_v4_mapped_extra_prefix_survives_a_kernel_round_trip(addr: IPv6Address) -> None:
    port, problems = parse_port(
        {"name": "tap0", "mac": "52:54:00:00:00:01", "network": "public", "extra": [f"{addr}/128"]}, CFG
    )
    assert port is not None, problems
    desired = plan(CFG, [port], {"tap0": Link(7, "tap0", True)}).objects.objects.values()
    (route,) = [o for o in desired if isinstance(o, Route) and o.oif == 7]
    assert decode(decode_route, codec.route_msg(route, PROTO, codec.ADD)) == route
