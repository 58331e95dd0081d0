"""Router solicitations in, router advertisements out (RFC 4861).

The advertisement itself is encoded once per port (table.py); answering a
solicitation only checksums it for the destination. Solicited RAs are sent
to the soliciting VM (unicast to its link-local address and MAC), or to
all-nodes when the VM solicited from the unspecified address.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .table import PortEntry
from .wire import ForeignMac, Malformed, Reply, icmp6_frame, parse_icmp6

ROUTER_SOLICITATION = 133
ROUTER_ADVERTISEMENT = 134
OPT_SOURCE_LLADDR = 1
UNSPECIFIED = b"\x00" * 16


def parse_nd_options(data: bytes) -> dict[int, bytes]:
    """ND options (RFC 4861 4.6) by type, first instance, from the byte after
    the length. A zero length or one running past the message makes the
    message invalid."""
    out: dict[int, bytes] = {}
    for otype, body in _nd_options_list(data):
        out.setdefault(otype, body[2:])
    return out


def handle_rs(entry: PortEntry, raw: bytes) -> Reply:
    """Raises Malformed for what RFC 4861 6.1.1 says to discard silently,
    ForeignMac when the frame or the solicitation names another MAC."""
    f = parse_icmp6(raw)
    msg = f.payload
    if len(msg) < 8 or msg[0] != ROUTER_SOLICITATION or msg[1] != 0:
        raise Malformed("not a router solicitation")
    if f.hop_limit != 255:
        raise Malformed("router solicitation with hop limit != 255 (not from the link)")
    options = parse_nd_options(msg[8:])
    lladdr = options.get(OPT_SOURCE_LLADDR)
    if lladdr is not None and f.src_ip == UNSPECIFIED:
        raise Malformed("source link-layer option from the unspecified address")
    if f.src_mac != entry.mac or (lladdr is not None and lladdr[:6] != entry.mac):
        raise ForeignMac()
    ra = entry.ra
    if ra is None:
        return Reply("ra.rs", None)
    if f.src_ip == UNSPECIFIED:
        return Reply("ra.solicited", ra.multicast_frame)
    return Reply("ra.solicited", icmp6_frame(entry.tap_mac, f.src_mac, ra.source, f.src_ip, ra.message))


@dataclass
class RaInfo:
    """A decoded router advertisement (tests, diagnostics)."""

    hop_limit: int
    managed: bool
    other: bool
    router_lifetime: int
    lladdr: bytes | None = None
    mtu: int | None = None
    # (prefix, length, on-link L, autonomous A, valid, preferred)
    prefixes: list[tuple[bytes, int, bool, bool, int, int]] = field(default_factory=list)
    rdnss: list[tuple[bytes, int]] = field(default_factory=list)  # (server, lifetime)
    dnssl: bytes = b""  # encoded names, padded


def parse_ra(message: bytes) -> RaInfo:
    """An ICMPv6 RA message (from the ICMPv6 header on) -> RaInfo."""
    if len(message) < 16 or message[0] != ROUTER_ADVERTISEMENT:
        raise Malformed("not a router advertisement")
    hop, flags, lifetime = struct.unpack_from("!BBH", message, 4)
    info = RaInfo(hop, bool(flags & 0x80), bool(flags & 0x40), lifetime)
    for otype, body in _nd_options_list(message[16:]):
        if otype == 1:
            info.lladdr = body[2:8]
        elif otype == 5:
            info.mtu = struct.unpack_from("!I", body, 4)[0]
        elif otype == 3 and len(body) == 32:
            plen, pflags, valid, pref = struct.unpack_from("!BBII", body, 2)
            info.prefixes.append((body[16:32], plen, bool(pflags & 0x80), bool(pflags & 0x40), valid, pref))
        elif otype == 25:
            life = struct.unpack_from("!I", body, 4)[0]
            info.rdnss += [(body[j : j + 16], life) for j in range(8, len(body) - 15, 16)]
        elif otype == 31:
            info.dnssl = body[8:]
    return info


def _nd_options_list(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    i = 0
    while i < len(data):
        if i + 2 > len(data) or data[i + 1] == 0 or i + data[i + 1] * 8 > len(data):
            raise Malformed("bad ND option")
        olen = data[i + 1] * 8
        out.append((data[i], data[i : i + olen]))
        i += olen
    return out
