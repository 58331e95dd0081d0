"""The responder's wire codec: checksums, DNS names, option encodings, frame
round trips, and the kernel filter (run here by a small classic-BPF
interpreter, so what it lets through is tested without a socket)."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_services_logic import MAC1, TAP_MAC, make_table

from hvrouter.services import client, dhcp4, dhcp6, rawsock
from hvrouter.services.dhcp4 import parse_dhcp4, parse_options
from hvrouter.services.ra import parse_ra
from hvrouter.services.table import dhcp4_option
from hvrouter.services.wire import (
    Malformed,
    checksum,
    dns_name,
    dns_names,
    icmp6_frame,
    parse_dns_names,
    parse_icmp6,
    parse_udp4,
    parse_udp6,
    udp4_frame,
    udp6_frame,
)


def naive_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@given(st.binary(max_size=600))
def test_checksum_matches_rfc1071(data: bytes) -> None:
    assert checksum(data) == naive_checksum(data)


def test_checksum_edge_cases() -> None:
    for data in (b"", b"\0", b"\xff\xff", b"\xff\xff" * 3, b"\x00\x01\xff\xfe"):
        assert checksum(data) == naive_checksum(data)


def test_dns_name_encoding() -> None:
    assert dns_name("example.test") == b"\x07example\x04test\x00"
    assert dns_name("example.test.") == b"\x07example\x04test\x00"
    assert dns_names(["a.b", "c"]) == b"\x01a\x01b\x00\x01c\x00"
    assert parse_dns_names(dns_names(["example.test", "lab.example.test"])) == ["example.test", "lab.example.test"]
    for bad in ("", "a..b", "x" * 64 + ".test", ".".join(["abcdefghi"] * 26)):
        with pytest.raises(ValueError):
            dns_name(bad)
    with pytest.raises(Malformed):
        parse_dns_names(b"\x07exam")


def test_domain_search_option_rfc3397_example() -> None:
    """RFC 3397 section 2 encodes eng.apple.com and marketing.apple.com;
    without compression (which RFC 3397 allows but does not require) the
    names are simply concatenated."""
    value = dns_names(["eng.apple.com", "marketing.apple.com"])
    opt = dhcp4_option(119, value)
    assert opt[:2] == bytes((119, len(value)))
    assert opt[2:] == b"\x03eng\x05apple\x03com\x00\x09marketing\x05apple\x03com\x00"


def test_long_options_are_split_and_rejoined() -> None:
    names = [f"host{i:03d}.subdomain.example.test" for i in range(12)]
    value = dns_names(names)
    assert len(value) > 255
    opt = dhcp4_option(119, value)
    assert opt[0] == 119 and opt[1] == 255 and opt[257] == 119
    parsed: dict[int, bytes] = {}
    parse_options(opt + b"\xff", parsed)
    assert parse_dns_names(parsed[119]) == names


def test_udp4_round_trip_and_checksums() -> None:
    src, dst = socket.inet_aton("203.0.113.254"), socket.inet_aton("203.0.113.4")
    frame = udp4_frame(TAP_MAC, MAC1, src, dst, 67, 68, b"hello")
    assert checksum(frame[14:34]) == 0
    pseudo = src + dst + struct.pack("!BBH", 0, 17, 13)
    assert checksum(pseudo + frame[34:]) == 0
    f = parse_udp4(frame + b"\0" * 20)  # Ethernet padding is ignored
    assert (f.src_mac, f.dst_mac, f.src_ip, f.dst_ip, f.sport, f.dport, f.payload) == (
        TAP_MAC, MAC1, src, dst, 67, 68, b"hello")


def test_ipv4_options_and_fragments() -> None:
    frame = client.dhcp4_frame(MAC1, dhcp4.DISCOVER)
    # Same packet with a 4-byte IP option (IHL 6): still parsed.
    ip = bytearray(frame[14:34])
    ip[0] = 0x46
    ip[2:4] = (int.from_bytes(ip[2:4], "big") + 4).to_bytes(2, "big")
    with_opt = frame[:14] + bytes(ip) + b"\x01\x01\x01\x00" + frame[34:]
    assert parse_udp4(with_opt).dport == 67
    frag = bytearray(frame)
    frag[20] = 0x20  # more fragments
    with pytest.raises(Malformed):
        parse_udp4(bytes(frag))


def test_udp6_and_icmp6_round_trip() -> None:
    src, dst = client.link_local(MAC1), socket.inet_pton(socket.AF_INET6, "ff02::1:2")
    f = parse_udp6(udp6_frame(MAC1, b"\x33\x33\x00\x01\x00\x02", src, dst, 546, 547, b"\x0b\x00\x00\x01"))
    assert (f.src_ip, f.dst_ip, f.sport, f.dport, f.payload) == (src, dst, 546, 547, b"\x0b\x00\x00\x01")
    msg = struct.pack("!BBHI", 133, 0, 0, 0)
    f = parse_icmp6(icmp6_frame(MAC1, b"\x33\x33\x00\x00\x00\x02", src, dst, msg))
    assert f.payload[0] == 133 and f.hop_limit == 255
    with pytest.raises(Malformed):
        parse_udp6(udp6_frame(MAC1, MAC1, src, dst, 546, 547, b"x")[:60])


def test_dhcp4_message_round_trip() -> None:
    payload = client.dhcp4_payload(MAC1, dhcp4.REQUEST, 0xDEADBEEF, requested=b"\xcb\x00\x71\x04",
                                   server_id=b"\xcb\x00\x71\xfe", hostname=b"vm1", broadcast=False)
    m = parse_dhcp4(payload)
    assert (m.op, m.xid, m.flags, m.chaddr[:6], m.msg_type) == (1, 0xDEADBEEF, 0, MAC1, dhcp4.REQUEST)
    assert m.options[50] == b"\xcb\x00\x71\x04" and m.options[12] == b"vm1"


def test_dhcp4_option_overload() -> None:
    payload = bytearray(client.dhcp4_payload(MAC1, None))
    # Message type in the `file` field, announced by option 52 = 1.
    payload[108:111] = b"\x35\x01\x01"
    payload[111] = 0xFF
    payload = payload[:240] + b"\x34\x01\x01\xff"
    assert parse_dhcp4(bytes(payload)).msg_type == dhcp4.DISCOVER


def test_ra_encoding() -> None:
    entry = make_table()[11]
    assert entry.ra is not None
    msg = entry.ra.message
    ra = parse_ra(msg)
    assert ra.hop_limit == 64 and ra.lladdr == TAP_MAC
    # Options are multiples of 8 bytes and the DNSSL is zero-padded.
    assert (len(msg) - 16) % 8 == 0
    f = parse_icmp6(entry.ra.multicast_frame)  # checksummed
    assert f.dst_ip == socket.inet_pton(socket.AF_INET6, "ff02::1")
    assert f.payload[4:] == msg[4:]


def test_dhcp6_options_round_trip() -> None:
    addr = socket.inet_pton(socket.AF_INET6, "2001:db8:5a::5")
    payload = client.dhcp6_payload(dhcp6.REQUEST, b"\x00\x00\x2a", client_id=b"\x00\x03\x00\x01" + MAC1,
                                   server_id=b"srv", options=client.ia_na(b"\x00\x00\x00\x09", (addr,)))
    m = dhcp6.parse_dhcp6(payload)
    assert (m.msg_type, m.trid) == (dhcp6.REQUEST, b"\x00\x00\x2a")
    assert m.options[dhcp6.OPT_SERVERID] == b"srv"
    assert m.ia_na == (dhcp6.IaNa(b"\x00\x00\x00\x09", (addr,)),)
    for bad in (payload[:-3], payload[:3], payload[:4] + b"\x00\x03\x00\x02ab"):
        with pytest.raises(Malformed):
            dhcp6.parse_dhcp6(bad)


# -- the kernel filter ---------------------------------------------------------------


def run_bpf(program: list[tuple[int, int, int, int]], frame: bytes, pkttype: int = 0) -> int:
    """Classic BPF, the subset the responder uses; an out-of-bounds load
    rejects the packet, as in the kernel."""
    a = x = 0
    pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        cls = code & 0x07
        if cls in (rawsock.LD, rawsock.LDX):
            size = {rawsock.W: 4, rawsock.H: 2, rawsock.B: 1}[code & 0x18]
            mode = code & 0xE0
            if mode == rawsock.ABS and k == rawsock.SKF_AD_PKTTYPE:
                value = pkttype
            else:
                off = k + (x if mode == rawsock.IND else 0)
                if off + size > len(frame):
                    return 0
                value = int.from_bytes(frame[off : off + size], "big")
                if mode == rawsock.MSH:
                    value = (frame[k] & 0x0F) * 4
            if cls == rawsock.LD:
                a = value
            else:
                x = value
        elif cls == rawsock.JMP:
            op = code & 0xF0
            hit = a == k if op == rawsock.JEQ else bool(a & k)
            pc += jt if hit else jf
        elif cls == rawsock.RET:
            return k
        else:  # pragma: no cover
            raise AssertionError(f"opcode {code:#x}")


PROGRAM = rawsock.responder_filter()


def passes(frame: bytes, pkttype: int = 0) -> bool:
    return run_bpf(PROGRAM, frame, pkttype) > 0


def test_filter_passes_what_we_serve() -> None:
    assert passes(client.dhcp4_frame(MAC1, dhcp4.DISCOVER))
    assert passes(client.rs_frame(MAC1))
    assert passes(client.rs_frame(MAC1, src_ip=client.UNSPECIFIED))
    assert passes(client.dhcp6_frame(MAC1, dhcp6.SOLICIT))
    frame = client.dhcp4_frame(MAC1, dhcp4.DISCOVER)
    ip = bytearray(frame[14:34])
    ip[0] = 0x46
    assert passes(frame[:14] + bytes(ip) + b"\x01\x01\x01\x00" + frame[34:])  # IPv4 options: port found via IHL


def test_filter_drops_everything_else() -> None:
    src, dst = socket.inet_aton("203.0.113.4"), socket.inet_aton("203.0.113.254")
    ll, mc = client.link_local(MAC1), socket.inet_pton(socket.AF_INET6, "ff02::1")
    assert not passes(client.dhcp4_frame(MAC1, dhcp4.DISCOVER), pkttype=rawsock.PACKET_OUTGOING)
    assert not passes(udp4_frame(MAC1, TAP_MAC, src, dst, 68, 68, b"x" * 300))  # to the client port
    assert not passes(udp4_frame(MAC1, TAP_MAC, src, dst, 5000, 53, b"x"))
    frag = bytearray(client.dhcp4_frame(MAC1, dhcp4.DISCOVER))
    frag[20:22] = b"\x00\x10"  # a later fragment: its "port" would be payload
    assert not passes(bytes(frag))
    tcp = bytearray(client.dhcp4_frame(MAC1, dhcp4.DISCOVER))
    tcp[23] = 6
    assert not passes(bytes(tcp))
    ns = struct.pack("!BBHI", 135, 0, 0, 0) + ll
    assert not passes(icmp6_frame(MAC1, TAP_MAC, ll, mc, ns))  # neighbour solicitation
    assert not passes(icmp6_frame(MAC1, TAP_MAC, ll, mc, struct.pack("!BBHI", 128, 0, 0, 0)))  # echo
    assert not passes(udp6_frame(MAC1, TAP_MAC, ll, mc, 547, 546, b"\x07\x00\x00\x01"))  # a server's reply
    arp = b"\xff" * 6 + MAC1 + b"\x08\x06" + b"\x00" * 28
    assert not passes(arp)
    assert not passes(b"\xff" * 6 + MAC1 + b"\x81\x00" + client.dhcp4_frame(MAC1, 1)[12:])  # VLAN tagged
    assert not passes(client.dhcp4_frame(MAC1, dhcp4.DISCOVER)[:30])  # runt


@given(st.binary(max_size=120))
def test_filter_never_passes_random_junk_that_is_not_ours(data: bytes) -> None:
    frame = data
    if passes(frame):
        etype = frame[12:14]
        assert etype in (b"\x08\x00", b"\x86\xdd")
