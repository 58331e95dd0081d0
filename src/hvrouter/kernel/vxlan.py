"""VXLAN overlay objects over rtnetlink: vxlan and bridge devices, bridge
ports, remote FDB entries, neighbours, and the kernel's miss notifications.

Layouts from include/uapi/linux/{if_link,neighbour,rtnetlink}.h. Kernel
facts this module relies on (checked in a namespace, 6.18):

* most vxlan attributes cannot be changed on a live device, so a device that
  differs is deleted and recreated (it then leaves its bridge and loses its
  FDB: ensure ports and entries after the device);
* a miss arrives as RTM_GETNEIGH from the vxlan device: an l2miss carries
  only NDA_LLADDR and, despite being an FDB lookup, ndm_family AF_INET; an
  l3miss carries only NDA_DST (family of the address). So the kind is told
  by the attribute, never by the family. l2misses fire only for unicast
  MACs with no all-zero entry; l3misses need `proxy`, and the device's own
  DAD solicitation for its IPv6 link-local is one of them;
* the vxlan FDB keeps one remote per unicast MAC: NLM_F_APPEND only adds
  remotes to the all-zero and multicast MACs, and a unicast MAC that moved
  needs NLM_F_REPLACE (REPLACE is refused on all-zero/multicast MACs).

Policy (which entries to hold) belongs to the overlay planner; this module
only reads and writes what it is given.
"""

from __future__ import annotations

import errno as errno_mod
import ipaddress
import socket
import struct
from dataclasses import dataclass, replace
from socket import inet_ntop

from ..errors import KernelError
from ..overlay.types import BridgePort, BridgeSpec, Fdb, Miss, Neigh, VxlanSpec
from . import codec
from .netlink import (
    ATTR,
    HDR,
    NETLINK_ROUTE,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    SO_RCVBUFFORCE,
    NetlinkSocket,
    attr,
    parse_attrs,
)

AF_INET, AF_INET6, AF_BRIDGE = 2, 10, 7
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RTMGRP_NEIGH = 0x4  # 1 << (RTNLGRP_NEIGH - 1)
NLM_F_APPEND = 0x800
NLA_F_NESTED = 0x8000

IFF_UP = 0x1
IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_PROTINFO, IFLA_LINKINFO, IFLA_EXT_MASK = 3, 4, 10, 12, 18, 29
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
IFLA_BR_VLAN_FILTERING = 7
IFLA_BRPORT_LEARNING, IFLA_BRPORT_NEIGH_SUPPRESS = 8, 32
RTEXT_FILTER_SKIP_STATS = 1 << 3
(IFLA_VXLAN_ID, IFLA_VXLAN_GROUP, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL, IFLA_VXLAN_TTL) = (1, 2, 3, 4, 5)
IFLA_VXLAN_LEARNING, IFLA_VXLAN_PROXY, IFLA_VXLAN_RSC, IFLA_VXLAN_L2MISS, IFLA_VXLAN_L3MISS = 7, 11, 12, 13, 14
IFLA_VXLAN_PORT, IFLA_VXLAN_GROUP6, IFLA_VXLAN_LOCAL6 = 15, 16, 17

NDA_DST, NDA_LLADDR, NDA_IFINDEX = 1, 2, 8
NTF_SELF, NTF_EXT_LEARNED, NTF_ROUTER = 0x02, 0x10, 0x80
NUD_REACHABLE, NUD_NOARP, NUD_PERMANENT = 0x02, 0x40, 0x80

IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
U8 = struct.Struct("=B")
U32 = struct.Struct("=I")
BE16 = struct.Struct("!H")
# nlmsghdr + ndmsg in one unpack: the miss path reads nothing else per message.
NL_ND = struct.Struct("=IHHIIBxxxiHBB")

Request = tuple[int, int, bytes]


@dataclass(frozen=True, slots=True)
class LinkState:
    """What the overlay needs to know about one existing link."""

    index: int
    name: str
    up: bool
    mtu: int
    master: int  # 0: not enslaved
    kind: str  # rtnl kind ("vxlan", "bridge", "veth"); "" for devices without one (lo)
    vxlan: VxlanSpec | None = None  # `device` left None: see vxlan_link
    vxlan_link: int = 0  # underlay ifindex of a vxlan, 0 if none
    vlan_filtering: bool | None = None  # bridges only
    brport: tuple[bool, bool] | None = None  # bridge ports: (learning, neigh_suppress)


