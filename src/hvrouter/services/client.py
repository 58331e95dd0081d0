"""The client side of the protocols, as frames: what a VM sends, and
decoders for what the responder answers. For the tests, the fuzzers and
the boot-storm benchmark (the real clients, dhclient and the kernel, are
exercised by tests/netns)."""

from __future__ import annotations

import socket
import struct

from . import dhcp4, dhcp6
from .dhcp4 import COOKIE, Dhcp4Message, parse_dhcp4
from .dhcp6 import Dhcp6Message, option, parse_dhcp6
from .ra import RaInfo, parse_ra
from .wire import (
    BROADCAST4,
    BROADCAST_MAC,
    ZERO4,
    Frame,
    Malformed,
    icmp6_frame,
    multicast_mac,
    parse_icmp6,
    parse_udp4,
    parse_udp6,
    udp4_frame,
    udp6_frame,
)

ALL_ROUTERS = socket.inet_pton(socket.AF_INET6, "ff02::2")
ALL_DHCP = socket.inet_pton(socket.AF_INET6, "ff02::1:2")
UNSPECIFIED = b"\x00" * 16
_BOOTP = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s4s")
# What ISC dhclient asks for.
PARAMS = bytes((1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42))


def link_local(mac: bytes) -> bytes:
    return b"\xfe\x80" + b"\x00" * 6 + bytes((mac[0] ^ 2, mac[1], mac[2], 0xFF, 0xFE, mac[3], mac[4], mac[5]))


def dhcp4_payload(
    mac: bytes,
    msg_type: int | None,
    xid: int = 0x1234,
    *,
    broadcast: bool = True,
    ciaddr: bytes = ZERO4,
    requested: bytes | None = None,
    server_id: bytes | None = None,
    hostname: bytes | None = None,
    options: bytes = b"",
    chaddr: bytes | None = None,
) -> bytes:
    opts = b""
    if msg_type is not None:
        opts += bytes((dhcp4.OPT_MSG_TYPE, 1, msg_type))
    if requested is not None:
        opts += bytes((dhcp4.OPT_REQUESTED_IP, 4)) + requested
    if server_id is not None:
        opts += bytes((dhcp4.OPT_SERVER_ID, 4)) + server_id
    if hostname is not None:
        opts += bytes((12, len(hostname))) + hostname
    opts += bytes((55, len(PARAMS))) + PARAMS + options + b"\xff"
    flags = dhcp4.FLAG_BROADCAST if broadcast else 0
    return _BOOTP.pack(
        1, 1, 6, 0, xid, 0, flags, ciaddr, ZERO4, ZERO4, ZERO4, (chaddr or mac) + b"\x00" * 10, b"", b"", COOKIE
    ) + opts


def dhcp4_frame(mac: bytes, msg_type: int | None, xid: int = 0x1234, *, src_mac: bytes | None = None,
                src_ip: bytes = ZERO4, dst_ip: bytes = BROADCAST4, dst_mac: bytes = BROADCAST_MAC,
                **kw: object) -> bytes:
    payload = dhcp4_payload(mac, msg_type, xid, **kw)  # type: ignore[arg-type]
    return udp4_frame(src_mac or mac, dst_mac, src_ip, dst_ip, 68, 67, payload)


def rs_frame(mac: bytes, *, src_ip: bytes | None = None, sllao: bytes | None = None, src_mac: bytes | None = None,
             hop_limit: int = 255) -> bytes:
    src = link_local(mac) if src_ip is None else src_ip
    msg = struct.pack("!BBHI", 133, 0, 0, 0)
    if src != UNSPECIFIED:
        msg += bytes((1, 1)) + (mac if sllao is None else sllao)
    frame = icmp6_frame(src_mac or mac, multicast_mac(ALL_ROUTERS), src, ALL_ROUTERS, msg)
    if hop_limit != 255:
        frame = frame[:21] + bytes((hop_limit,)) + frame[22:]
    return frame


def client_duid(mac: bytes) -> bytes:
    return struct.pack("!HH", 3, 1) + mac  # DUID-LL


def ia_na(iaid: bytes = b"\x00\x00\x00\x01", addresses: tuple[bytes, ...] = ()) -> bytes:
    body = iaid + struct.pack("!II", 0, 0)
    body += b"".join(option(dhcp6.OPT_IAADDR, a + struct.pack("!II", 0, 0)) for a in addresses)
    return option(dhcp6.OPT_IA_NA, body)


def dhcp6_payload(msg_type: int, trid: bytes = b"\x01\x02\x03", *, client_id: bytes | None = None,
                  server_id: bytes | None = None, options: bytes = b"") -> bytes:
    out = bytes((msg_type,)) + trid
    if client_id is not None:
        out += option(dhcp6.OPT_CLIENTID, client_id)
    if server_id is not None:
        out += option(dhcp6.OPT_SERVERID, server_id)
    out += option(8, b"\x00\x00")  # elapsed time, as every client sends it
    return out + options


def dhcp6_frame(mac: bytes, msg_type: int, trid: bytes = b"\x01\x02\x03", *, src_mac: bytes | None = None,
                src_ip: bytes | None = None, **kw: object) -> bytes:
    payload = dhcp6_payload(msg_type, trid, **kw)  # type: ignore[arg-type]
    src = link_local(mac) if src_ip is None else src_ip
    return udp6_frame(src_mac or mac, multicast_mac(ALL_DHCP), src, ALL_DHCP, 546, 547, payload)


def decode_dhcp4(frame: bytes) -> tuple[Frame, Dhcp4Message]:
    f = parse_udp4(frame)
    if (f.sport, f.dport) != (67, 68):
        raise Malformed("not a DHCPv4 server reply")
    return f, parse_dhcp4(f.payload)


def decode_dhcp6(frame: bytes) -> tuple[Frame, Dhcp6Message]:
    f = parse_udp6(frame)
    if (f.sport, f.dport) != (547, 546):
        raise Malformed("not a DHCPv6 server reply")
    return f, parse_dhcp6(f.payload)


def decode_ra(frame: bytes) -> tuple[Frame, RaInfo]:
    f = parse_icmp6(frame)
    return f, parse_ra(f.payload)
