"""DHCPv6 (RFC 8415): stateless information, and IA_NA for shared-prefix
networks, where the port's /128s are the addresses to hand out.

As for DHCPv4 there is no lease state: the addresses are the port's for as
long as the port exists, so Request, Renew and Rebind all answer with them,
Release and Decline change nothing. Replies come from the gateway (fe80::1)
with the tap's MAC, to the client's link-local address and MAC.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .table import SERVER_DUID, Dhcp6Binding, PortEntry
from .wire import ForeignMac, Malformed, Reply, parse_udp6, udp6_frame

CLIENT_PORT, SERVER_PORT = 546, 547

SOLICIT, ADVERTISE, REQUEST, CONFIRM, RENEW, REBIND, REPLY, RELEASE, DECLINE = 1, 2, 3, 4, 5, 6, 7, 8, 9
RECONFIGURE, INFORMATION_REQUEST, RELAY_FORW, RELAY_REPL = 10, 11, 12, 13
TYPE_NAMES = {
    SOLICIT: "solicit", ADVERTISE: "advertise", REQUEST: "request", CONFIRM: "confirm", RENEW: "renew",
    REBIND: "rebind", REPLY: "reply", RELEASE: "release", DECLINE: "decline", RECONFIGURE: "reconfigure",
    INFORMATION_REQUEST: "information-request", RELAY_FORW: "relay-forw", RELAY_REPL: "relay-repl",
}

OPT_CLIENTID, OPT_SERVERID, OPT_IA_NA, OPT_IA_TA, OPT_IAADDR = 1, 2, 3, 4, 5
OPT_PREFERENCE, OPT_STATUS_CODE, OPT_RAPID_COMMIT, OPT_IA_PD = 7, 13, 14, 25
STATUS_SUCCESS, STATUS_NOADDRSAVAIL, STATUS_NOTONLINK = 0, 2, 4

_OPT = struct.Struct("!HH")
_IA = struct.Struct("!4sII")
_IAADDR = struct.Struct("!16sII")


class IaNa(NamedTuple):
    iaid: bytes
    addresses: tuple[bytes, ...]  # what the client asks for (IAADDR options)


class Dhcp6Message(NamedTuple):
    msg_type: int
    trid: bytes
    options: dict[int, bytes]  # first instance of each option
    ia_na: tuple[IaNa, ...]
    has_other_ia: bool  # IA_TA or IA_PD present


def iter_options(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    i, n = 0, len(data)
    while i < n:
        if i + 4 > n:
            raise Malformed("truncated DHCPv6 option")
        code, ln = _OPT.unpack_from(data, i)
        if i + 4 + ln > n:
            raise Malformed(f"DHCPv6 option {code} runs past the message")
        out.append((code, data[i + 4 : i + 4 + ln]))
        i += 4 + ln
    return out


def _ia_na(value: bytes) -> IaNa:
    if len(value) < _IA.size:
        raise Malformed("truncated IA_NA")
    addrs = []
    for code, sub in iter_options(value[_IA.size :]):
        if code == OPT_IAADDR:
            if len(sub) < _IAADDR.size:
                raise Malformed("truncated IAADDR")
            addrs.append(sub[:16])
    return IaNa(value[:4], tuple(addrs))


def parse_dhcp6(payload: bytes) -> Dhcp6Message:
    if len(payload) < 4:
        raise Malformed("truncated DHCPv6 message")
    mtype = payload[0]
    if mtype in (RELAY_FORW, RELAY_REPL):
        # Relay messages have another header layout; we serve VMs directly.
        return Dhcp6Message(mtype, b"", {}, (), False)
    options: dict[int, bytes] = {}
    ias = []
    other = False
    for code, value in iter_options(payload[4:]):
        if code == OPT_IA_NA:
            ias.append(_ia_na(value))
        elif code in (OPT_IA_TA, OPT_IA_PD):
            other = True
        options.setdefault(code, value)
    return Dhcp6Message(mtype, payload[1:4], options, tuple(ias), other)


def option(code: int, value: bytes) -> bytes:
    return _OPT.pack(code, len(value)) + value


def status(code: int, text: str) -> bytes:
    return option(OPT_STATUS_CODE, struct.pack("!H", code) + text.encode())


def _ia_answers(b: Dhcp6Binding, ias: tuple[IaNa, ...]) -> bytes:
    """The port's addresses in the first IA_NA; addresses the client asks
    for that are not the port's come back with lifetimes 0 (RFC 8415
    18.3.4/18.3.5: the client must stop using them); further IA_NAs get
    NoAddrsAvail (each address belongs to one IA)."""
    out = b""
    lease = b.lease_time
    for n, ia in enumerate(ias):
        if n == 0 and b.addresses:
            body = _IA.pack(ia.iaid, lease // 2, lease * 4 // 5)
            body += b"".join(option(OPT_IAADDR, _IAADDR.pack(a, lease, lease)) for a in b.addresses)
            body += b"".join(option(OPT_IAADDR, _IAADDR.pack(a, 0, 0)) for a in ia.addresses if a not in b.addresses)
        else:
            body = _IA.pack(ia.iaid, 0, 0) + status(STATUS_NOADDRSAVAIL, "no addresses for this IA")
        out += option(OPT_IA_NA, body)
    return out


def _on_link(b: Dhcp6Binding, addr: bytes) -> bool:
    a = int.from_bytes(addr, "big")
    return any(a >> (128 - plen) == int.from_bytes(p, "big") >> (128 - plen) for p, plen in b.on_link)


def decide(b: Dhcp6Binding, msg: Dhcp6Message) -> tuple[int, bytes] | None:
    """(reply type, options after the server and client ids), or None when
    RFC 8415 section 16 says to discard the message."""
    opts = msg.options
    cid = opts.get(OPT_CLIENTID)
    sid = opts.get(OPT_SERVERID)
    t = msg.msg_type
    if t == INFORMATION_REQUEST:
        if (sid is not None and sid != SERVER_DUID) or msg.ia_na or msg.has_other_ia:
            return None
        return REPLY, b.info_options
    if cid is None:
        return None
    if t in (SOLICIT, REBIND, CONFIRM):
        if sid is not None:
            return None
    elif t in (REQUEST, RENEW, RELEASE, DECLINE):
        if sid != SERVER_DUID:
            return None
    else:
        return None
    if t == SOLICIT:
        if not b.stateful or not msg.ia_na:
            return ADVERTISE, status(STATUS_NOADDRSAVAIL, "no addresses on this network: use SLAAC")
        ias = _ia_answers(b, msg.ia_na)
        if OPT_RAPID_COMMIT in opts:
            return REPLY, option(OPT_RAPID_COMMIT, b"") + ias + b.info_options
        # Preference 255: the client may take this at once instead of
        # collecting advertisements for a second (RFC 8415 18.2.1).
        return ADVERTISE, option(OPT_PREFERENCE, b"\xff") + ias + b.info_options
    if t in (REQUEST, RENEW, REBIND):
        if t == REBIND and not b.stateful:
            return None  # no binding of ours: leave it to the server that has one
        return REPLY, _ia_answers(b, msg.ia_na) + b.info_options
    if t == CONFIRM:
        addrs = [a for ia in msg.ia_na for a in ia.addresses]
        if not addrs:
            return None
        if all(_on_link(b, a) for a in addrs):
            return REPLY, status(STATUS_SUCCESS, "addresses are on this link")
        return REPLY, status(STATUS_NOTONLINK, "an address is not for this link")
    # RELEASE, DECLINE: the addresses stay the port's; acknowledge.
    return REPLY, status(STATUS_SUCCESS, "")


def handle_dhcp6(entry: PortEntry, raw: bytes) -> Reply:
    f = parse_udp6(raw)
    if f.dport != SERVER_PORT:
        raise Malformed(f"UDP port {f.dport}")
    if f.src_ip[0] == 0xFF or f.src_ip == b"\x00" * 16:
        raise Malformed("DHCPv6 request from a multicast or unspecified address")
    msg = parse_dhcp6(f.payload)
    if f.src_mac != entry.mac:
        raise ForeignMac()
    name = "dhcp6." + TYPE_NAMES.get(msg.msg_type, "unknown")
    b = entry.dhcp6
    if b is None:
        return Reply(name, None)
    decision = decide(b, msg)
    if decision is None:
        return Reply(name, None)
    rtype, body = decision
    cid = msg.options.get(OPT_CLIENTID)
    payload = (
        bytes((rtype,)) + msg.trid + option(OPT_SERVERID, SERVER_DUID)
        + (option(OPT_CLIENTID, cid) if cid is not None else b"") + body
    )
    frame = udp6_frame(entry.tap_mac, f.src_mac, b.source, f.src_ip, SERVER_PORT, CLIENT_PORT, payload)
    return Reply("dhcp6." + TYPE_NAMES[rtype], frame)
