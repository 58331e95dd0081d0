"""kernel/vxlan.py against a real kernel, one fresh namespace per test.

Results are read back with iproute2 (`ip -d -j link`, `bridge -j fdb`,
`ip -j neigh`), independent of our decoders. Netlink and packet sockets are
opened inside the test namespace with setns(2) on this thread and the thread
goes straight back: a socket stays in the namespace it was created in.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from conftest import sh, wait_for

from hvrouter.errors import KernelError
from hvrouter.kernel import vxlan as kv
from hvrouter.kernel.netlink import NetlinkSocket
from hvrouter.overlay.types import BridgePort, BridgeSpec, Fdb, Miss, Neigh, VxlanSpec

pytestmark = pytest.mark.netns

PREFIX = "hvkx"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
ZERO = "00:00:00:00:00:00"
MAC1, MAC2, MAC3 = "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"
SRC = bytes.fromhex("5254000000aa")


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the body with this thread in namespace `ns` (for creating sockets only)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {ns}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                raise RuntimeError("could not return to the original network namespace")
    finally:
        os.close(own)
        os.close(target)


class NS:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closing: list[Any] = []
        with inside(name):
            self.nl = NetlinkSocket()
        self.closing.append(self.nl)

    def ip(self, *args: str) -> str:
        return sh("ip", "-n", self.name, *args).stdout

    def link(self, dev: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.ip("-d", "-j", "link", "show", "dev", dev))[0]
        return out

    def brport(self, dev: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(sh("bridge", "-n", self.name, "-d", "-j", "link", "show", "dev", dev).stdout)[0]
        return out

    def fdb(self, dev: str) -> set[tuple[str, str, str]]:
        """(mac, dst, flags+state) of remote entries, as iproute2 shows them."""
        rows = json.loads(sh("bridge", "-n", self.name, "-j", "fdb", "show", "dev", dev).stdout)
        return {(r["mac"], r["dst"], ",".join(sorted([*r.get("flags", []), r.get("state", "")])))
                for r in rows if "dst" in r}

    def neigh(self, dev: str) -> set[tuple[str, str, str]]:
        rows = json.loads(self.ip("-j", "neigh", "show", "dev", dev))
        return {(r["dst"], r["lladdr"], ",".join(r["state"])) for r in rows if "lladdr" in r}

    def veth(self, a: str, b: str) -> None:
        self.ip("link", "add", a, "type", "veth", "peer", "name", b)
        self.ip("link", "set", a, "up")
        self.ip("link", "set", b, "up")

    def packet(self, dev: str) -> socket.socket:
        with inside(self.name):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            s.bind((dev, 0))
        self.closing.append(s)
        return s

    def listener(self, rcvbuf: int = 32 << 20) -> kv.MissListener:
        with inside(self.name):
            ml = kv.MissListener(rcvbuf)
        self.closing.append(ml)
        return ml


@pytest.fixture
def ns() -> Iterator[NS]:
    name = f"{PREFIX}{secrets.token_hex(3)}"
    sh("ip", "netns", "add", name)
    try:
        n = NS(name)
        try:
            yield n
        finally:
            for obj in n.closing:
                obj.close()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def miss_vxlan(n: NS, proxy: bool = True, l3miss: bool = True) -> int:
    # No IPv6 link-local on the device: its DAD solicitation would itself be
    # an l3miss (for its own address) at an unpredictable moment.
    sh("ip", "netns", "exec", n.name, "sysctl", "-qw", "net.ipv6.conf.default.addr_gen_mode=1")
    kv.ensure_vxlan(n.nl, VxlanSpec("vxm", 300, "198.18.0.1", learning=False, proxy=proxy, l2miss=True, l3miss=l3miss))
    index = kv.link_index(n.nl, "vxm")
    assert index is not None
    return index


def eth(dst: str, ethertype: int, payload: bytes) -> bytes:
    return bytes.fromhex(dst.replace(":", "")) + SRC + struct.pack("!H", ethertype) + payload


def arp_request(target: str) -> bytes:
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, SRC, socket.inet_aton("203.0.113.1"),
                      b"\0" * 6, socket.inet_aton(target))
    return eth("ff:ff:ff:ff:ff:ff", 0x0806, arp)


def neighbour_solicitation(target: str) -> bytes:
    tgt = socket.inet_pton(socket.AF_INET6, target)
    icmp = struct.pack("!BBHI", 135, 0, 0, 0) + tgt + struct.pack("!BB6s", 1, 1, SRC)
    solicited = socket.inet_pton(socket.AF_INET6, "ff02::1:ff00:0")[:13] + tgt[13:]
    ip6 = struct.pack("!IHBB", 0x60000000, len(icmp), 58, 255) + socket.inet_pton(socket.AF_INET6, "2001:db8::1") + solicited
    return eth("33:33:" + solicited[12:].hex(":"), 0x86DD, ip6 + icmp)


def collect(ml: kv.MissListener, want: int, updates: list[tuple[int, str, str]] | None = None) -> list[Miss]:
    misses: list[Miss] = []
    wait_for(lambda: ml.read(misses, updates) >= 0 and len(misses) + len(updates or ()) >= want,
             timeout=5, what=f"{want} notifications")
    time.sleep(0.05)
    ml.read(misses, updates)  # anything unexpected arriving just after
    return misses


# -- devices -----------------------------------------------------------------


def test_vxlan_create_idempotent_recreate(ns: NS) -> None:
    spec = VxlanSpec("vx0", 100, "198.18.0.1", learning=False, proxy=True, l2miss=True, l3miss=True, mtu=1400)
    assert kv.ensure_vxlan(ns.nl, spec) is True
    link = ns.link("vx0")
    data = link["linkinfo"]["info_data"]
    assert link["linkinfo"]["info_kind"] == "vxlan"
    assert (data["id"], data["local"], data["port"], data["learning"], data["proxy"], data["l2miss"], data["l3miss"]) == (
        100, "198.18.0.1", 4789, False, True, True, True)
    assert not data.get("rsc", False) and "group" not in data
    assert link["mtu"] == 1400 and "UP" in link["flags"]
    assert kv.read_vxlan(ns.nl, "vx0") == spec
    index = link["ifindex"]

    assert kv.ensure_vxlan(ns.nl, spec) is False
    assert ns.link("vx0")["ifindex"] == index

    # MTU alone is changed in place...
    assert kv.ensure_vxlan(ns.nl, replace(spec, mtu=1300)) is True
    assert (ns.link("vx0")["ifindex"], ns.link("vx0")["mtu"]) == (index, 1300)
    # ...an immutable attribute means a new device.
    other = VxlanSpec("vx0", 100, "198.18.0.1", port=8472, rsc=True, ttl=3, learning=True)
    assert kv.ensure_vxlan(ns.nl, other) is True
    link = ns.link("vx0")
    data = link["linkinfo"]["info_data"]
    assert link["ifindex"] != index
    assert (data["port"], data["rsc"], data["ttl"], data["learning"], data.get("proxy", False)) == (8472, True, 3, True, False)
    assert kv.ensure_vxlan(ns.nl, other) is False
    # A device that is down is brought up without being recreated.
    ns.ip("link", "set", "vx0", "down")
    assert kv.ensure_vxlan(ns.nl, other) is True
    assert "UP" in ns.link("vx0")["flags"] and ns.link("vx0")["ifindex"] == link["ifindex"]


def test_vxlan_ipv6_local_and_multicast_groups(ns: NS) -> None:
    ns.veth("und0", "und1")
    ns.ip("addr", "add", "198.18.0.1/24", "dev", "und0")
    ns.ip("addr", "add", "2001:db8::1/64", "dev", "und0", "nodad")
    specs = [
        VxlanSpec("vx6", 200, "2001:db8::1", l2miss=True),
        VxlanSpec("vxg6", 201, None, group="ff05::100", device="und0", ttl=5),
        VxlanSpec("vxg4", 202, "198.18.0.1", group="239.1.1.1", device="und0", ttl=4),
    ]
    for spec in specs:
        assert kv.ensure_vxlan(ns.nl, spec) is True
    for spec in specs:
        assert kv.ensure_vxlan(ns.nl, spec) is False
    d6 = ns.link("vx6")["linkinfo"]["info_data"]
    assert (d6["id"], d6["local6"], d6["l2miss"]) == (200, "2001:db8::1", True)
    g6 = ns.link("vxg6")["linkinfo"]["info_data"]
    assert (g6["group6"], g6["link"], g6["ttl"]) == ("ff05::100", "und0", 5)
    g4 = ns.link("vxg4")["linkinfo"]["info_data"]
    assert (g4["group"], g4["local"], g4["link"], g4["ttl"]) == ("239.1.1.1", "198.18.0.1", "und0", 4)
    for spec in specs:
        got = kv.read_vxlan(ns.nl, spec.name)
        assert got is not None and got == replace(spec, mtu=got.mtu)
    # The underlay is part of the identity: moving the group to another device recreates.
    ns.veth("und2", "und3")
    moved = VxlanSpec("vxg6", 201, None, group="ff05::100", device="und2", ttl=5)
    assert kv.ensure_vxlan(ns.nl, moved) is True
    assert ns.link("vxg6")["linkinfo"]["info_data"]["link"] == "und2"


def test_vxlan_refuses_other_kinds_and_missing_underlay(ns: NS) -> None:
    ns.veth("taken0", "taken1")
    with pytest.raises(KernelError, match="taken0.*veth"):
        kv.ensure_vxlan(ns.nl, VxlanSpec("taken0", 1, "198.18.0.1"))
    assert ns.link("taken0")["linkinfo"]["info_kind"] == "veth"  # untouched
    with pytest.raises(KernelError, match="underlay device nosuch0"):
        kv.ensure_vxlan(ns.nl, VxlanSpec("vx1", 1, None, group="ff05::1", device="nosuch0"))
    # ...and an existing device is left alone when the new underlay is missing.
    kv.ensure_vxlan(ns.nl, VxlanSpec("vx2", 2, "198.18.0.1"))
    index = ns.link("vx2")["ifindex"]
    with pytest.raises(KernelError, match="underlay device nosuch0"):
        kv.ensure_vxlan(ns.nl, VxlanSpec("vx2", 2, None, group="ff05::1", device="nosuch0"))
    assert ns.link("vx2")["ifindex"] == index
    with pytest.raises(KernelError, match="taken0.*veth"):
        kv.ensure_bridge(ns.nl, BridgeSpec("taken0"))
    assert kv.read_vxlan(ns.nl, "taken0") is None
    assert kv.read_vxlan(ns.nl, "nosuch0") is None
    assert kv.link_index(ns.nl, "nosuch0") is None
    assert kv.link_index(ns.nl, "taken0") == ns.link("taken0")["ifindex"]


def test_bridge_ports_and_flags(ns: NS) -> None:
    assert kv.ensure_bridge(ns.nl, BridgeSpec("brov", 1400)) is True
    link = ns.link("brov")
    assert link["linkinfo"]["info_kind"] == "bridge" and link["mtu"] == 1400 and "UP" in link["flags"]
    assert link["linkinfo"]["info_data"]["vlan_filtering"] == 0
    assert kv.ensure_bridge(ns.nl, BridgeSpec("brov", 1400)) is False
    assert kv.ensure_bridge(ns.nl, BridgeSpec("brov")) is False  # no MTU wanted: leave it
    assert kv.ensure_bridge(ns.nl, BridgeSpec("brov", 1300)) is True and ns.link("brov")["mtu"] == 1300

    kv.ensure_vxlan(ns.nl, VxlanSpec("vxp", 10, "198.18.0.1", learning=False, mtu=1300))
    ns.veth("tapx", "tapy")
    vx_port = BridgePort("vxp", "brov", learning=False, neigh_suppress=True)
    assert kv.ensure_port(ns.nl, vx_port) is True
    assert kv.ensure_port(ns.nl, BridgePort("tapx", "brov")) is True
    p = ns.brport("vxp")
    assert (p["master"], p["learning"], p["neigh_suppress"]) == ("brov", False, True)
    p = ns.brport("tapx")
    assert (p["master"], p["learning"], p["neigh_suppress"]) == ("brov", True, False)
    assert kv.ensure_port(ns.nl, vx_port) is False
    assert kv.ensure_port(ns.nl, BridgePort("tapx", "brov")) is False
    state = kv.read_link(ns.nl, "vxp")
    assert state is not None and state.brport == (False, True)

    # Flags flipped behind our back are put back, one at a time.
    sh("bridge", "-n", ns.name, "link", "set", "dev", "vxp", "learning", "on")
    assert kv.ensure_port(ns.nl, vx_port) is True
    assert (ns.brport("vxp")["learning"], ns.brport("vxp")["neigh_suppress"]) == (False, True)
    assert kv.ensure_port(ns.nl, BridgePort("tapx", "brov", learning=False, neigh_suppress=True)) is True
    assert (ns.brport("tapx")["learning"], ns.brport("tapx")["neigh_suppress"]) == (False, True)

    # Down or moved to another bridge: back up and in the right one.
    ns.ip("link", "set", "vxp", "down")
    assert kv.ensure_port(ns.nl, vx_port) is True and "UP" in ns.link("vxp")["flags"]
    kv.ensure_bridge(ns.nl, BridgeSpec("brother"))
    assert kv.ensure_port(ns.nl, BridgePort("tapx", "brother")) is True
    assert ns.brport("tapx")["master"] == "brother"
    assert (ns.brport("tapx")["learning"], ns.brport("tapx")["neigh_suppress"]) == (True, False)

    with pytest.raises(KernelError, match="bridge nosuchbr"):
        kv.ensure_port(ns.nl, BridgePort("tapx", "nosuchbr"))
    with pytest.raises(KernelError, match="interface nosuch0"):
        kv.ensure_port(ns.nl, BridgePort("nosuch0", "brov"))

    assert kv.delete_link(ns.nl, "brother") is True
    assert kv.delete_link(ns.nl, "brother") is False
    assert "brother" not in ns.ip("-br", "link")


# -- FDB and neighbours ------------------------------------------------------


def test_fdb_append_replace_delete_exact_pairs(ns: NS) -> None:
    kv.ensure_vxlan(ns.nl, VxlanSpec("vxf", 20, "198.18.0.1", learning=False))
    index = kv.link_index(ns.nl, "vxf")
    assert index is not None
    flood = [Fdb("vxf", ZERO, d) for d in ("198.18.0.2", "198.18.0.3", "198.18.0.4")]
    unicast = [Fdb("vxf", MAC1, "198.18.0.2", router=True), Fdb("vxf", MAC2, "198.18.0.3", permanent=False)]
    assert ns.nl.batch([kv.fdb_request(f, ifindex=index) for f in flood + unicast]) == []
    assert ns.fdb("vxf") == {
        (ZERO, "198.18.0.2", "permanent,self"), (ZERO, "198.18.0.3", "permanent,self"),
        (ZERO, "198.18.0.4", "permanent,self"),
        (MAC1, "198.18.0.2", "permanent,router,self"), (MAC2, "198.18.0.3", ",self"),
    }
    assert set(kv.read_fdb(ns.nl, "vxf")) == set(flood + unicast)
    flags = dict(kv.read_fdb_flags(ns.nl, "vxf"))
    assert flags[unicast[0]] & kv.NTF_ROUTER and not flags[unicast[1]] & kv.NTF_ROUTER

    # Writing the same again changes nothing (no duplicate remotes).
    assert ns.nl.batch([kv.fdb_request(f, ifindex=index) for f in flood + unicast]) == []
    assert len(kv.read_fdb(ns.nl, "vxf")) == 5

    # A unicast MAC that moved keeps one remote, the new one.
    moved = Fdb("vxf", MAC1, "198.18.0.9", router=True)
    assert ns.nl.batch([kv.fdb_request(moved, ifindex=index)]) == []
    assert {r for r in ns.fdb("vxf") if r[0] == MAC1} == {(MAC1, "198.18.0.9", "permanent,router,self")}

    # Deletes remove exactly one (mac, dst) pair.
    assert ns.nl.batch([kv.fdb_request(flood[1], True, ifindex=index), kv.fdb_request(moved, True, ifindex=index)]) == []
    assert ns.fdb("vxf") == {(ZERO, "198.18.0.2", "permanent,self"), (ZERO, "198.18.0.4", "permanent,self"),
                            (MAC2, "198.18.0.3", ",self")}
    assert set(kv.read_fdb(ns.nl, "vxf")) == {flood[0], flood[2], unicast[1]}

    # IPv6 remotes on an IPv6 vxlan; entries of other devices are not reported.
    kv.ensure_vxlan(ns.nl, VxlanSpec("vxf6", 21, "2001:db8::1"))
    i6 = kv.link_index(ns.nl, "vxf6")
    assert i6 is not None
    six = [Fdb("vxf6", ZERO, "2001:db8::2"), Fdb("vxf6", ZERO, "2001:db8::3"), Fdb("vxf6", MAC3, "2001:db8::3")]
    assert ns.nl.batch([kv.fdb_request(f, ifindex=i6) for f in six]) == []
    assert set(kv.read_fdb(ns.nl, "vxf6")) == set(six)
    assert {(m, d) for m, d, _ in ns.fdb("vxf6")} == {(f.mac, f.dst) for f in six}
    assert set(kv.read_fdb(ns.nl, "vxf")) == {flood[0], flood[2], unicast[1]}
    assert kv.read_fdb(ns.nl, "nosuch0") == []

    # Without an ifindex the device name is resolved in the caller's namespace.
    with inside(ns.name):
        by_name = [kv.fdb_request(Fdb("vxf6", ZERO, "2001:db8::9")), kv.neigh_request(Neigh("vxf", "203.0.113.9", MAC1))]
    assert ns.nl.batch(by_name) == []
    assert Fdb("vxf6", ZERO, "2001:db8::9") in kv.read_fdb(ns.nl, "vxf6")
    assert kv.read_neigh(ns.nl, "vxf") == [Neigh("vxf", "203.0.113.9", MAC1)]


def test_fdb_of_enslaved_vxlan_ignores_bridge_entries(ns: NS) -> None:
    kv.ensure_vxlan(ns.nl, VxlanSpec("vxb", 22, "198.18.0.1"))
    kv.ensure_bridge(ns.nl, BridgeSpec("brfdb"))
    kv.ensure_port(ns.nl, BridgePort("vxb", "brfdb"))
    index = kv.link_index(ns.nl, "vxb")
    assert index is not None
    sh("bridge", "-n", ns.name, "fdb", "add", MAC3, "dev", "vxb", "master", "static")
    entry = Fdb("vxb", MAC1, "198.18.0.7")
    assert ns.nl.batch([kv.fdb_request(entry, ifindex=index)]) == []
    assert kv.read_fdb(ns.nl, "vxb") == [entry]


def test_neigh_both_families(ns: NS) -> None:
    kv.ensure_vxlan(ns.nl, VxlanSpec("vxn", 30, "198.18.0.1", proxy=True))
    index = kv.link_index(ns.nl, "vxn")
    assert index is not None
    entries = [Neigh("vxn", "203.0.113.5", MAC1), Neigh("vxn", "203.0.113.6", MAC2, permanent=False),
               Neigh("vxn", "2001:db8:1::5", MAC1), Neigh("vxn", "2001:db8:1::6", MAC3, permanent=False)]
    assert ns.nl.batch([kv.neigh_request(n, ifindex=index) for n in entries]) == []
    assert ns.neigh("vxn") == {("203.0.113.5", MAC1, "PERMANENT"), ("203.0.113.6", MAC2, "REACHABLE"),
                               ("2001:db8:1::5", MAC1, "PERMANENT"), ("2001:db8:1::6", MAC3, "REACHABLE")}
    assert set(kv.read_neigh(ns.nl, "vxn")) == set(entries)
    # Replace moves an IP to another MAC in place.
    assert ns.nl.batch([kv.neigh_request(Neigh("vxn", "203.0.113.5", MAC3), ifindex=index)]) == []
    assert ("203.0.113.5", MAC3, "PERMANENT") in ns.neigh("vxn")
    assert ns.nl.batch([kv.neigh_request(entries[1], True, ifindex=index),
                        kv.neigh_request(entries[2], True, ifindex=index)]) == []
    assert ns.neigh("vxn") == {("203.0.113.5", MAC3, "PERMANENT"), ("2001:db8:1::6", MAC3, "REACHABLE")}
    assert set(kv.read_neigh(ns.nl, "vxn")) == {Neigh("vxn", "203.0.113.5", MAC3), entries[3]}


# -- misses ------------------------------------------------------------------


def test_l2_and_l3_misses_and_updates(ns: NS) -> None:
    index = miss_vxlan(ns)
    ml = ns.listener()
    pk = ns.packet("vxm")
    pk.send(eth("52:54:00:00:00:77", 0x0800, bytes(46)))
    pk.send(arp_request("203.0.113.77"))
    pk.send(neighbour_solicitation("2001:db8::77"))
    misses = collect(ml, 3)
    assert misses == [Miss("l2", index, "52:54:00:00:00:77"), Miss("l3", index, "203.0.113.77"),
                      Miss("l3", index, "2001:db8::77")]

    # A known IP is answered by proxy (no miss); a multicast MAC never misses.
    assert ns.nl.batch([kv.neigh_request(Neigh("vxm", "203.0.113.78", MAC1), ifindex=index)]) == []
    pk.send(arp_request("203.0.113.78"))
    pk.send(eth("01:00:5e:00:00:01", 0x0800, bytes(46)))
    pk.send(eth("52:54:00:00:00:79", 0x0800, bytes(46)))  # the marker that must arrive
    assert collect(ml, 1) == [Miss("l2", index, "52:54:00:00:00:79")]

    # Entries written appear as updates with the right device and key.
    updates: list[tuple[int, str, str]] = []
    ml.read([], [])
    assert ns.nl.batch([kv.fdb_request(Fdb("vxm", "52:54:00:00:00:77", "198.18.0.5", permanent=False), ifindex=index),
                        kv.neigh_request(Neigh("vxm", "2001:db8::77", MAC2, permanent=False), ifindex=index)]) == []
    assert collect(ml, 2, updates) == []
    assert (index, "fdb", "52:54:00:00:00:77") in updates
    assert (index, "neigh", "2001:db8::77") in updates

    # With an all-zero (flood) entry, unknown unicast is flooded: no more l2 misses.
    assert ns.nl.batch([kv.fdb_request(Fdb("vxm", ZERO, "198.18.0.5"), ifindex=index)]) == []
    ml.read([], [])
    pk.send(eth("52:54:00:00:00:80", 0x0800, bytes(46)))
    pk.send(arp_request("203.0.113.81"))  # marker: l3 misses still come
    assert collect(ml, 1) == [Miss("l3", index, "203.0.113.81")]


def test_l3miss_needs_proxy(ns: NS) -> None:
    index = miss_vxlan(ns, proxy=False, l3miss=True)
    ml = ns.listener()
    pk = ns.packet("vxm")
    pk.send(arp_request("203.0.113.90"))
    pk.send(neighbour_solicitation("2001:db8::90"))
    pk.send(eth("52:54:00:00:00:91", 0x0800, bytes(46)))  # marker
    assert collect(ml, 1) == [Miss("l2", index, "52:54:00:00:00:91")]


def test_miss_burst_counts_overruns(ns: NS) -> None:
    index = miss_vxlan(ns)
    roomy = ns.listener()
    tight = ns.listener(rcvbuf=256 << 10)
    pk = ns.packet("vxm")
    tail = SRC + b"\x08\x00" + bytes(46)
    for i in range(50_000):
        pk.send(b"\x52\x54" + i.to_bytes(4, "big") + tail)
    misses: list[Miss] = []
    t = time.perf_counter()
    seen = roomy.read(misses)
    elapsed = time.perf_counter() - t
    # The forced 32 MB buffer holds the whole burst.
    assert roomy.overruns == 0 and seen == 50_000
    assert {m.key for m in misses} == {(b"\x52\x54" + i.to_bytes(4, "big")).hex(":") for i in range(50_000)}
    assert all(m.ifindex == index and m.kind == "l2" for m in misses)
    print(f"read 50k misses in {elapsed:.3f}s ({seen / elapsed:,.0f}/s)")
    # A small one overflows: counted, not raised, and reading goes on.
    small: list[Miss] = []
    got = tight.read(small)
    assert tight.overruns >= 1 and 0 < got < 50_000 and len(small) == got
    pk.send(eth("52:54:00:00:00:99", 0x0800, bytes(46)))
    assert collect(tight, 1) == [Miss("l2", index, "52:54:00:00:00:99")]