# -- pure encoders -----------------------------------------------------------


def _addr(text: str) -> tuple[int, bytes]:
    ip = ipaddress.ip_address(text)
    return (AF_INET, ip.packed) if ip.version == 4 else (AF_INET6, ip.packed)


def _norm(text: str | None) -> str | None:
    return None if text is None else str(ipaddress.ip_address(text))


def getlink_body(name: str | None = None, index: int = 0) -> bytes:
    body = IFINFO.pack(0, 0, index, 0, 0) + attr(IFLA_EXT_MASK, U32.pack(RTEXT_FILTER_SKIP_STATS))
    if name is not None:
        body += attr(IFLA_IFNAME, name.encode() + b"\0")
    return body


def vxlan_data(spec: VxlanSpec, link: int) -> bytes:
    """IFLA_INFO_DATA payload of a vxlan device; `link` is the underlay ifindex (0: none)."""
    parts = [attr(IFLA_VXLAN_ID, U32.pack(spec.vni))]
    if spec.local is not None:
        fam, raw = _addr(spec.local)
        parts.append(attr(IFLA_VXLAN_LOCAL if fam == AF_INET else IFLA_VXLAN_LOCAL6, raw))
    if spec.group is not None:
        fam, raw = _addr(spec.group)
        parts.append(attr(IFLA_VXLAN_GROUP if fam == AF_INET else IFLA_VXLAN_GROUP6, raw))
    if link:
        parts.append(attr(IFLA_VXLAN_LINK, U32.pack(link)))
    parts.append(attr(IFLA_VXLAN_PORT, BE16.pack(spec.port)))  # network order, unlike the rest
    parts.append(attr(IFLA_VXLAN_TTL, U8.pack(spec.ttl)))
    for atype, on in ((IFLA_VXLAN_LEARNING, spec.learning), (IFLA_VXLAN_PROXY, spec.proxy),
                      (IFLA_VXLAN_RSC, spec.rsc), (IFLA_VXLAN_L2MISS, spec.l2miss),
                      (IFLA_VXLAN_L3MISS, spec.l3miss)):
        parts.append(attr(atype, U8.pack(int(on))))
    return b"".join(parts)


def newlink_body(name: str, kind: str, data: bytes, mtu: int | None) -> bytes:
    """Create `name` of `kind`, administratively up."""
    info = attr(IFLA_INFO_KIND, kind.encode())
    if data:
        info += attr(IFLA_INFO_DATA | NLA_F_NESTED, data)
    body = IFINFO.pack(0, 0, 0, IFF_UP, IFF_UP) + attr(IFLA_IFNAME, name.encode() + b"\0")
    if mtu is not None:
        body += attr(IFLA_MTU, U32.pack(mtu))
    return body + attr(IFLA_LINKINFO | NLA_F_NESTED, info)


def setlink_body(index: int, mtu: int | None = None, master: int | None = None) -> bytes:
    """Set a link up, and optionally its MTU and master."""
    body = IFINFO.pack(0, 0, index, IFF_UP, IFF_UP)
    if mtu is not None:
        body += attr(IFLA_MTU, U32.pack(mtu))
    if master is not None:
        body += attr(IFLA_MASTER, U32.pack(master))
    return body


def brport_body(index: int, learning: bool | None, neigh_suppress: bool | None) -> bytes:
    """AF_BRIDGE RTM_SETLINK payload setting bridge-port flags (None: leave alone)."""
    flags = b""
    if learning is not None:
        flags += attr(IFLA_BRPORT_LEARNING, U8.pack(int(learning)))
    if neigh_suppress is not None:
        flags += attr(IFLA_BRPORT_NEIGH_SUPPRESS, U8.pack(int(neigh_suppress)))
    # Without NLA_F_NESTED the bridge reads IFLA_PROTINFO as a bare STP state.
    return IFINFO.pack(AF_BRIDGE, 0, index, 0, 0) + attr(IFLA_PROTINFO | NLA_F_NESTED, flags)


