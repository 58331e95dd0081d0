"""kernel/vxlan.py codec without a kernel: what we encode decodes back, and
miss notifications shaped like the kernel's (as observed on 6.18) decode to
the right Miss."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hvrouter.errors import KernelError
from hvrouter.kernel import vxlan as kv
from hvrouter.kernel.netlink import attr, parse_attrs
from hvrouter.overlay.types import Fdb, Miss, Neigh, VxlanSpec

HDR = struct.Struct("=IHHII")
MAC = "52:54:00:12:34:56"


def message(mtype: int, body: bytes) -> bytes:
    return HDR.pack(HDR.size + len(body), mtype, 0, 0, 0) + body


def link_reply(index: int, name: str, linkinfo: bytes, mtu: int = 1500, master: int = 0, up: bool = True) -> bytes:
    body = kv.IFINFO.pack(0, 1, index, kv.IFF_UP if up else 0, 0) + attr(kv.IFLA_IFNAME, name.encode() + b"\0")
    body += attr(kv.IFLA_MTU, kv.U32.pack(mtu))
    if master:
        body += attr(kv.IFLA_MASTER, kv.U32.pack(master))
    return body + attr(kv.IFLA_LINKINFO | kv.NLA_F_NESTED, linkinfo)


def vxlan_reply(spec: VxlanSpec, link: int = 0) -> bytes:
    info = attr(kv.IFLA_INFO_KIND, b"vxlan\0") + attr(kv.IFLA_INFO_DATA | kv.NLA_F_NESTED, kv.vxlan_data(spec, link))
    return link_reply(7, spec.name, info, mtu=spec.mtu or 1500)


v4 = st.builds(lambda n: f"198.18.{n >> 8}.{n & 255}", st.integers(0, 0xFFFF))
v6 = st.builds(lambda n: f"2001:db8::{n:x}", st.integers(1, 0xFFFF))
macs = st.binary(min_size=6, max_size=6).map(lambda b: b.hex(":"))


@given(
    vni=st.integers(1, (1 << 24) - 1), port=st.integers(1, 65535), ttl=st.integers(0, 255),
    local=st.one_of(st.none(), v4, v6), flags=st.lists(st.booleans(), min_size=5, max_size=5),
    mtu=st.integers(68, 9000), link=st.integers(0, 1000),
)
def test_vxlan_round_trip(vni: int, port: int, ttl: int, local: str | None, flags: list[bool], mtu: int, link: int) -> None:
    spec = VxlanSpec("vx0", vni, local, port=port, ttl=ttl, learning=flags[0], proxy=flags[1], rsc=flags[2],
                     l2miss=flags[3], l3miss=flags[4], mtu=mtu)
    buf = vxlan_reply(spec, link)
    state = kv.decode_link(buf, 0, len(buf))
    assert (state.index, state.name, state.kind, state.mtu, state.up, state.vxlan_link) == (7, "vx0", "vxlan", mtu, True, link)
    assert state.vxlan == spec


@pytest.mark.parametrize(("group", "attr_type"), [("239.1.1.1", kv.IFLA_VXLAN_GROUP), ("ff05::100", kv.IFLA_VXLAN_GROUP6)])
def test_vxlan_group_attribute_and_port_byte_order(group: str, attr_type: int) -> None:
    spec = VxlanSpec("vxg", 5, None, group=group, device="und0", port=4789)
    data = kv.vxlan_data(spec, 3)
    attrs = parse_attrs(data, 0, len(data))
    assert attr_type in attrs and kv.IFLA_VXLAN_LOCAL not in attrs and kv.IFLA_VXLAN_LOCAL6 not in attrs
    start, end = attrs[kv.IFLA_VXLAN_PORT]
    assert data[start:end] == b"\x12\xb5"  # 4789, network order
    start, end = attrs[kv.IFLA_VXLAN_LINK]
    assert kv.U32.unpack(data[start:end]) == (3,)
    buf = vxlan_reply(spec, 3)
    state = kv.decode_link(buf, 0, len(buf))
    assert state.vxlan is not None and state.vxlan.group == group and state.vxlan_link == 3


def test_newlink_creates_up_with_kind_and_mtu() -> None:
    body = kv.newlink_body("brov", "bridge", b"", 1400)
    _fam, _type, index, flags, change = kv.IFINFO.unpack_from(body, 0)
    assert (index, flags & kv.IFF_UP, change & kv.IFF_UP) == (0, kv.IFF_UP, kv.IFF_UP)
    attrs = parse_attrs(body, kv.IFINFO.size, len(body))
    s, e = attrs[kv.IFLA_MTU]
    assert kv.U32.unpack(body[s:e]) == (1400,)
    s, e = attrs[kv.IFLA_LINKINFO]
    info = parse_attrs(body, s, e)
    assert body[info[kv.IFLA_INFO_KIND][0] : info[kv.IFLA_INFO_KIND][1]] == b"bridge"
    assert kv.IFLA_INFO_DATA not in info  # see ensure_bridge: no explicit vlan_filtering


def test_bridge_and_port_state_decode() -> None:
    data = attr(kv.IFLA_BR_VLAN_FILTERING, b"\x01")
    buf = link_reply(4, "brov", attr(kv.IFLA_INFO_KIND, b"bridge\0") + attr(kv.IFLA_INFO_DATA, data))
    state = kv.decode_link(buf, 0, len(buf))
    assert (state.kind, state.vlan_filtering, state.brport, state.vxlan) == ("bridge", True, None, None)

    port = attr(kv.IFLA_BRPORT_LEARNING, b"\x00") + attr(kv.IFLA_BRPORT_NEIGH_SUPPRESS, b"\x01")
    info = (attr(kv.IFLA_INFO_KIND, b"veth\0") + attr(kv.IFLA_INFO_SLAVE_KIND, b"bridge\0")
            + attr(kv.IFLA_INFO_SLAVE_DATA, port))
    buf = link_reply(9, "tap1", info, master=4, up=False)
    state = kv.decode_link(buf, 0, len(buf))
    assert (state.kind, state.master, state.up, state.brport, state.vlan_filtering) == ("veth", 4, False, (False, True), None)


def test_brport_body_is_af_bridge_nested_and_sparse() -> None:
    body = kv.brport_body(9, None, True)
    family, _t, index, _f, _c = kv.IFINFO.unpack_from(body, 0)
    assert (family, index) == (kv.AF_BRIDGE, 9)
    (_alen, atype) = struct.unpack_from("=HH", body, kv.IFINFO.size)
    assert atype == kv.IFLA_PROTINFO | kv.NLA_F_NESTED
    inner = parse_attrs(body, kv.IFINFO.size + 4, len(body))
    assert set(inner) == {kv.IFLA_BRPORT_NEIGH_SUPPRESS}
    assert body[inner[kv.IFLA_BRPORT_NEIGH_SUPPRESS][0]] == 1


def test_setlink_sets_up_master_mtu() -> None:
    body = kv.setlink_body(5, mtu=1450, master=4)
    _fam, _t, index, flags, change = kv.IFINFO.unpack_from(body, 0)
    attrs = parse_attrs(body, kv.IFINFO.size, len(body))
    assert (index, flags, change) == (5, kv.IFF_UP, kv.IFF_UP)
    assert kv.U32.unpack_from(body, attrs[kv.IFLA_MASTER][0]) == (4,)
    assert kv.U32.unpack_from(body, attrs[kv.IFLA_MTU][0]) == (1450,)
    assert kv.setlink_body(5) == kv.IFINFO.pack(0, 0, 5, kv.IFF_UP, kv.IFF_UP)


# -- FDB / neighbour requests ---------------------------------------------------


@given(mac=macs, dst=st.one_of(v4, v6), router=st.booleans(), permanent=st.booleans())
def test_fdb_request_round_trip(mac: str, dst: str, router: bool, permanent: bool) -> None:
    f = Fdb("vx0", mac, dst, router=router, permanent=permanent)
    mtype, flags, body = kv.fdb_request(f, ifindex=12)
    assert mtype == kv.RTM_NEWNEIGH
    flood = int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00"
    assert flags == kv.NLM_F_CREATE | (kv.NLM_F_APPEND if flood else kv.NLM_F_REPLACE)
    ifindex, got_mac, got_dst, state, ntf = kv.decode_fdb(body, 0, len(body)) or (0, "", "", 0, 0)
    assert (ifindex, got_mac, got_dst) == (12, mac, dst)
    assert state == (kv.NUD_PERMANENT if permanent else kv.NUD_REACHABLE)
    assert ntf == kv.NTF_SELF | (kv.NTF_ROUTER if router else 0)

    mtype, flags, body = kv.fdb_request(f, True, ifindex=12)
    assert (mtype, flags) == (kv.RTM_DELNEIGH, 0)
    # The delete names the remote: only that (mac, dst) pair goes.
    assert kv.decode_fdb(body, 0, len(body)) == (12, mac, dst, 0, kv.NTF_SELF)


def test_fdb_flood_entries_append_unicast_replace() -> None:
    zero = kv.fdb_request(Fdb("vx0", "00:00:00:00:00:00", "198.18.0.2"), ifindex=1)
    mcast = kv.fdb_request(Fdb("vx0", "01:00:5e:00:00:01", "198.18.0.2"), ifindex=1)
    uni = kv.fdb_request(Fdb("vx0", MAC, "198.18.0.2"), ifindex=1)
    assert zero[1] == mcast[1] == kv.NLM_F_CREATE | 0x800
    assert uni[1] == kv.NLM_F_CREATE | kv.NLM_F_REPLACE


def test_requests_resolve_device_name_without_ifindex() -> None:
    # `lo` is index 1 in every namespace, so this needs no root.
    assert kv.fdb_request(Fdb("lo", MAC, "198.18.0.2"), True)[2][4:8] == struct.pack("=i", 1)
    assert kv.neigh_request(Neigh("lo", "198.18.0.2", MAC))[2][4:8] == struct.pack("=i", 1)
    with pytest.raises(KernelError, match="fdb 52:54:00:12:34:56 dst 198.18.0.2 dev nosuch0: .*does not exist"):
        kv.fdb_request(Fdb("nosuch0", MAC, "198.18.0.2"))
    with pytest.raises(KernelError, match="neigh 198.18.0.2 .*nosuch0"):
        kv.neigh_request(Neigh("nosuch0", "198.18.0.2", MAC), True)


def test_fdb_request_needs_a_valid_mac() -> None:
    with pytest.raises(ValueError, match="52:54:00"):
        kv.fdb_request(Fdb("vx0", "52:54:00", "198.18.0.2"), ifindex=1)


def test_dump_bodies_filter_on_device() -> None:
    assert kv.NDMSG.unpack(kv.dump_fdb_body(7)) == (kv.AF_BRIDGE, 7, 0, 0, 0)
    body = kv.dump_neigh_body(kv.AF_INET6, 7)
    assert kv.NDMSG.unpack_from(body, 0) == (kv.AF_INET6, 0, 0, 0, 0)  # strict check wants ndm_ifindex 0
    assert kv.U32.unpack_from(body, parse_attrs(body, kv.NDMSG.size, len(body))[kv.NDA_IFINDEX][0]) == (7,)


def test_decode_fdb_skips_entries_without_remote() -> None:
    body = kv.NDMSG.pack(kv.AF_BRIDGE, 3, kv.NUD_PERMANENT, 4, 0) + attr(kv.NDA_LLADDR, bytes(6))
    assert kv.decode_fdb(body, 0, len(body)) is None


@given(ip=st.one_of(v4, v6), mac=macs, permanent=st.booleans())
def test_neigh_request_round_trip(ip: str, mac: str, permanent: bool) -> None:
    n = Neigh("vx0", ip, mac, permanent)
    mtype, flags, body = kv.neigh_request(n, ifindex=4)
    assert (mtype, flags) == (kv.RTM_NEWNEIGH, kv.NLM_F_CREATE | kv.NLM_F_REPLACE)
    assert body[0] == (kv.AF_INET if "." in ip else kv.AF_INET6)
    assert kv.decode_neigh(body, 0, len(body)) == (4, ip, mac, kv.NUD_PERMANENT if permanent else kv.NUD_REACHABLE)
    mtype, flags, body = kv.neigh_request(n, True, ifindex=4)
    assert (mtype, flags) == (kv.RTM_DELNEIGH, 0)
    assert kv.decode_neigh(body, 0, len(body)) is None  # no lladdr in a delete
    assert kv.NDA_DST in parse_attrs(body, kv.NDMSG.size, len(body))


# -- miss notifications ---------------------------------------------------------


def notification(mtype: int, family: int, ifindex: int, *attrs: bytes) -> bytes:
    # Trailing attributes like the kernel's (NDA_VNI, NDA_CACHEINFO) must be skipped.
    tail = attr(7, bytes(4)) + attr(3, bytes(16))  # NDA_VNI, NDA_CACHEINFO
    return message(mtype, kv.NDMSG.pack(family, ifindex, 4, 0, 0) + b"".join(attrs) + tail)


def l2miss(ifindex: int, mac: str) -> bytes:
    # vxlan_fdb_miss: RTM_GETNEIGH, family AF_INET (no remote address), NDA_LLADDR only.
    return notification(kv.RTM_GETNEIGH, kv.AF_INET, ifindex, attr(kv.NDA_LLADDR, bytes.fromhex(mac.replace(":", ""))))


def l3miss(ifindex: int, ip: str) -> bytes:
    fam, raw = (kv.AF_INET, bytes(map(int, ip.split(".")))) if "." in ip else (kv.AF_INET6, _v6(ip))
    return notification(kv.RTM_GETNEIGH, fam, ifindex, attr(kv.NDA_DST, raw))


def _v6(ip: str) -> bytes:
    return ipaddress.IPv6Address(ip).packed


@given(st.lists(st.one_of(st.tuples(st.just("l2"), st.integers(1, 1 << 20), macs),
                          st.tuples(st.just("l3"), st.integers(1, 1 << 20), st.one_of(v4, v6))), max_size=30))
def test_misses_decode_in_order(events: list[tuple[str, int, str]]) -> None:
    buf = b"".join(l2miss(i, k) if kind == "l2" else l3miss(i, k) for kind, i, k in events)
    misses: list[Miss] = []
    assert kv.decode_events(bytearray(buf), len(buf), misses) == len(events)
    assert misses == [Miss(kind, i, k) for kind, i, k in events]  # type: ignore[arg-type]


def test_updates_only_when_asked_and_deletes_ignored() -> None:
    mac = attr(kv.NDA_LLADDR, bytes.fromhex("525400000001"))
    buf = b"".join([
        notification(kv.RTM_NEWNEIGH, kv.AF_BRIDGE, 3, mac, attr(kv.NDA_DST, bytes([198, 18, 0, 2]))),
        notification(kv.RTM_NEWNEIGH, kv.AF_INET6, 3, attr(kv.NDA_DST, _v6("2001:db8::5")), mac),
        notification(kv.RTM_NEWNEIGH, kv.AF_INET, 5, attr(kv.NDA_DST, bytes([203, 0, 113, 5])), mac),
        notification(kv.RTM_DELNEIGH, kv.AF_BRIDGE, 3, mac),
        l2miss(3, "52:54:00:00:00:09"),
    ])
    misses: list[Miss] = []
    assert kv.decode_events(buf, len(buf), misses) == 5
    assert misses == [Miss("l2", 3, "52:54:00:00:00:09")]
    updates: list[tuple[int, str, str]] = []
    misses.clear()
    assert kv.decode_events(memoryview(buf), len(buf), misses, updates) == 5
    assert updates == [(3, "fdb", "52:54:00:00:00:01"), (3, "neigh", "2001:db8::5"), (5, "neigh", "203.0.113.5")]
    assert misses == [Miss("l2", 3, "52:54:00:00:00:09")]


def test_truncated_buffer_stops_cleanly() -> None:
    buf = l2miss(3, MAC) + l3miss(3, "203.0.113.9")
    misses: list[Miss] = []
    assert kv.decode_events(buf, len(buf) - 10, misses) == 2  # second header seen, attributes cut
    assert misses == [Miss("l2", 3, MAC), Miss("l3", 3, "203.0.113.9")]
    assert kv.decode_events(buf, 20, []) == 0  # not even one ndmsg
    # A datagram cut inside the MAC: the rest of the (reused) buffer is stale, not read.
    cut: list[Miss] = []
    assert kv.decode_events(l2miss(3, MAC), 16 + 12 + 8, cut) == 1
    assert cut == []
