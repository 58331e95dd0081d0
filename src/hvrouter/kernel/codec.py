"""Pack model objects into rtnetlink requests and unpack dumps into model
objects. Layouts from include/uapi/linux/{rtnetlink,if_addr,if_link,
neighbour,fib_rules}.h; only the fields hvrouter uses."""

from __future__ import annotations

import socket
import struct

from ..model import (
    AF_INET,
    AF_INET6,
    RTN_UNICAST,
    Address,
    DevConf,
    NeighParms,
    ProxyNeigh,
    Route,
    Rule,
)
from .netlink import (
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    attr,
    parse_attrs,
)

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34
RTM_NEWNEIGHTBL, RTM_GETNEIGHTBL, RTM_SETNEIGHTBL = 64, 66, 67

IFLA_ADDRESS, IFLA_IFNAME, IFLA_AF_SPEC = 1, 3, 26
IFLA_INET_CONF = 1
IFF_UP = 0x1
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS, IFA_PROTO = 1, 2, 8, 11
IFA_F_NODAD = 0x02
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 4, 5, 6, 15
FRA_DST, FRA_SRC, FRA_IIFNAME, FRA_PRIORITY, FRA_SUPPRESS_PREFIXLEN, FRA_TABLE, FRA_PROTOCOL = (
    1, 2, 3, 6, 14, 15, 21,
)
FR_ACT_TO_TBL = 1
NDA_DST, NDA_PROTOCOL = 1, 12
NTF_PROXY, NTF_ROUTER = 0x08, 0x80
NUD_PERMANENT = 0x80
NDTA_NAME, NDTA_PARMS = 1, 6
NDTPA_IFINDEX, NDTPA_PROXY_DELAY = 1, 13
RT_TABLE_COMPAT = 252

IFINFO = struct.Struct("=BxHiII")
IFADDR = struct.Struct("=BBBBI")
RTMSG = struct.Struct("=BBBBBBBBI")
FIBRULE = RTMSG  # same layout: family, dst_len, src_len, tos, table, res1, res2, action, flags
NDMSG = struct.Struct("=BxxxiHBB")
NDTMSG = struct.Struct("=Bxxx")
U32 = struct.Struct("=I")
U64 = struct.Struct("=Q")
NEIGH_TABLE_NAME = {AF_INET: b"arp_cache\0", AF_INET6: b"ndisc_cache\0"}
ADD = NLM_F_CREATE | NLM_F_EXCL
REPLACE = NLM_F_CREATE | NLM_F_REPLACE

Request = tuple[int, int, bytes]


def _pton(family: int, text: str) -> bytes:
    return socket.inet_pton(family, text)


def _prefix(family: int, text: str) -> tuple[bytes, int]:
    addr, _, plen = text.partition("/")
    return socket.inet_pton(family, addr), int(plen)


# -- encoders ---------------------------------------------------------------

def route_msg(r: Route, proto: int, flags: int, delete: bool = False) -> Request:
    dst, plen = _prefix(r.family, r.dst)
    body = [
        RTMSG.pack(r.family, plen, 0, 0, r.table if r.table < 256 else RT_TABLE_COMPAT, proto, r.scope, r.type, 0),
        attr(RTA_TABLE, U32.pack(r.table)),
    ]
    if plen:
        body.append(attr(RTA_DST, dst))
    if r.metric or r.family == AF_INET6:
        body.append(attr(RTA_PRIORITY, U32.pack(r.metric)))
    if r.oif:
        body.append(attr(RTA_OIF, U32.pack(r.oif)))
    if r.gateway:
        body.append(attr(RTA_GATEWAY, _pton(r.family, r.gateway)))
    return (RTM_DELROUTE if delete else RTM_NEWROUTE, 0 if delete else flags, b"".join(body))


def address_msg(a: Address, proto: int, flags: int, delete: bool = False) -> Request:
    raw = _pton(a.family, a.address)
    ifa_flags = IFA_F_NODAD if a.family == AF_INET6 else 0
    body = [IFADDR.pack(a.family, a.prefixlen, ifa_flags, a.scope, a.ifindex), attr(IFA_LOCAL, raw), attr(IFA_ADDRESS, raw)]
    if not delete:
        body.append(attr(IFA_PROTO, bytes([proto])))
    return (RTM_DELADDR if delete else RTM_NEWADDR, 0 if delete else flags, b"".join(body))