def _mac(text: str) -> bytes:
    raw = bytes.fromhex(text.replace(":", ""))
    if len(raw) != 6:
        raise ValueError(f"MAC {text!r}: expected 6 bytes aa:bb:cc:dd:ee:ff")
    return raw


def _index(device: str, ifindex: int | None, what: str) -> int:
    """The kernel addresses neighbours by ifindex only. Without one, resolve
    the name in the calling thread's namespace (an ioctl, no netlink): right
    when the process runs where `nl` was opened, as the daemon does; a
    caller holding a socket in another namespace must pass `ifindex`."""
    if ifindex is not None:
        return ifindex
    try:
        return socket.if_nametoindex(device)
    except OSError:
        raise KernelError(what, errno_mod.ENODEV, f"device {device} does not exist") from None


def fdb_request(f: Fdb, delete: bool = False, *, ifindex: int | None = None) -> Request:
    """Add (or delete exactly) the remote `f.mac` -> `f.dst` on vxlan
    `f.device` (or `ifindex`, see _index).

    All-zero and multicast MACs are flood lists: NLM_F_APPEND adds one more
    remote. A unicast MAC holds one remote: NLM_F_REPLACE moves it."""
    ifindex = _index(f.device, ifindex, f"fdb {f.mac} dst {f.dst} dev {f.device}")
    mac = _mac(f.mac)
    _fam, dst = _addr(f.dst)  # the vxlan device tells the family by length
    if delete:
        body = NDMSG.pack(AF_BRIDGE, ifindex, 0, NTF_SELF, 0) + attr(NDA_LLADDR, mac) + attr(NDA_DST, dst)
        return (RTM_DELNEIGH, 0, body)
    state = NUD_PERMANENT if f.permanent else NUD_REACHABLE
    flags = NTF_SELF | (NTF_ROUTER if f.router else 0) | (NTF_EXT_LEARNED if f.ext_learned else 0)
    body = NDMSG.pack(AF_BRIDGE, ifindex, state, flags, 0) + attr(NDA_LLADDR, mac) + attr(NDA_DST, dst)
    flood = mac[0] & 1 or mac == b"\0" * 6
    return (RTM_NEWNEIGH, NLM_F_CREATE | (NLM_F_APPEND if flood else NLM_F_REPLACE), body)


def neigh_request(n: Neigh, delete: bool = False, *, ifindex: int | None = None) -> Request:
    """Add/replace (or delete) the ARP/ND entry `n.ip` -> `n.mac` on `n.device` (or `ifindex`)."""
    ifindex = _index(n.device, ifindex, f"neigh {n.ip} lladdr {n.mac} dev {n.device}")
    fam, dst = _addr(n.ip)
    if delete:
        return (RTM_DELNEIGH, 0, NDMSG.pack(fam, ifindex, 0, 0, 0) + attr(NDA_DST, dst))
    state = NUD_PERMANENT if n.permanent else NUD_REACHABLE
    flags = NTF_EXT_LEARNED if n.ext_learned else 0
    body = NDMSG.pack(fam, ifindex, state, flags, 0) + attr(NDA_DST, dst) + attr(NDA_LLADDR, _mac(n.mac))
    return (RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body)


def dump_fdb_body(ifindex: int) -> bytes:
    # Strict checking filters an AF_BRIDGE dump on ndm_ifindex (the port).
    return NDMSG.pack(AF_BRIDGE, ifindex, 0, 0, 0)


def dump_neigh_body(family: int, ifindex: int) -> bytes:
    # Neighbour dumps want ndm_ifindex zero and the device in NDA_IFINDEX.
    return NDMSG.pack(family, 0, 0, 0, 0) + attr(NDA_IFINDEX, U32.pack(ifindex))


# -- pure decoders -----------------------------------------------------------


def _u8(buf: bytes, span: tuple[int, int] | None, default: int = 0) -> int:
    return buf[span[0]] if span is not None else default


def _ip(buf: bytes, span: tuple[int, int]) -> str:
    return inet_ntop(AF_INET if span[1] - span[0] == 4 else AF_INET6, bytes(buf[span[0] : span[1]]))


