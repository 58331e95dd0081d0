"""DHCPv4 (RFC 2131/2132): message codec and what to answer.

One address per port, known in advance, so there is no pool and no lease
database: a DISCOVER is answered with the port's address, a REQUEST for it
is ACKed, a REQUEST for anything else is NAKed, and RELEASE/DECLINE change
nothing (the address stays the port's).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .table import PortEntry
from .wire import BROADCAST4, BROADCAST_MAC, ZERO4, ForeignMac, Malformed, Reply, parse_udp4, udp4_frame

SERVER_PORT, CLIENT_PORT = 67, 68
COOKIE = b"\x63\x82\x53\x63"
BOOTREQUEST, BOOTREPLY = 1, 2
FLAG_BROADCAST = 0x8000
# Some clients (RFC 1542 2.1, old PXE ROMs) drop BOOTP messages under 300 bytes.
MIN_BOOTP = 300

DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = 1, 2, 3, 4, 5, 6, 7, 8
TYPE_NAMES = {
    DISCOVER: "discover", OFFER: "offer", REQUEST: "request", DECLINE: "decline",
    ACK: "ack", NAK: "nak", RELEASE: "release", INFORM: "inform",
}

OPT_PAD, OPT_END = 0, 255
OPT_REQUESTED_IP, OPT_OVERLOAD, OPT_MSG_TYPE, OPT_SERVER_ID, OPT_MESSAGE, OPT_CLIENT_ID = 50, 52, 53, 54, 56, 61

_BOOTP = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s4s")


class Dhcp4Message(NamedTuple):
    op: int
    htype: int
    hlen: int
    hops: int
    xid: int
    secs: int
    flags: int
    ciaddr: bytes
    yiaddr: bytes
    siaddr: bytes
    giaddr: bytes
    chaddr: bytes  # 16 bytes as on the wire
    options: dict[int, bytes]

    @property
    def msg_type(self) -> int | None:
        value = self.options.get(OPT_MSG_TYPE)
        if value is None:
            return None
        if len(value) != 1:
            raise Malformed("message type option of length != 1")
        return value[0]


def parse_options(data: bytes, into: dict[int, bytes]) -> None:
    """Options until END or the end of data; repeated codes concatenate
    (RFC 3396). A length running past the data is malformed."""
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == OPT_END:
            return
        if code == OPT_PAD:
            i += 1
            continue
        if i + 1 >= n:
            raise Malformed(f"option {code} without length")
        ln = data[i + 1]
        end = i + 2 + ln
        if end > n:
            raise Malformed(f"option {code} runs past the message")
        value = data[i + 2 : end]
        into[code] = into[code] + value if code in into else value
        i = end


def parse_dhcp4(payload: bytes) -> Dhcp4Message:
    if len(payload) < _BOOTP.size:
        raise Malformed("truncated BOOTP message")
    op, htype, hlen, hops, xid, secs, flags, ci, yi, si, gi, ch, sname, file, cookie = _BOOTP.unpack_from(payload)
    if cookie != COOKIE:
        raise Malformed("no DHCP magic cookie")
    options: dict[int, bytes] = {}
    parse_options(payload[_BOOTP.size :], options)
    overload = options.get(OPT_OVERLOAD)
    if overload is not None:
        # RFC 2132 9.3: more options in `file` (1), `sname` (2) or both (3).
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            raise Malformed("bad option overload")
        if overload[0] & 1:
            parse_options(file, options)
        if overload[0] & 2:
            parse_options(sname, options)
    return Dhcp4Message(op, htype, hlen, hops, xid, secs, flags, ci, yi, si, gi, ch, options)


def encode_dhcp4(
    msg_type: int, req: Dhcp4Message, yiaddr: bytes, ciaddr: bytes, options: bytes
) -> bytes:
    """A BOOTREPLY for `req`; `options` follow the message type, END is added."""
    body = _BOOTP.pack(
        BOOTREPLY, 1, 6, 0, req.xid, 0, req.flags, ciaddr, yiaddr, ZERO4, req.giaddr, req.chaddr,
        b"", b"", COOKIE,
    ) + bytes((OPT_MSG_TYPE, 1, msg_type)) + options + b"\xff"
    if len(body) < MIN_BOOTP:
        body += b"\x00" * (MIN_BOOTP - len(body))
    return body


def _client_id(req: Dhcp4Message) -> bytes:
    """RFC 6842: a client identifier is echoed back unchanged."""
    cid = req.options.get(OPT_CLIENT_ID)
    if cid is None:
        return b""
    return bytes((OPT_CLIENT_ID, len(cid))) + cid if len(cid) <= 255 else b""


def handle_dhcp4(entry: PortEntry, raw: bytes) -> Reply:
    """One frame received on the port's tap -> the reply frame, or None.

    Raises Malformed (unparseable) or ForeignMac (not the port's VM)."""
    f = parse_udp4(raw)
    if f.dport != SERVER_PORT:
        raise Malformed(f"UDP port {f.dport}")
    req = parse_dhcp4(f.payload)
    if req.op != BOOTREQUEST or req.htype != 1 or req.hlen != 6:
        raise Malformed("not an Ethernet BOOTREQUEST")
    if f.src_mac != entry.mac or req.chaddr[:6] != entry.mac:
        raise ForeignMac()
    mtype = req.msg_type
    if mtype is None:
        return Reply("dhcp4.bootp", None)  # plain BOOTP: not served
    name = "dhcp4." + TYPE_NAMES.get(mtype, "unknown")
    b = entry.dhcp4
    # Relayed requests (giaddr set) cannot come from a VM on its own tap.
    if b is None or req.giaddr != ZERO4:
        return Reply(name, None)
    if mtype == DISCOVER:
        body = encode_dhcp4(OFFER, req, b.address, ZERO4, b.lease_options + _client_id(req))
        return Reply("dhcp4.offer", _frame(entry, req, f.src_mac, b.address, body))
    if mtype == REQUEST:
        sid = req.options.get(OPT_SERVER_ID)
        if sid is not None and sid != b.server_id:
            return Reply(name, None)  # the client took another server's offer
        requested = req.options.get(OPT_REQUESTED_IP, req.ciaddr)
        if len(requested) != 4:
            raise Malformed("requested address of length != 4")
        if requested == b.address:
            body = encode_dhcp4(ACK, req, b.address, req.ciaddr, b.lease_options + _client_id(req))
            return Reply("dhcp4.ack", _frame(entry, req, f.src_mac, b.address, body))
        opts = bytes((OPT_SERVER_ID, 4)) + b.server_id + _nak_message(b"requested address is not this port's") + _client_id(req)
        body = encode_dhcp4(NAK, req, ZERO4, ZERO4, opts)
        # RFC 2131 4.3.2: without a relay, NAKs are broadcast.
        return Reply("dhcp4.nak", udp4_frame(entry.tap_mac, BROADCAST_MAC, b.server_id, BROADCAST4,
                                             SERVER_PORT, CLIENT_PORT, body))
    if mtype == INFORM:
        body = encode_dhcp4(ACK, req, ZERO4, req.ciaddr, b.inform_options + _client_id(req))
        return Reply("dhcp4.ack", _frame(entry, req, f.src_mac, req.ciaddr, body))
    return Reply(name, None)  # RELEASE, DECLINE, server messages


def _nak_message(text: bytes) -> bytes:
    return bytes((OPT_MESSAGE, len(text))) + text


def _frame(entry: PortEntry, req: Dhcp4Message, src_mac: bytes, yiaddr: bytes, body: bytes) -> bytes:
    """RFC 2131 4.1 without relays: to ciaddr when the client has one
    (renewing, INFORM), broadcast when the client asked for it, else unicast
    to the offered address at the client's MAC. We write the Ethernet header
    ourselves, so nothing depends on ARP for an address not yet configured."""
    b = entry.dhcp4
    assert b is not None
    if req.ciaddr != ZERO4:
        dst_mac, dst = src_mac, req.ciaddr
    elif req.flags & FLAG_BROADCAST or yiaddr == ZERO4:
        dst_mac, dst = BROADCAST_MAC, BROADCAST4
    else:
        dst_mac, dst = req.chaddr[:6], yiaddr
    return udp4_frame(entry.tap_mac, dst_mac, b.server_id, dst, SERVER_PORT, CLIENT_PORT, body)