def rule_msg(r: Rule, proto: int, delete: bool = False) -> Request:
    src_len = int(r.src.partition("/")[2]) if r.src else 0
    dst_len = int(r.dst.partition("/")[2]) if r.dst else 0
    body = [
        FIBRULE.pack(r.family, dst_len, src_len, 0, r.table if r.table < 256 else RT_TABLE_COMPAT, 0, 0, FR_ACT_TO_TBL, 0),
        attr(FRA_PRIORITY, U32.pack(r.priority)),
        attr(FRA_TABLE, U32.pack(r.table)),
        attr(FRA_PROTOCOL, bytes([proto])),
    ]
    if r.iif:
        body.append(attr(FRA_IIFNAME, r.iif.encode() + b"\0"))
    if r.src:
        body.append(attr(FRA_SRC, _prefix(r.family, r.src)[0]))
    if r.dst:
        body.append(attr(FRA_DST, _prefix(r.family, r.dst)[0]))
    if r.suppress_prefixlen >= 0:
        body.append(attr(FRA_SUPPRESS_PREFIXLEN, U32.pack(r.suppress_prefixlen)))
    return (RTM_DELRULE if delete else RTM_NEWRULE, 0 if delete else ADD, b"".join(body))


def proxy_msg(p: ProxyNeigh, proto: int, delete: bool = False) -> Request:
    flags = NTF_PROXY | (NTF_ROUTER if p.router else 0)
    body = [NDMSG.pack(p.family, p.ifindex, NUD_PERMANENT, flags, 0), attr(NDA_DST, _pton(p.family, p.address))]
    if not delete:
        body.append(attr(NDA_PROTOCOL, bytes([proto])))
    # A proxy entry is created or updated in place: no EXCL needed.
    return (RTM_DELNEIGH if delete else RTM_NEWNEIGH, 0 if delete else REPLACE, b"".join(body))


def devconf_msg(d: DevConf) -> Request:
    conf = b"".join(attr(k, U32.pack(v)) for k, v in d.values)
    spec = attr(IFLA_AF_SPEC, attr(AF_INET, attr(IFLA_INET_CONF, conf)))
    return (RTM_SETLINK, 0, IFINFO.pack(0, 0, d.ifindex, 0, 0) + spec)


def neighparms_msg(n: NeighParms) -> Request:
    parms = attr(NDTPA_IFINDEX, U32.pack(n.ifindex)) + attr(NDTPA_PROXY_DELAY, U64.pack(n.proxy_delay_ms))
    body = NDTMSG.pack(n.family) + attr(NDTA_NAME, NEIGH_TABLE_NAME[n.family]) + attr(NDTA_PARMS, parms)
    return (RTM_SETNEIGHTBL, 0, body)


# -- dump requests -----------------------------------------------------------

def dump_links() -> tuple[int, bytes]:
    return RTM_GETLINK, IFINFO.pack(0, 0, 0, 0, 0)


def dump_addresses(family: int) -> tuple[int, bytes]:
    return RTM_GETADDR, IFADDR.pack(family, 0, 0, 0, 0)


def dump_routes(family: int, proto: int) -> tuple[int, bytes]:
    # With NETLINK_GET_STRICT_CHK the kernel returns only this protocol's routes.
    return RTM_GETROUTE, RTMSG.pack(family, 0, 0, 0, 0, proto, 0, 0, 0)


def dump_rules(family: int) -> tuple[int, bytes]:
    return RTM_GETRULE, FIBRULE.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)


def dump_proxies(family: int) -> tuple[int, bytes]:
    return RTM_GETNEIGH, NDMSG.pack(family, 0, 0, NTF_PROXY, 0)


def dump_neightbl(family: int) -> tuple[int, bytes]:
    return RTM_GETNEIGHTBL, NDTMSG.pack(family)


# -- decoders (msg includes the 16-byte netlink header) ---------------------

H = 16


def _ntop(family: int, raw: memoryview | None) -> str:
    return socket.inet_ntop(family, bytes(raw)) if raw is not None else ""


def decode_link(msg: bytes) -> tuple[int, str, bool, str, dict[int, int]]:
    """-> (index, name, up, mac, ipv4 devconf {id: value})."""
    _fam, _type, index, flags, _change = IFINFO.unpack_from(msg, H)
    attrs = parse_attrs(msg, H + IFINFO.size, len(msg))
    name = bytes(attrs[IFLA_IFNAME]).rstrip(b"\0").decode() if IFLA_IFNAME in attrs else ""
    mac_raw = attrs.get(IFLA_ADDRESS)
    mac = ":".join(f"{b:02x}" for b in bytes(mac_raw)) if mac_raw is not None else ""
    conf: dict[int, int] = {}
    spec = attrs.get(IFLA_AF_SPEC)
    if spec is not None:
        inet = parse_attrs(spec, 0, len(spec)).get(AF_INET)
        if inet is not None:
            arr = parse_attrs(inet, 0, len(inet)).get(IFLA_INET_CONF)
            if arr is not None:
                values = struct.unpack_from(f"={len(arr) // 4}I", arr)
                conf = {i + 1: v for i, v in enumerate(values)}
    return index, name, bool(flags & IFF_UP), mac, conf