def _decode_vxlan(buf: bytes, name: str, mtu: int, off: int, end: int) -> tuple[VxlanSpec, int]:
    a = parse_attrs(buf, off, end)
    span = a.get(IFLA_VXLAN_LOCAL) or a.get(IFLA_VXLAN_LOCAL6)
    local = _ip(buf, span) if span is not None else None
    span = a.get(IFLA_VXLAN_GROUP) or a.get(IFLA_VXLAN_GROUP6)
    group = _ip(buf, span) if span is not None else None
    span = a.get(IFLA_VXLAN_ID)
    vni = U32.unpack_from(buf, span[0])[0] if span is not None else 0
    span = a.get(IFLA_VXLAN_PORT)
    port = BE16.unpack_from(buf, span[0])[0] if span is not None else 4789
    span = a.get(IFLA_VXLAN_LINK)
    link = U32.unpack_from(buf, span[0])[0] if span is not None else 0
    spec = VxlanSpec(
        name=name, vni=vni, local=local, group=group, device=None, port=port,
        ttl=_u8(buf, a.get(IFLA_VXLAN_TTL)),
        learning=bool(_u8(buf, a.get(IFLA_VXLAN_LEARNING), 1)),
        proxy=bool(_u8(buf, a.get(IFLA_VXLAN_PROXY))),
        rsc=bool(_u8(buf, a.get(IFLA_VXLAN_RSC))),
        l2miss=bool(_u8(buf, a.get(IFLA_VXLAN_L2MISS))),
        l3miss=bool(_u8(buf, a.get(IFLA_VXLAN_L3MISS))),
        mtu=mtu,
    )
    return spec, link


def decode_link(buf: bytes, off: int, end: int) -> LinkState:
    """An RTM_NEWLINK payload (ifinfomsg onwards) -> LinkState."""
    _fam, _type, index, flags, _change = IFINFO.unpack_from(buf, off)
    a = parse_attrs(buf, off + IFINFO.size, end)
    span = a.get(IFLA_IFNAME)
    name = bytes(buf[span[0] : span[1]]).rstrip(b"\0").decode() if span is not None else ""
    span = a.get(IFLA_MTU)
    mtu = U32.unpack_from(buf, span[0])[0] if span is not None else 0
    span = a.get(IFLA_MASTER)
    master = U32.unpack_from(buf, span[0])[0] if span is not None else 0
    kind, vx, link, vlan_filtering, brport = "", None, 0, None, None
    span = a.get(IFLA_LINKINFO)
    if span is not None:
        info = parse_attrs(buf, span[0], span[1])
        ks = info.get(IFLA_INFO_KIND)
        kind = bytes(buf[ks[0] : ks[1]]).rstrip(b"\0").decode() if ks is not None else ""
        ds = info.get(IFLA_INFO_DATA)
        if kind == "vxlan" and ds is not None:
            vx, link = _decode_vxlan(buf, name, mtu, ds[0], ds[1])
        elif kind == "bridge" and ds is not None:
            vlan_filtering = bool(_u8(buf, parse_attrs(buf, ds[0], ds[1]).get(IFLA_BR_VLAN_FILTERING)))
        ks = info.get(IFLA_INFO_SLAVE_KIND)
        ds = info.get(IFLA_INFO_SLAVE_DATA)
        if ks is not None and ds is not None and bytes(buf[ks[0] : ks[1]]).rstrip(b"\0") == b"bridge":
            port = parse_attrs(buf, ds[0], ds[1])
            brport = (bool(_u8(buf, port.get(IFLA_BRPORT_LEARNING), 1)),
                      bool(_u8(buf, port.get(IFLA_BRPORT_NEIGH_SUPPRESS))))
    return LinkState(index, name, bool(flags & IFF_UP), mtu, master, kind, vx, link, vlan_filtering, brport)


def decode_fdb(buf: bytes, off: int, end: int) -> tuple[int, str, str, int, int] | None:
    """An AF_BRIDGE RTM_NEWNEIGH payload -> (ifindex, mac, dst, state, flags);
    None for entries without a remote (local or bridge-learned MACs)."""
    _family, ifindex, state, flags, _type = NDMSG.unpack_from(buf, off)
    a = parse_attrs(buf, off + NDMSG.size, end)
    dst = a.get(NDA_DST)
    mac = a.get(NDA_LLADDR)
    if dst is None or mac is None:
        return None
    return ifindex, bytes(buf[mac[0] : mac[1]]).hex(":"), _ip(buf, dst), state, flags


