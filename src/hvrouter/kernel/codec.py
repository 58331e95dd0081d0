"""Pack model objects into rtnetlink requests and unpack dumps into model
objects. Layouts from include/uapi/linux/{rtnetlink,if_addr,if_link,
neighbour,fib_rules}.h; only the fields hvrouter uses."""

from __future__ import annotations

import struct
from collections.abc import Callable
from socket import inet_ntop, inet_pton

from ..model import (
    AF_INET,
    AF_INET6,
    RTN_UNICAST,
    Address,
    DevConf,
    ProxyNeigh,
    Route,
    Rule,
)
from .netlink import (
    ATTR,
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
RTM_NEWNETCONF, RTM_GETNETCONF = 80, 82
NETCONFA_IFINDEX = 1
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34

IFLA_IFNAME, IFLA_AF_SPEC, IFLA_EXT_MASK = 3, 26, 29
IFLA_INET_CONF = 1
RTEXT_FILTER_SKIP_STATS = 1 << 3
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
RT_TABLE_COMPAT = 252
RTNH_F_ONLINK = 4

IFINFO = struct.Struct("=BxHiII")
IFADDR = struct.Struct("=BBBBI")
RTMSG = struct.Struct("=BBBBBBBBI")
FIBRULE = RTMSG  # same layout: family, dst_len, src_len, tos, table, res1, res2, action, flags
NDMSG = struct.Struct("=BxxxiHBB")
U32 = struct.Struct("=I")
I32 = struct.Struct("=i")
NETCONFMSG = struct.Struct("=Bxxx")
ADD = NLM_F_CREATE | NLM_F_EXCL
REPLACE = NLM_F_CREATE | NLM_F_REPLACE

Request = tuple[int, int, bytes]


def _pton(family: int, text: str) -> bytes:
    return inet_pton(family, text)


def _prefix(family: int, text: str) -> tuple[bytes, int]:
    addr, _, plen = text.partition("/")
    return inet_pton(family, addr), int(plen)


# -- encoders ---------------------------------------------------------------

def route_msg(r: Route, proto: int, flags: int, delete: bool = False) -> Request:
    dst, plen = _prefix(r.family, r.dst)
    body = [
        RTMSG.pack(r.family, plen, 0, 0, r.table if r.table < 256 else RT_TABLE_COMPAT, proto, r.scope, r.type, r.flags),
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



# -- dump requests -----------------------------------------------------------

def dump_links() -> tuple[int, bytes]:
    # Skip per-link statistics: we never read them and they are most of the bytes.
    return RTM_GETLINK, IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_EXT_MASK, U32.pack(RTEXT_FILTER_SKIP_STATS))


def dump_netconf(family: int) -> tuple[int, bytes]:
    return RTM_GETNETCONF, NETCONFMSG.pack(family)


def dump_addresses(family: int) -> tuple[int, bytes]:
    return RTM_GETADDR, IFADDR.pack(family, 0, 0, 0, 0)


def dump_routes(family: int, proto: int) -> tuple[int, bytes]:
    # With NETLINK_GET_STRICT_CHK the kernel returns only this protocol's routes.
    return RTM_GETROUTE, RTMSG.pack(family, 0, 0, 0, 0, proto, 0, 0, 0)


def dump_rules(family: int) -> tuple[int, bytes]:
    return RTM_GETRULE, FIBRULE.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)


def dump_proxies(family: int) -> tuple[int, bytes]:
    return RTM_GETNEIGH, NDMSG.pack(family, 0, 0, NTF_PROXY, 0)



# -- decoders: (buffer, payload start, message end) -> object ---------------
# Each returns None for messages that are not ours, so observe keeps only
# owned objects.

_DEFAULT_DST = {AF_INET: "0.0.0.0", AF_INET6: "::"}
# netconf attribute -> IPv4 DEVCONF id (forwarding, rp_filter, proxy_arp)
_NETCONF_TO_DEVCONF = ((2, 1), (3, 8), (5, 3))


def decode_link(buf: bytes, off: int, end: int) -> tuple[int, str, bool]:
    """-> (index, name, up). Stops at the name, which comes first: a link
    message carries ~45 attributes and a pass reads 10k of them."""
    _fam, _type, index, flags, _change = IFINFO.unpack_from(buf, off)
    off += IFINFO.size
    unpack = ATTR.unpack_from
    while off + 4 <= end:
        alen, atype = unpack(buf, off)
        if alen < 4:
            break
        if atype & 0x3FFF == IFLA_IFNAME:
            return index, buf[off + 4 : off + alen].rstrip(b"\0").decode(), bool(flags & IFF_UP)
        off += (alen + 3) & ~3
    return index, "", bool(flags & IFF_UP)


