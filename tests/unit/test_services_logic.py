"""What the responder answers, message type by message type: pure handlers,
frames in, frames (or None) out; the table built from config and ports; the
dispatcher's counters; the Responder's threading with a fake socket."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from factories import make_config

from hvrouter.config import Config
from hvrouter.model import Link, Port
from hvrouter.services import client, dhcp4, dhcp6
from hvrouter.services.dhcp4 import handle_dhcp4
from hvrouter.services.dhcp6 import handle_dhcp6
from hvrouter.services.dispatch import OUTCOMES, Dispatcher
from hvrouter.services.ra import handle_rs
from hvrouter.services.responder import Responder
from hvrouter.services.table import SERVER_DUID, PortEntry, build_table
from hvrouter.services.wire import BROADCAST4, BROADCAST_MAC, ForeignMac, Malformed, parse_dns_names

SERVICES = {
    "dns": ["192.0.2.53", "198.51.100.53", "2001:db8:ffff::53"],
    "domain": "example.test",
    "search": ["example.test", "lab.example.test"],
    "mtu": 1450,
    "lease_time": 7200,
    "ra_interval": 30,
    "router_lifetime": 900,
}
CFG: dict[str, Any] = {
    "tables": {"public": 90, "local-out": 100},
    "networks": [
        {
            "name": "public",
            "table": "public",
            "ipv4": {"subnet": "203.0.113.0/24", "gateway": "203.0.113.254"},
            "ipv6": {"mode": "prefix-per-port", "prefix": "2001:db8:cb00:7100::/56"},
            "services": SERVICES,
        },
        {
            "name": "shared",
            "table": "public",
            "ipv4": {"subnet": "198.51.100.0/25", "gateway": "198.51.100.126"},
            "ipv6": {"mode": "shared-prefix", "prefix": "2001:db8:5a::/64"},
            "services": {**SERVICES, "mtu": None},
        },
        {"name": "v6only", "table": "public", "ipv6": {"mode": "prefix-per-port", "prefix": "2001:db8:77::/48"}},
    ],
}
MAC1, MAC2, MAC3 = bytes.fromhex("525400000001"), bytes.fromhex("525400000002"), bytes.fromhex("525400000003")
TAP_MAC = bytes.fromhex("fe0000000099")
OTHER = bytes.fromhex("525400000666")
YI1, GW1 = socket.inet_aton("203.0.113.4"), socket.inet_aton("203.0.113.254")
VM2_V6 = socket.inet_pton(socket.AF_INET6, "2001:db8:5a::5")
PORTS = [
    Port("vm1", "52:54:00:00:00:01", "public", ("203.0.113.4",), ("2001:db8:cb00:7101::/64",)),
    Port("vm2", "52:54:00:00:00:02", "shared", ("198.51.100.5",), ("2001:db8:5a::5/128",)),
    Port("vm3", "52:54:00:00:00:03", "v6only", (), ("2001:db8:77:1::/64",)),
]
LINKS = {"vm1": Link(11, "vm1", True), "vm2": Link(12, "vm2", True), "vm3": Link(13, "vm3", True)}


def config() -> Config:
    return make_config(CFG)


def make_table(ports: Sequence[Port] = PORTS, links: dict[str, Link] = LINKS, cfg: Config | None = None) -> dict[int, PortEntry]:
    table, _ = build_table(cfg or config(), ports, links, lambda name: TAP_MAC)
    return table


@pytest.fixture(scope="module")
def table() -> dict[int, PortEntry]:
    return make_table()


def offer_for(entry: PortEntry, **kw: Any) -> tuple[Any, dhcp4.Dhcp4Message]:
    reply = handle_dhcp4(entry, client.dhcp4_frame(entry.mac, dhcp4.DISCOVER, **kw))
    assert reply.frame is not None
    return client.decode_dhcp4(reply.frame)


# -- DHCPv4 -------------------------------------------------------------------


def test_discover_gets_offer_with_every_option(table: dict[int, PortEntry]) -> None:
    f, m = offer_for(table[11], xid=0xCAFE)
    o = m.options
    assert m.msg_type == dhcp4.OFFER and m.xid == 0xCAFE and m.op == 2
    assert m.yiaddr == YI1 and m.chaddr[:6] == MAC1
    assert o[54] == GW1 and o[1] == socket.inet_aton("255.255.255.0") and o[3] == GW1
    assert o[6] == socket.inet_aton("192.0.2.53") + socket.inet_aton("198.51.100.53")  # IPv4 servers only
    assert o[15] == b"example.test"
    assert parse_dns_names(o[119]) == ["example.test", "lab.example.test"]
    assert o[12] == b"vm1"
    assert struct.unpack("!H", o[26])[0] == 1450
    assert [struct.unpack("!I", o[c])[0] for c in (51, 58, 59)] == [7200, 3600, 6300]
    # From the gateway and the tap's MAC, broadcast as the client asked.
    assert (f.src_mac, f.src_ip) == (TAP_MAC, GW1)
    assert (f.dst_mac, f.dst_ip) == (BROADCAST_MAC, BROADCAST4)
    assert len(f.payload) >= dhcp4.MIN_BOOTP


def test_offer_unicast_without_broadcast_flag(table: dict[int, PortEntry]) -> None:
    f, _ = offer_for(table[11], broadcast=False)
    assert (f.dst_mac, f.dst_ip) == (MAC1, YI1)


def test_mask_is_the_networks(table: dict[int, PortEntry]) -> None:
    _, m = offer_for(table[12])
    assert m.options[1] == socket.inet_aton("255.255.255.128")
    assert 26 not in m.options  # no MTU configured


def test_request_selecting_gets_ack(table: dict[int, PortEntry]) -> None:
    frame = client.dhcp4_frame(MAC1, dhcp4.REQUEST, requested=YI1, server_id=GW1)
    reply = handle_dhcp4(table[11], frame)
    assert reply.kind == "dhcp4.ack" and reply.frame is not None
    _, m = client.decode_dhcp4(reply.frame)
    assert m.msg_type == dhcp4.ACK and m.yiaddr == YI1 and m.options[51] == struct.pack("!I", 7200)


def test_request_for_another_address_gets_nak_broadcast(table: dict[int, PortEntry]) -> None:
    frame = client.dhcp4_frame(MAC1, dhcp4.REQUEST, requested=socket.inet_aton("203.0.113.5"), broadcast=False)
    reply = handle_dhcp4(table[11], frame)
    assert reply.kind == "dhcp4.nak" and reply.frame is not None
    f, m = client.decode_dhcp4(reply.frame)
    assert m.msg_type == dhcp4.NAK and m.yiaddr == b"\0" * 4 and m.options[54] == GW1
    assert 51 not in m.options
    assert (f.dst_mac, f.dst_ip) == (BROADCAST_MAC, BROADCAST4)


def test_request_for_another_server_is_left_alone(table: dict[int, PortEntry]) -> None:
    frame = client.dhcp4_frame(MAC1, dhcp4.REQUEST, requested=YI1, server_id=socket.inet_aton("192.0.2.1"))
    assert handle_dhcp4(table[11], frame) == ("dhcp4.request", None)


def test_renewing_request_is_unicast_to_ciaddr(table: dict[int, PortEntry]) -> None:
    frame = client.dhcp4_frame(MAC1, dhcp4.REQUEST, ciaddr=YI1, broadcast=False, src_ip=YI1, dst_ip=GW1,
                               dst_mac=TAP_MAC)
    reply = handle_dhcp4(table[11], frame)
    assert reply.frame is not None
    f, m = client.decode_dhcp4(reply.frame)
    assert m.msg_type == dhcp4.ACK and m.ciaddr == YI1 and m.yiaddr == YI1
    assert (f.dst_mac, f.dst_ip) == (MAC1, YI1)


def test_inform_gets_ack_without_lease(table: dict[int, PortEntry]) -> None:
    frame = client.dhcp4_frame(MAC1, dhcp4.INFORM, ciaddr=YI1, broadcast=False, src_ip=YI1)
    reply = handle_dhcp4(table[11], frame)
    assert reply.frame is not None
    f, m = client.decode_dhcp4(reply.frame)
    assert m.msg_type == dhcp4.ACK and m.yiaddr == b"\0" * 4
    assert not {51, 58, 59} & set(m.options) and m.options[6] and m.options[3] == GW1
    assert f.dst_ip == YI1


@pytest.mark.parametrize("mtype", [dhcp4.RELEASE, dhcp4.DECLINE, dhcp4.OFFER, dhcp4.ACK, 99])
def test_no_answer_to(table: dict[int, PortEntry], mtype: int) -> None:
    reply = handle_dhcp4(table[11], client.dhcp4_frame(MAC1, mtype, requested=YI1))
    assert reply.frame is None


def test_plain_bootp_is_not_served(table: dict[int, PortEntry]) -> None:
    assert handle_dhcp4(table[11], client.dhcp4_frame(MAC1, None)) == ("dhcp4.bootp", None)


def test_client_identifier_is_echoed(table: dict[int, PortEntry]) -> None:
    _, m = offer_for(table[11], options=b"\x3d\x07\x01" + MAC1)
    assert m.options[61] == b"\x01" + MAC1


def test_foreign_mac_gets_nothing(table: dict[int, PortEntry]) -> None:
    with pytest.raises(ForeignMac):  # chaddr of another VM
        handle_dhcp4(table[11], client.dhcp4_frame(OTHER, dhcp4.DISCOVER))
    with pytest.raises(ForeignMac):  # right chaddr, frame from elsewhere
        handle_dhcp4(table[11], client.dhcp4_frame(MAC1, dhcp4.DISCOVER, src_mac=OTHER))
    with pytest.raises(ForeignMac):  # another port's VM
        handle_dhcp4(table[11], client.dhcp4_frame(MAC2, dhcp4.DISCOVER))


def test_no_ipv4_on_the_port_or_network(table: dict[int, PortEntry]) -> None:
    assert handle_dhcp4(table[13], client.dhcp4_frame(MAC3, dhcp4.DISCOVER)) == ("dhcp4.discover", None)
    noaddr = make_table([Port("vm1", "52:54:00:00:00:01", "public", (), ("2001:db8:cb00:7101::/64",))])
    assert handle_dhcp4(noaddr[11], client.dhcp4_frame(MAC1, dhcp4.DISCOVER)).frame is None


@pytest.mark.parametrize("mangle", [
    lambda p: p[:100],  # truncated BOOTP
    lambda p: p[:-1] + b"\x37\x30",  # an option running past the end
    lambda p: p[:236] + b"\x00\x00\x00\x00" + p[240:],  # no magic cookie
    lambda p: p[:240] + b"\x35\x02\x01\x01\xff",  # message type of length 2
    lambda p: p[:240] + b"\x35\x01\x03\x32\x03\x01\x02\x03\xff",  # requested address of length 3
    lambda p: bytes((2,)) + p[1:],  # a BOOTREPLY sent to the server port
])
def test_malformed_dhcp4(table: dict[int, PortEntry], mangle: Any) -> None:
    payload = client.dhcp4_payload(MAC1, dhcp4.DISCOVER)
    with pytest.raises(Malformed):
        handle_dhcp4(table[11], _rewrap(mangle(payload)))


def _rewrap(payload: bytes) -> bytes:
    from hvrouter.services.wire import udp4_frame

    return udp4_frame(MAC1, BROADCAST_MAC, b"\0" * 4, BROADCAST4, 68, 67, payload)


# -- router solicitations -------------------------------------------------------


def test_rs_gets_unicast_ra_from_gateway(table: dict[int, PortEntry]) -> None:
    reply = handle_rs(table[11], client.rs_frame(MAC1))
    assert reply.kind == "ra.solicited" and reply.frame is not None
    f, ra = client.decode_ra(reply.frame)  # checksum verified by the decoder
    assert f.src_ip == socket.inet_pton(socket.AF_INET6, "fe80::1") and f.src_mac == TAP_MAC
    assert f.dst_ip == client.link_local(MAC1) and f.dst_mac == MAC1 and f.hop_limit == 255
    assert (ra.managed, ra.other, ra.router_lifetime, ra.mtu, ra.lladdr) == (False, True, 900, 1450, TAP_MAC)
    pfx = socket.inet_pton(socket.AF_INET6, "2001:db8:cb00:7101::")
    assert [(p[0], p[1], p[2], p[3]) for p in ra.prefixes] == [(pfx, 64, True, True)]
    assert ra.rdnss == [(socket.inet_pton(socket.AF_INET6, "2001:db8:ffff::53"), 90)]
    assert parse_dns_names(ra.dnssl.rstrip(b"\0") + b"\0") == ["example.test", "lab.example.test"]


def test_rs_from_unspecified_gets_multicast(table: dict[int, PortEntry]) -> None:
    reply = handle_rs(table[11], client.rs_frame(MAC1, src_ip=client.UNSPECIFIED))
    assert reply.frame is not None
    f, _ = client.decode_ra(reply.frame)
    assert f.dst_mac == b"\x33\x33\x00\x00\x00\x01"
    assert f.dst_ip == socket.inet_pton(socket.AF_INET6, "ff02::1")


def test_shared_prefix_ra_is_managed_and_off_link(table: dict[int, PortEntry]) -> None:
    reply = handle_rs(table[12], client.rs_frame(MAC2))
    assert reply.frame is not None
    _, ra = client.decode_ra(reply.frame)
    assert (ra.managed, ra.other, ra.mtu) == (True, True, None)
    # L=0; A=0: the port's /128 is not its EUI-64 address, DHCPv6 hands it out.
    assert [(p[1], p[2], p[3]) for p in ra.prefixes] == [(64, False, False)]


def test_shared_prefix_slaac_when_the_address_is_the_eui64() -> None:
    port = Port("vm2", "52:54:00:00:00:02", "shared", (), ("2001:db8:5a:0:5054:ff:fe00:2/128",))
    entry = make_table([port])[12]
    reply = handle_rs(entry, client.rs_frame(MAC2))
    assert reply.frame is not None
    _, ra = client.decode_ra(reply.frame)
    assert [(p[2], p[3]) for p in ra.prefixes] == [(False, True)]


def test_rs_checks(table: dict[int, PortEntry]) -> None:
    with pytest.raises(ForeignMac):
        handle_rs(table[11], client.rs_frame(OTHER))
    with pytest.raises(ForeignMac):  # link-layer option naming another MAC
        handle_rs(table[11], client.rs_frame(MAC1, sllao=OTHER))
    with pytest.raises(Malformed):  # routed from elsewhere
        handle_rs(table[11], client.rs_frame(MAC1, hop_limit=64))
    frame = bytearray(client.rs_frame(MAC1))
    frame[-1] ^= 1
    with pytest.raises(Malformed):  # checksum
        handle_rs(table[11], bytes(frame))


def test_network_without_ipv6_has_no_ra() -> None:
    cfg = make_config({**CFG, "networks": [{"name": "v4", "table": "public",
                                            "ipv4": {"subnet": "192.0.2.0/24", "gateway": "192.0.2.1"}}]})
    entry = make_table([Port("vm1", "52:54:00:00:00:01", "v4", ("192.0.2.9",))], cfg=cfg)[11]
    assert entry.ra is None and entry.dhcp6 is None
    assert handle_rs(entry, client.rs_frame(MAC1)) == ("ra.rs", None)


# -- DHCPv6 -----------------------------------------------------------------------


def dhcp6_reply(entry: PortEntry, mtype: int, **kw: Any) -> tuple[Any, dhcp6.Dhcp6Message] | None:
    kw.setdefault("client_id", client.client_duid(entry.mac))
    reply = handle_dhcp6(entry, client.dhcp6_frame(entry.mac, mtype, b"\xab\xcd\xef", **kw))
    if reply.frame is None:
        return None
    f, m = client.decode_dhcp6(reply.frame)
    assert m.trid == b"\xab\xcd\xef"
    assert m.options[dhcp6.OPT_SERVERID] == SERVER_DUID
    assert (f.src_mac, f.dst_mac, f.dst_ip) == (TAP_MAC, entry.mac, client.link_local(entry.mac))
    assert f.src_ip == socket.inet_pton(socket.AF_INET6, "fe80::1")
    return f, m


def status_of(value: bytes) -> int:
    return int(struct.unpack("!H", value[:2])[0])


def test_information_request(table: dict[int, PortEntry]) -> None:
    got = dhcp6_reply(table[11], dhcp6.INFORMATION_REQUEST, options=dhcp6.option(6, b"\x00\x17\x00\x18"))
    assert got is not None
    _, m = got
    assert m.msg_type == dhcp6.REPLY
    assert m.options[23] == socket.inet_pton(socket.AF_INET6, "2001:db8:ffff::53")
    assert parse_dns_names(m.options[24]) == ["example.test", "lab.example.test"]
    assert m.options[dhcp6.OPT_CLIENTID] == client.client_duid(MAC1)
    # Without a client id too (RFC 8415 allows it), but not with IAs.
    assert dhcp6_reply(table[11], dhcp6.INFORMATION_REQUEST, client_id=None) is not None
    assert dhcp6_reply(table[11], dhcp6.INFORMATION_REQUEST, options=client.ia_na()) is None
    assert dhcp6_reply(table[11], dhcp6.INFORMATION_REQUEST, server_id=b"\x00\x03\x00\x01" + OTHER) is None


def test_solicit_without_stateful_addresses(table: dict[int, PortEntry]) -> None:
    got = dhcp6_reply(table[11], dhcp6.SOLICIT, options=client.ia_na())
    assert got is not None
    assert got[1].msg_type == dhcp6.ADVERTISE
    assert status_of(got[1].options[dhcp6.OPT_STATUS_CODE]) == dhcp6.STATUS_NOADDRSAVAIL


def ia_addresses(m: dhcp6.Dhcp6Message) -> list[tuple[bytes, int]]:
    out = []
    raw = m.options[dhcp6.OPT_IA_NA]
    for code, sub in dhcp6.iter_options(raw[12:]):
        if code == dhcp6.OPT_IAADDR:
            out.append((sub[:16], struct.unpack("!I", sub[20:24])[0]))
    return out


def test_stateful_exchange(table: dict[int, PortEntry]) -> None:
    e = table[12]
    got = dhcp6_reply(e, dhcp6.SOLICIT, options=client.ia_na(b"\x00\x00\x00\x07"))
    assert got is not None
    m = got[1]
    assert m.msg_type == dhcp6.ADVERTISE and m.options[dhcp6.OPT_PREFERENCE] == b"\xff"
    assert m.ia_na[0].iaid == b"\x00\x00\x00\x07" and ia_addresses(m) == [(VM2_V6, 7200)]
    for mtype in (dhcp6.REQUEST, dhcp6.RENEW):
        got = dhcp6_reply(e, mtype, server_id=SERVER_DUID, options=client.ia_na(addresses=(VM2_V6,)))
        assert got is not None and got[1].msg_type == dhcp6.REPLY and ia_addresses(got[1]) == [(VM2_V6, 7200)]
        assert got[1].options[23]  # DNS with the addresses
        assert dhcp6_reply(e, mtype, server_id=b"\x00\x03\x00\x01" + OTHER, options=client.ia_na()) is None
        assert dhcp6_reply(e, mtype, options=client.ia_na()) is None  # no server id
    got = dhcp6_reply(e, dhcp6.REBIND, options=client.ia_na(addresses=(VM2_V6,)))
    assert got is not None and ia_addresses(got[1]) == [(VM2_V6, 7200)]
    # An address that is not the port's comes back with lifetime 0.
    stale = socket.inet_pton(socket.AF_INET6, "2001:db8:5a::99")
    got = dhcp6_reply(e, dhcp6.RENEW, server_id=SERVER_DUID, options=client.ia_na(addresses=(stale,)))
    assert got is not None and ia_addresses(got[1]) == [(VM2_V6, 7200), (stale, 0)]


def test_rapid_commit(table: dict[int, PortEntry]) -> None:
    got = dhcp6_reply(table[12], dhcp6.SOLICIT, options=client.ia_na() + dhcp6.option(dhcp6.OPT_RAPID_COMMIT, b""))
    assert got is not None and got[1].msg_type == dhcp6.REPLY and dhcp6.OPT_RAPID_COMMIT in got[1].options


def test_confirm_release_decline(table: dict[int, PortEntry]) -> None:
    e = table[12]
    got = dhcp6_reply(e, dhcp6.CONFIRM, options=client.ia_na(addresses=(VM2_V6,)))
    assert got is not None and status_of(got[1].options[dhcp6.OPT_STATUS_CODE]) == dhcp6.STATUS_SUCCESS
    away = socket.inet_pton(socket.AF_INET6, "2001:db8:99::1")
    got = dhcp6_reply(e, dhcp6.CONFIRM, options=client.ia_na(addresses=(away,)))
    assert got is not None and status_of(got[1].options[dhcp6.OPT_STATUS_CODE]) == dhcp6.STATUS_NOTONLINK
    assert dhcp6_reply(e, dhcp6.CONFIRM, options=client.ia_na()) is None  # nothing to confirm
    for mtype in (dhcp6.RELEASE, dhcp6.DECLINE):
        got = dhcp6_reply(e, mtype, server_id=SERVER_DUID, options=client.ia_na(addresses=(VM2_V6,)))
        assert got is not None and status_of(got[1].options[dhcp6.OPT_STATUS_CODE]) == dhcp6.STATUS_SUCCESS


def test_dhcp6_checks(table: dict[int, PortEntry]) -> None:
    with pytest.raises(ForeignMac):
        handle_dhcp6(table[11], client.dhcp6_frame(OTHER, dhcp6.INFORMATION_REQUEST))
    with pytest.raises(Malformed):
        handle_dhcp6(table[11], client.dhcp6_frame(MAC1, dhcp6.INFORMATION_REQUEST, src_ip=client.UNSPECIFIED))
    for mtype in (dhcp6.ADVERTISE, dhcp6.REPLY, dhcp6.RECONFIGURE, dhcp6.RELAY_FORW, 200):
        assert handle_dhcp6(table[11], client.dhcp6_frame(MAC1, mtype)).frame is None


def test_dhcpv6_off_means_no_other_flag() -> None:
    cfg = make_config({**CFG, "networks": [{**CFG["networks"][0], "services": {**SERVICES, "dhcpv6": False}}]})
    entry = make_table(PORTS[:1], cfg=cfg)[11]
    assert entry.dhcp6 is None
    assert handle_dhcp6(entry, client.dhcp6_frame(MAC1, dhcp6.INFORMATION_REQUEST)).frame is None
    reply = handle_rs(entry, client.rs_frame(MAC1))
    assert reply.frame is not None
    _, ra = client.decode_ra(reply.frame)
    assert (ra.managed, ra.other) == (False, False)


# -- table --------------------------------------------------------------------------


def test_table_serves_ready_ports_only() -> None:
    links = {"vm1": Link(11, "vm1", True), "vm2": Link(12, "vm2", False)}  # vm2 down, vm3 missing
    ports = [*PORTS, Port("vmx", "52:54:00:00:00:09", "nosuchnet", ("203.0.113.9",))]
    assert set(make_table(ports, {**links, "vmx": Link(19, "vmx", True)})) == {11}


def test_table_reuses_unchanged_entries() -> None:
    cfg = config()
    calls: list[str] = []

    def tap_mac(name: str) -> bytes:
        calls.append(name)
        return TAP_MAC

    t1, in1 = build_table(cfg, PORTS, LINKS, tap_mac)
    assert sorted(calls) == ["vm1", "vm2", "vm3"]
    moved = Port("vm1", "52:54:00:00:00:01", "public", ("203.0.113.7",), ("2001:db8:cb00:7101::/64",))
    t2, _ = build_table(cfg, [moved, *PORTS[1:]], LINKS, tap_mac, t1, in1)
    assert t2[12] is t1[12] and t2[13] is t1[13] and t2[11] is not t1[11]
    assert t2[11].dhcp4 is not None and t2[11].dhcp4.address == socket.inet_aton("203.0.113.7")
    assert len(calls) == 3  # the tap's MAC is not looked up again
    # A re-created tap (new ifindex) is new.
    t3, _ = build_table(cfg, PORTS, {**LINKS, "vm1": Link(21, "vm1", True)}, tap_mac, t1, in1)
    assert 21 in t3 and 11 not in t3 and calls[-1] == "vm1"


def test_table_skips_a_tap_that_vanished() -> None:
    def tap_mac(name: str) -> bytes:
        if name == "vm2":
            raise OSError(19, "No such device")
        return TAP_MAC

    table, _ = build_table(config(), PORTS, LINKS, tap_mac)
    assert set(table) == {11, 13}


def test_services_disabled() -> None:
    cfg = make_config({**CFG, "networks": [{**CFG["networks"][0], "services": {"enabled": False}}]})
    entry = make_table(PORTS[:1], cfg=cfg)[11]
    assert (entry.dhcp4, entry.ra, entry.dhcp6) == (None, None, None)


# -- dispatcher -----------------------------------------------------------------------


def test_dispatcher_counts_every_outcome() -> None:
    d = Dispatcher()
    d.table = make_table()
    assert d.handle(11, client.dhcp4_frame(MAC1, dhcp4.DISCOVER)) is not None
    assert d.handle(99, client.dhcp4_frame(MAC1, dhcp4.DISCOVER)) is None  # not a port
    assert d.handle(11, client.dhcp4_frame(OTHER, dhcp4.DISCOVER)) is None
    assert d.handle(11, b"\x00" * 10) is None
    assert d.handle(11, client.dhcp4_frame(MAC1, dhcp4.RELEASE)) is None
    assert d.handle(12, client.rs_frame(MAC2)) is not None
    assert d.handle(12, client.dhcp6_frame(MAC2, dhcp6.INFORMATION_REQUEST)) is not None
    s = d.stats()
    assert s["received"] == 7
    assert {k: s[k] for k in OUTCOMES} == {
        "answered": 3, "no_reply": 1, "ignored_unknown_interface": 1, "ignored_foreign_mac": 1,
        "malformed": 1, "errors": 0,
    }
    assert s["served"] == {"dhcp4.offer": 1, "ra.solicited": 1, "dhcp6.reply": 1}
    assert s["unanswered"] == {"dhcp4.release": 1}
    ports = s["ports"]
    assert ports["vm1"]["ignored_foreign_mac"] == 1 and ports["vm1"]["malformed"] == 1
    assert ports["vm2"]["served"] == {"ra.solicited": 1, "dhcp6.reply": 1}


def test_dispatcher_guard_counts_unexpected_errors(monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    import hvrouter.services.dispatch as dispatch

    def boom(entry: PortEntry, frame: bytes) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(dispatch, "handle_dhcp4", boom)
    d = Dispatcher()
    d.table = make_table()
    for _ in range(3):
        assert d.handle(11, client.dhcp4_frame(MAC1, dhcp4.DISCOVER)) is None
    assert d.stats()["errors"] == 3
    assert caplog.text.count("RuntimeError: bug") == 1  # rate-limited
    monkeypatch.undo()
    assert d.handle(11, client.dhcp4_frame(MAC1, dhcp4.DISCOVER)) is not None


# -- Responder with a fake socket -----------------------------------------------------


class FakeSocket:
    """recv() from a queue, send() into a list; a socketpair provides the fd
    the loop waits on."""

    def __init__(self, rcvbuf: int) -> None:
        self.r, self.w = socket.socketpair()
        self.r.setblocking(False)
        self.inbox: list[tuple[int, bytes]] = []
        self.sent: list[tuple[int, bytes]] = []
        self.lock = threading.Lock()
        self.closed = False

    def fileno(self) -> int:
        return self.r.fileno()

    def push(self, ifindex: int, frame: bytes) -> None:
        with self.lock:
            self.inbox.append((ifindex, frame))
        self.w.send(b"x")

    def recv(self) -> tuple[int, bytes] | None:
        with self.lock:
            if not self.inbox:
                try:
                    self.r.recv(4096)
                except BlockingIOError:
                    pass
                return None
            return self.inbox.pop(0)

    def send(self, ifindex: int, frame: bytes) -> None:
        if ifindex == 13:
            raise OSError(105, "No buffer space available")  # a VM that is not there
        self.sent.append((ifindex, frame))

    def close(self) -> None:
        self.closed = True
        self.r.close()
        self.w.close()

    def update_kernel_stats(self) -> tuple[int, int]:
        return 0, 0


def wait_for(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_responder_serves_and_follows_updates() -> None:
    socks: list[FakeSocket] = []

    def factory(rcvbuf: int) -> Any:
        socks.append(FakeSocket(rcvbuf))
        return socks[-1]

    r = Responder(tap_mac=lambda name: TAP_MAC, sink_dhcp_port=False, socket_factory=factory)
    cfg = config()
    r.update(cfg, PORTS[:1], LINKS)
    r.start()
    try:
        sock = socks[0]
        # An RA right away for the port given before start...
        wait_for(lambda: any(i == 11 for i, _ in sock.sent))
        # ...and for a port that becomes active later.
        r.update(cfg, PORTS, LINKS)
        wait_for(lambda: any(i == 12 for i, _ in sock.sent))
        sock.push(11, client.dhcp4_frame(MAC1, dhcp4.DISCOVER))
        wait_for(lambda: any(client.decode_dhcp4(f)[1].msg_type == dhcp4.OFFER
                             for i, f in sock.sent if i == 11 and f[12:14] == b"\x08\x00"))
        # Port removed: no more answers, counted as an unknown interface.
        r.update(cfg, PORTS[1:], LINKS)
        n = len(sock.sent)
        sock.push(11, client.dhcp4_frame(MAC1, dhcp4.DISCOVER))
        wait_for(lambda: r.stats()["ignored_unknown_interface"] == 1)
        assert len(sock.sent) == n
        stats = r.stats()
        assert stats["served"]["dhcp4.offer"] == 1 and stats["served"]["ra.periodic"] >= 2
        assert stats["send_errors"] >= 1  # vm3's RA: the fake "VM" is not there
        assert set(stats["ports"]) <= {"vm2", "vm3"} and stats["ports_served"] == 2
    finally:
        r.stop()
    assert socks[0].closed