def decode_neigh(buf: bytes, off: int, end: int) -> tuple[int, str, str, int] | None:
    """An AF_INET/AF_INET6 RTM_NEWNEIGH payload -> (ifindex, ip, mac, state);
    None for entries without a link-layer address (incomplete, failed)."""
    _family, ifindex, state, _flags, _type = NDMSG.unpack_from(buf, off)
    a = parse_attrs(buf, off + NDMSG.size, end)
    dst = a.get(NDA_DST)
    mac = a.get(NDA_LLADDR)
    if dst is None or mac is None or mac[1] - mac[0] != 6:
        return None
    return ifindex, _ip(buf, dst), bytes(buf[mac[0] : mac[1]]).hex(":"), state


def decode_events(buf: bytes | bytearray | memoryview, n: int, misses: list[Miss],
                  updates: list[tuple[int, str, str]] | None = None) -> int:
    """Scan `n` bytes of neighbour notifications; append misses (RTM_GETNEIGH)
    and, if asked, (ifindex, "fdb"|"neigh", key) for each RTM_NEWNEIGH.
    Returns the number of messages seen. Hot path: one unpack per message,
    an attribute scan that stops at what it needs."""
    unpack = NL_ND.unpack_from
    unpack_attr = ATTR.unpack_from
    off = 0
    count = 0
    while off + 28 <= n:
        mlen, mtype, _f, _s, _p, family, ifindex, _st, _fl, _t = unpack(buf, off)
        if mlen < 16:
            break
        end = min(off + mlen, n)  # never read past this datagram into a stale buffer
        count += 1
        if mtype == RTM_GETNEIGH or (updates is not None and mtype == RTM_NEWNEIGH):
            dst = lladdr = -1
            dlen = 0
            a = off + 28
            while a + 4 <= end:
                alen, atype = unpack_attr(buf, a)
                if alen < 4 or a + alen > end:
                    break
                atype &= 0x3FFF
                if atype == NDA_DST:
                    dst, dlen = a + 4, alen - 4
                elif atype == NDA_LLADDR:
                    lladdr = a + 4
                a += (alen + 3) & ~3
            if mtype == RTM_GETNEIGH:
                # Told apart by attribute: an l2miss comes with ndm_family AF_INET.
                if dst >= 0:
                    fam = AF_INET if dlen == 4 else AF_INET6
                    misses.append(Miss("l3", ifindex, inet_ntop(fam, buf[dst : dst + dlen])))
                elif lladdr >= 0:
                    misses.append(Miss("l2", ifindex, buf[lladdr : lladdr + 6].hex(":")))
            elif updates is not None:
                if family == AF_BRIDGE:
                    if lladdr >= 0:
                        updates.append((ifindex, "fdb", buf[lladdr : lladdr + 6].hex(":")))
                elif dst >= 0:
                    fam = AF_INET if dlen == 4 else AF_INET6
                    updates.append((ifindex, "neigh", inet_ntop(fam, buf[dst : dst + dlen])))
        off += (mlen + 3) & ~3
    return count


# -- kernel I/O --------------------------------------------------------------


def _get_link(nl: NetlinkSocket, name: str | None = None, index: int = 0) -> LinkState | None:
    """RTM_GETLINK for one device by name or index; None if it does not exist.
    (NetlinkSocket has dump and batch but no single get: this is that.)"""
    seq = nl._next_seq()
    body = getlink_body(name, index)
    nl.sock.send(HDR.pack(HDR.size + len(body), RTM_GETLINK, NLM_F_REQUEST, seq, 0) + body)
    while True:
        data = nl.sock.recv(1 << 16)
        off = 0
        while off + HDR.size <= len(data):
            mlen, mtype, _flags, mseq, _pid = HDR.unpack_from(data, off)
            if mlen < HDR.size:
                break
            if mseq == seq:
                if mtype == RTM_NEWLINK:
                    return decode_link(data, off + HDR.size, off + mlen)
                if mtype == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, off + HDR.size)[0]
                    if err == errno_mod.ENODEV:
                        return None
                    raise KernelError(f"link {name if name is not None else f'#{index}'}: get", err, "")
            off += (mlen + 3) & ~3