def decode_netconf(buf: bytes, off: int, end: int) -> tuple[int, dict[int, int]] | None:
    """IPv4 netconf of one device -> (ifindex, {DEVCONF id: value})."""
    attrs = parse_attrs(buf, off + NETCONFMSG.size, end)
    span = attrs.get(NETCONFA_IFINDEX)
    if span is None:
        return None
    ifindex = I32.unpack_from(buf, span[0])[0]
    if ifindex <= 0:  # "all" and "default" pseudo-devices
        return None
    conf = {k: U32.unpack_from(buf, attrs[a][0])[0] for a, k in _NETCONF_TO_DEVCONF if a in attrs}
    return ifindex, conf


def make_address_decoder(proto: int) -> Callable[[bytes, int, int], Address | None]:
    def decode(buf: bytes, off: int, end: int) -> Address | None:
        family, plen, _flags, scope, index = IFADDR.unpack_from(buf, off)
        attrs = parse_attrs(buf, off + IFADDR.size, end)
        span = attrs.get(IFA_PROTO)
        if span is None or buf[span[0]] != proto:
            return None
        span = attrs.get(IFA_LOCAL) if family == AF_INET else None
        if span is None:
            span = attrs[IFA_ADDRESS]
        return Address(family, index, inet_ntop(family, buf[span[0] : span[1]]), plen, scope)

    return decode


def make_route_decoder(proto: int) -> Callable[[bytes, int, int], Route | None]:
    def decode(buf: bytes, off: int, end: int) -> Route | None:
        family, dlen, _slen, _tos, table, rproto, scope, rtype, rflags = RTMSG.unpack_from(buf, off)
        if rproto != proto:
            return None
        attrs = parse_attrs(buf, off + RTMSG.size, end)
        span = attrs.get(RTA_TABLE)
        if span is not None:
            table = U32.unpack_from(buf, span[0])[0]
        span = attrs.get(RTA_DST)
        dst = inet_ntop(family, buf[span[0] : span[1]]) if span is not None else _DEFAULT_DST[family]
        span = attrs.get(RTA_PRIORITY)
        metric = U32.unpack_from(buf, span[0])[0] if span is not None else 0
        # IPv6 attaches reject routes to lo; the device means nothing for them.
        span = attrs.get(RTA_OIF)
        oif = U32.unpack_from(buf, span[0])[0] if span is not None and rtype == RTN_UNICAST else 0
        span = attrs.get(RTA_GATEWAY)
        gw = inet_ntop(family, buf[span[0] : span[1]]) if span is not None else ""
        return Route(family, table, f"{dst}/{dlen}", metric, rtype, scope, oif, gw, rflags & RTNH_F_ONLINK)

    return decode


def make_rule_decoder(proto: int, lo: int, hi: int) -> Callable[[bytes, int, int], Rule | None]:
    def decode(buf: bytes, off: int, end: int) -> Rule | None:
        family, dlen, slen, _tos, table, _r1, _r2, _action, _fl = FIBRULE.unpack_from(buf, off)
        attrs = parse_attrs(buf, off + FIBRULE.size, end)
        span = attrs.get(FRA_PROTOCOL)
        if span is None or buf[span[0]] != proto:
            return None
        span = attrs.get(FRA_PRIORITY)
        prio = U32.unpack_from(buf, span[0])[0] if span is not None else 0
        if not lo <= prio <= hi:
            return None
        span = attrs.get(FRA_TABLE)
        if span is not None:
            table = U32.unpack_from(buf, span[0])[0]
        span = attrs.get(FRA_IIFNAME)
        iif = buf[span[0] : span[1]].rstrip(b"\0").decode() if span is not None else ""
        span = attrs.get(FRA_SRC)
        src = f"{inet_ntop(family, buf[span[0] : span[1]])}/{slen}" if span is not None else ""
        span = attrs.get(FRA_DST)
        dst = f"{inet_ntop(family, buf[span[0] : span[1]])}/{dlen}" if span is not None else ""
        span = attrs.get(FRA_SUPPRESS_PREFIXLEN)
        sup = U32.unpack_from(buf, span[0])[0] if span is not None else 0xFFFFFFFF
        return Rule(family, prio, table, iif, src, dst, -1 if sup == 0xFFFFFFFF else sup)

    return decode


def make_proxy_decoder(proto: int) -> Callable[[bytes, int, int], ProxyNeigh | None]:
    def decode(buf: bytes, off: int, end: int) -> ProxyNeigh | None:
        family, ifindex, _state, flags, _type = NDMSG.unpack_from(buf, off)
        if not flags & NTF_PROXY:
            return None
        attrs = parse_attrs(buf, off + NDMSG.size, end)
        span = attrs.get(NDA_PROTOCOL)
        if span is None or buf[span[0]] != proto:
            return None
        span = attrs[NDA_DST]
        return ProxyNeigh(family, ifindex, inet_ntop(family, buf[span[0] : span[1]]), bool(flags & NTF_ROUTER))

    return decode