def decode_address(msg: bytes) -> tuple[Address, int]:
    """-> (address, protocol)."""
    family, plen, _flags, scope, index = IFADDR.unpack_from(msg, H)
    attrs = parse_attrs(msg, H + IFADDR.size, len(msg))
    raw = attrs.get(IFA_LOCAL) if family == AF_INET else None
    if raw is None:
        raw = attrs.get(IFA_ADDRESS)
    proto_raw = attrs.get(IFA_PROTO)
    proto = proto_raw[0] if proto_raw is not None else 0
    return Address(family, index, _ntop(family, raw), plen, scope), proto


def decode_route(msg: bytes) -> tuple[Route, int]:
    """-> (route, protocol)."""
    family, dlen, _slen, _tos, table, proto, scope, rtype, _fl = RTMSG.unpack_from(msg, H)
    attrs = parse_attrs(msg, H + RTMSG.size, len(msg))
    if RTA_TABLE in attrs:
        table = U32.unpack_from(attrs[RTA_TABLE])[0]
    dst = attrs.get(RTA_DST)
    dst_text = _ntop(family, dst) if dst is not None else ("0.0.0.0" if family == AF_INET else "::")
    metric = U32.unpack_from(attrs[RTA_PRIORITY])[0] if RTA_PRIORITY in attrs else 0
    oif = U32.unpack_from(attrs[RTA_OIF])[0] if RTA_OIF in attrs and rtype == RTN_UNICAST else 0
    gw = _ntop(family, attrs.get(RTA_GATEWAY))
    return Route(family, table, f"{dst_text}/{dlen}", metric, rtype, scope, oif, gw), proto


def decode_rule(msg: bytes) -> tuple[Rule, int]:
    """-> (rule, protocol); the rule is only meaningful for plain lookups."""
    family, dlen, slen, _tos, table, _r1, _r2, _action, _fl = FIBRULE.unpack_from(msg, H)
    attrs = parse_attrs(msg, H + FIBRULE.size, len(msg))
    if FRA_TABLE in attrs:
        table = U32.unpack_from(attrs[FRA_TABLE])[0]
    prio = U32.unpack_from(attrs[FRA_PRIORITY])[0] if FRA_PRIORITY in attrs else 0
    iif = bytes(attrs[FRA_IIFNAME]).rstrip(b"\0").decode() if FRA_IIFNAME in attrs else ""
    src = f"{_ntop(family, attrs[FRA_SRC])}/{slen}" if FRA_SRC in attrs else ""
    dst = f"{_ntop(family, attrs[FRA_DST])}/{dlen}" if FRA_DST in attrs else ""
    sup = U32.unpack_from(attrs[FRA_SUPPRESS_PREFIXLEN])[0] if FRA_SUPPRESS_PREFIXLEN in attrs else 0xFFFFFFFF
    proto = attrs[FRA_PROTOCOL][0] if FRA_PROTOCOL in attrs else 0
    return Rule(family, prio, table, iif, src, dst, -1 if sup == 0xFFFFFFFF else sup), proto


def decode_proxy(msg: bytes) -> tuple[ProxyNeigh, int] | None:
    family, ifindex, _state, flags, _type = NDMSG.unpack_from(msg, H)
    if not flags & NTF_PROXY:
        return None
    attrs = parse_attrs(msg, H + NDMSG.size, len(msg))
    proto = attrs[NDA_PROTOCOL][0] if NDA_PROTOCOL in attrs else 0
    return ProxyNeigh(family, ifindex, _ntop(family, attrs.get(NDA_DST)), bool(flags & NTF_ROUTER)), proto


def decode_neightbl(msg: bytes) -> NeighParms | None:
    (family,) = NDTMSG.unpack_from(msg, H)
    attrs = parse_attrs(msg, H + NDTMSG.size, len(msg))
    name = attrs.get(NDTA_NAME)
    parms = attrs.get(NDTA_PARMS)
    if name is None or parms is None or bytes(name) != NEIGH_TABLE_NAME.get(family):
        return None
    p = parse_attrs(parms, 0, len(parms))
    if NDTPA_IFINDEX not in p or NDTPA_PROXY_DELAY not in p:
        return None
    ifindex = U32.unpack_from(p[NDTPA_IFINDEX])[0]
    if ifindex == 0:
        return None
    return NeighParms(family, ifindex, U64.unpack_from(p[NDTPA_PROXY_DELAY])[0])