def _do(nl: NetlinkSocket, what: str, requests: list[Request]) -> None:
    failures = nl.batch(requests)
    if failures:
        raise KernelError(what, failures[0].errno, failures[0].describe())


def link_index(nl: NetlinkSocket, name: str) -> int | None:
    state = _get_link(nl, name)
    return state.index if state is not None else None


def link_indexes(nl: NetlinkSocket) -> dict[str, int]:
    """Every link by name (one dump; for resolving many FDB/neigh devices)."""
    mtype, body = codec.dump_links()
    return {name: index for index, name, _up in nl.dump(mtype, body, RTM_NEWLINK, codec.decode_link)}


def read_link(nl: NetlinkSocket, name: str) -> LinkState | None:
    return _get_link(nl, name)


def read_vxlan(nl: NetlinkSocket, name: str) -> VxlanSpec | None:
    """The vxlan device `name` as a VxlanSpec; None if absent or not a vxlan."""
    state = _get_link(nl, name)
    return _with_device(nl, state) if state is not None else None


def _with_device(nl: NetlinkSocket, state: LinkState) -> VxlanSpec | None:
    if state.vxlan is None:
        return None
    device = None
    if state.vxlan_link:
        under = _get_link(nl, index=state.vxlan_link)
        device = under.name if under is not None else f"#{state.vxlan_link}"
    return replace(state.vxlan, device=device)


def _wrong_kind(name: str, want: str, state: LinkState) -> KernelError:
    return KernelError(f"{want} {name}", errno_mod.EEXIST,
                       f"device {name} exists and is {'a ' + state.kind if state.kind else 'not a ' + want} "
                       f"(ifindex {state.index}); refusing to replace it")


def ensure_bridge(nl: NetlinkSocket, spec: BridgeSpec) -> bool:
    """Bridge `spec.name` exists (VLAN filtering off), has the MTU, is up."""
    state = _get_link(nl, spec.name)
    if state is None:
        # VLAN filtering is off by default; saying so explicitly fails with
        # EOPNOTSUPP on kernels built without CONFIG_BRIDGE_VLAN_FILTERING (this one).
        body = newlink_body(spec.name, "bridge", b"", spec.mtu)
        _do(nl, f"bridge {spec.name}: create", [(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)])
        return True
    if state.kind != "bridge":
        raise _wrong_kind(spec.name, "bridge", state)
    changed = False
    if state.vlan_filtering:
        info = attr(IFLA_INFO_KIND, b"bridge") + attr(IFLA_INFO_DATA | NLA_F_NESTED,
                                                      attr(IFLA_BR_VLAN_FILTERING, U8.pack(0)))
        body = IFINFO.pack(0, 0, state.index, 0, 0) + attr(IFLA_LINKINFO | NLA_F_NESTED, info)
        _do(nl, f"bridge {spec.name}: vlan_filtering off", [(RTM_NEWLINK, 0, body)])
        changed = True
    return _ensure_up(nl, f"bridge {spec.name}", state, spec.mtu) or changed


def _ensure_up(nl: NetlinkSocket, what: str, state: LinkState, mtu: int | None) -> bool:
    if state.up and (mtu is None or mtu == state.mtu):
        return False
    _do(nl, f"{what}: set {'up' if mtu is None else f'up, mtu {mtu}'}",
        [(RTM_SETLINK, 0, setlink_body(state.index, mtu if mtu != state.mtu else None))])
    return True


def _same(current: VxlanSpec, want: VxlanSpec) -> bool:
    want = replace(want, local=_norm(want.local), group=_norm(want.group), mtu=None)
    return replace(current, mtu=None) == want


def ensure_vxlan(nl: NetlinkSocket, spec: VxlanSpec) -> bool:
    """Device `spec.name` is a vxlan with exactly these attributes, the MTU,
    and up. A vxlan that differs is recreated (its attributes are immutable):
    callers ensure its bridge port and FDB afterwards."""
    what = f"vxlan {spec.name}"
    state = _get_link(nl, spec.name)
    if state is not None and state.kind != "vxlan":
        raise _wrong_kind(spec.name, "vxlan", state)
    if state is not None:
        current = _with_device(nl, state)
        if current is not None and _same(current, spec):
            return _ensure_up(nl, what, state, spec.mtu)
    link = 0
    if spec.device is not None:  # checked before deleting anything
        found = link_index(nl, spec.device)
        if found is None:
            raise KernelError(what, errno_mod.ENODEV, f"underlay device {spec.device} does not exist")
        link = found
    if state is not None:
        _do(nl, f"{what}: delete to recreate", [(RTM_DELLINK, 0, IFINFO.pack(0, 0, state.index, 0, 0))])
    body = newlink_body(spec.name, "vxlan", vxlan_data(spec, link), spec.mtu)
    _do(nl, f"{what}: create (vni {spec.vni})", [(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)])
    return True


def ensure_port(nl: NetlinkSocket, port: BridgePort) -> bool:
    """`port.interface` is up, enslaved to `port.bridge`, with these port flags."""
    what = f"bridge port {port.interface} (bridge {port.bridge})"
    state = _get_link(nl, port.interface)
    if state is None:
        raise KernelError(what, errno_mod.ENODEV, f"interface {port.interface} does not exist")
    bridge = link_index(nl, port.bridge)
    if bridge is None:
        raise KernelError(what, errno_mod.ENODEV, f"bridge {port.bridge} does not exist")
    changed = False
    if state.master != bridge or not state.up:
        _do(nl, f"{what}: enslave", [(RTM_SETLINK, 0, setlink_body(state.index, master=bridge))])
        changed = True
        state = _get_link(nl, port.interface)
        if state is None or state.brport is None:
            raise KernelError(what, errno_mod.ENODEV, f"interface {port.interface} vanished while enslaving it")
    learning, suppress = state.brport or (True, False)
    want_learning = port.learning if learning != port.learning else None
    want_suppress = port.neigh_suppress if suppress != port.neigh_suppress else None
    if want_learning is not None or want_suppress is not None:
        _do(nl, f"{what}: learning {'on' if port.learning else 'off'}, "
            f"neigh_suppress {'on' if port.neigh_suppress else 'off'}",
            [(RTM_SETLINK, 0, brport_body(state.index, want_learning, want_suppress))])
        changed = True
    return changed


def bridge_members(nl: NetlinkSocket, bridge: str) -> list[str]:
    """Names of the interfaces enslaved to `bridge` (a link dump filtered by
    IFLA_MASTER in the kernel: cheap even with thousands of taps)."""
    index = link_index(nl, bridge)
    if index is None:
        return []
    body = IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_MASTER, struct.pack("=I", index))
    links = nl.dump(RTM_GETLINK, body, RTM_NEWLINK, decode_link)
    return sorted(link.name for link in links if link.master == index)


def release_port(nl: NetlinkSocket, name: str) -> bool:
    """Take `name` out of its bridge (`ip link set NAME nomaster`); False if
    it was not enslaved or does not exist."""
    state = _get_link(nl, name)
    if state is None or state.master == 0:
        return False
    _do(nl, f"bridge port {name}: release", [(RTM_SETLINK, 0, setlink_body(state.index, master=0))])
    return True


def delete_link(nl: NetlinkSocket, name: str) -> bool:
    """Delete `name`; False if it did not exist."""
    body = IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, name.encode() + b"\0")
    for f in nl.batch([(RTM_DELLINK, 0, body)]):
        if f.errno == errno_mod.ENODEV:
            return False
        raise KernelError(f"link {name}: delete", f.errno, f.describe())
    return True


def read_fdb_flags(nl: NetlinkSocket, device: str) -> list[tuple[Fdb, int]]:
    """Remote FDB entries of vxlan `device` with their raw ndm_flags (so a
    caller can leave NTF_EXT_LEARNED entries, FRR's, alone). [] if absent."""
    index = link_index(nl, device)
    if index is None:
        return []
    out: list[tuple[Fdb, int]] = []
    for ifindex, mac, dst, state, flags in nl.dump(RTM_GETNEIGH, dump_fdb_body(index), RTM_NEWNEIGH, decode_fdb):
        if ifindex == index:  # the kernel filter is best effort without strict checking
            permanent = bool(state & (NUD_PERMANENT | NUD_NOARP))
            out.append((Fdb(device, mac, dst, bool(flags & NTF_ROUTER), permanent), flags))
    return out


def read_fdb(nl: NetlinkSocket, device: str) -> list[Fdb]:
    """Remote FDB entries (those with a destination) of vxlan `device`; one
    per (mac, dst), so each remote of an all-zero flood list appears."""
    return [f for f, _flags in read_fdb_flags(nl, device)]


def read_neigh(nl: NetlinkSocket, device: str) -> list[Neigh]:
    """IPv4 and IPv6 neighbours with a link-layer address on `device`."""
    index = link_index(nl, device)
    if index is None:
        return []
    out: list[Neigh] = []
    for family in (AF_INET, AF_INET6):
        for ifindex, ip, mac, state in nl.dump(RTM_GETNEIGH, dump_neigh_body(family, index), RTM_NEWNEIGH, decode_neigh):
            if ifindex == index:
                # NOARP entries are the kernel's own (multicast addresses); iproute2 hides them too.
                if not state & NUD_NOARP:
                    out.append(Neigh(device, ip, mac, bool(state & NUD_PERMANENT)))
    return out


SO_ATTACH_FILTER = 26
_BPF_LD_H_ABS, _BPF_JEQ_K, _BPF_RET_K = 0x28, 0x15, 0x06
_BPF_INSN = struct.Struct("=HBBI")


def misses_only_filter() -> bytes:
    """struct sock_fprog (as bytes, kept alive by the caller) keeping only
    RTM_GETNEIGH messages: `ldh [4]; jeq #RTM_GETNEIGH, keep, drop`. Classic
    BPF loads halfwords big-endian, nlmsg_type is in host order."""
    want = int.from_bytes(struct.pack("=H", RTM_GETNEIGH), "big")
    prog = b"".join((
        _BPF_INSN.pack(_BPF_LD_H_ABS, 0, 0, 4),
        _BPF_INSN.pack(_BPF_JEQ_K, 0, 1, want),
        _BPF_INSN.pack(_BPF_RET_K, 0, 0, 0xFFFFFFFF),
        _BPF_INSN.pack(_BPF_RET_K, 0, 0, 0),
    ))
    import ctypes

    buf = ctypes.create_string_buffer(prog)
    MissListener._keep.append(buf)
    return struct.pack("HL", 4, ctypes.addressof(buf))


class MissListener:
    """Neighbour notifications (RTNLGRP_NEIGH) of the current namespace:
    l2/l3 misses from vxlan devices, and optionally new FDB/neigh entries.

    The receive buffer is forced large because misses come in bursts (a VM
    scanning its subnet); when it overflows anyway the kernel reports
    ENOBUFS once, which is counted in `overruns` (the controller then
    resyncs) rather than raised."""

    _keep: list[object] = []  # BPF programs referenced by attached filters

    def __init__(self, rcvbuf: int = 32 << 20, misses_only: bool = False) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:  # without CAP_NET_ADMIN: capped by net.core.rmem_max
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if misses_only:
            # The controller's own writes come back as RTM_NEWNEIGH on the
            # same group: half the traffic. A socket filter drops them in
            # the kernel (measured: +40% resolved misses per second).
            self._filter = misses_only_filter()
            self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, self._filter)
        self.sock.bind((0, RTMGRP_NEIGH))
        self.sock.setblocking(False)
        self.overruns = 0
        self._buf = bytearray(1 << 16)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> MissListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, misses: list[Miss], updates: list[tuple[int, str, str]] | None = None) -> int:
        """Drain what is queued without blocking; returns messages processed."""
        buf = self._buf
        recv_into = self.sock.recv_into
        count = 0
        while True:
            try:
                n = recv_into(buf)
            except BlockingIOError:
                return count
            except OSError as exc:
                if exc.errno != errno_mod.ENOBUFS:
                    raise
                self.overruns += 1
                continue
            count += decode_events(buf, n, misses, updates)
