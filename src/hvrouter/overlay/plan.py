"""Pure planning for the overlay: config + local attachments + registry
snapshot -> what this VTEP publishes, and what its kernel should hold.

Per mode (seed 002), on the VXLAN device of each network:

| mode               | device flags                      | static entries planned here                    |
|--------------------|-----------------------------------|------------------------------------------------|
| multicast          | learning, group                   | none (BUM to the group, MACs learnt)           |
| unicast-flood      | learning                          | all-zero entry per peer VTEP                   |
| unicast-static-l2  | nolearning                        | all-zero per peer + each remote MAC            |
| unicast-static-nd  | nolearning, proxy                 | each remote MAC + ARP/ND entry per remote IP   |
| unicast-rsc        | nolearning, proxy, rsc            | as static-nd + the router MAC flagged `router` |
| unicast-dynamic-l2 | nolearning, l2miss                | broadcast per peer, IPv6 multicast MACs only;  |
|                    |                                   | unicast MACs resolved on miss (controller)     |
| unicast-dynamic-nd | nolearning, proxy, l2miss, l3miss | none: MACs and ARP/ND resolved on miss         |
| evpn               | nolearning (FRR does the rest)    | none: zebra installs type-2/type-3 entries     |
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from ..config import OverlayConfig, OverlayNetworkConfig
from .types import (
    BROADCAST_MAC,
    ZERO_MAC,
    Attachment,
    BridgePort,
    BridgeSpec,
    Entry,
    Fdb,
    Member,
    Neigh,
    OverlayDesired,
    Snapshot,
    VxlanSpec,
)

ALL_NODES_MAC = "33:33:00:00:00:01"
STATIC_MAC_MODES = ("unicast-static-l2", "unicast-static-nd", "unicast-rsc")
STATIC_ND_MODES = ("unicast-static-nd", "unicast-rsc")
DYNAMIC_MODES = ("unicast-dynamic-l2", "unicast-dynamic-nd")
UNMANAGED_MODES = ("multicast", "evpn")  # remote entries are learnt / owned by FRR


def solicited_node_mac(ip: str) -> str:
    """33:33:ff + the low 24 bits of the address (RFC 2464 over RFC 4291's ff02::1:ffXX:XXXX)."""
    low = ipaddress.IPv6Address(ip).packed[-3:]
    return "33:33:ff:" + ":".join(f"{b:02x}" for b in low)


def vxlan_spec(net: OverlayNetworkConfig) -> VxlanSpec:
    mode = net.mode
    return VxlanSpec(
        name=net.vxlan_name,
        vni=net.vni,
        local=str(net.local),
        group=str(net.group) if net.group is not None else None,
        device=net.device,
        port=net.port,
        ttl=net.ttl,
        learning=mode in ("multicast", "unicast-flood"),
        proxy=mode in ("unicast-static-nd", "unicast-rsc", "unicast-dynamic-nd"),
        rsc=mode == "unicast-rsc",
        l2miss=mode in DYNAMIC_MODES,
        l3miss=mode == "unicast-dynamic-nd",
        mtu=net.mtu,
    )


def publication(cfg: OverlayConfig, owner: str, attachments: Iterable[Attachment]) -> tuple[list[Member], list[Entry]]:
    """What this VTEP tells the registry: its VNIs and the MACs/IPs behind it."""
    nets = {n.name: n for n in cfg.networks}
    members = [Member(n.vni, str(n.local), owner) for n in cfg.networks]
    entries = [
        Entry(nets[a.network].vni, a.mac, tuple(a.addresses), str(nets[a.network].local), owner)
        for a in attachments
        if a.network in nets
    ]
    return members, entries


@dataclass(frozen=True, slots=True)
class Remote:
    """What the registry says about one network, seen from this VTEP."""

    peers: tuple[str, ...]  # other VTEPs in this VNI, same underlay family
    entries: tuple[Entry, ...]  # MACs behind other VTEPs


def remote_view(net: OverlayNetworkConfig, snapshot: Snapshot, owner: str) -> Remote:
    local = str(net.local)
    family = net.local.version

    def reachable(vtep: str) -> bool:
        try:
            return vtep != local and ipaddress.ip_address(vtep).version == family
        except ValueError:
            return False

    peers = sorted({m.vtep for m in snapshot.members if m.vni == net.vni and m.owner != owner and reachable(m.vtep)})
    local_macs = {e.mac for e in snapshot.entries if e.vni == net.vni and e.owner == owner}
    entries: list[Entry] = []
    seen_mac: set[str] = set()
    seen_ip: set[str] = set()
    # One VTEP per MAC and one MAC per IP, chosen the same way on every VTEP
    # (a MAC can be published twice for a moment while a VM migrates; a
    # unicast FDB or ARP/ND entry holds one answer, and planning both would
    # flip it on every pass). A MAC we host ourselves is never remote.
    for e in sorted(
        (e for e in snapshot.entries if e.vni == net.vni and e.owner != owner and reachable(e.vtep)),
        key=lambda e: (e.mac, e.vtep, e.owner),
    ):
        if e.mac in seen_mac or e.mac in local_macs:
            continue
        seen_mac.add(e.mac)
        ips = tuple(ip for ip in e.ips if ip not in seen_ip)
        seen_ip.update(ips)
        entries.append(e if ips == e.ips else Entry(e.vni, e.mac, ips, e.vtep, e.owner))
    return Remote(tuple(peers), tuple(entries))


def plan(cfg: OverlayConfig, owner: str, attachments: Iterable[Attachment], snapshot: Snapshot) -> OverlayDesired:
    bridges: list[BridgeSpec] = []
    vxlans: list[VxlanSpec] = []
    ports: list[BridgePort] = []
    fdb: set[Fdb] = set()
    neigh: set[Neigh] = set()
    managed: set[str] = set()
    neigh_managed: set[str] = set()
    by_net: dict[str, list[Attachment]] = {}
    for a in attachments:
        by_net.setdefault(a.network, []).append(a)
    for net in cfg.networks:
        vx, br, mode = net.vxlan_name, net.bridge_name, net.mode
        bridges.append(BridgeSpec(br, net.mtu))
        vxlans.append(vxlan_spec(net))
        ports.append(BridgePort(vx, br, learning=mode != "evpn", neigh_suppress=mode == "evpn"))
        ports.extend(BridgePort(a.interface, br) for a in sorted(by_net.get(net.name, []), key=lambda a: a.interface))
        if mode in UNMANAGED_MODES:
            continue
        managed.add(vx)
        remote = remote_view(net, snapshot, owner)
        if mode in ("unicast-flood", "unicast-static-l2"):
            fdb.update(Fdb(vx, ZERO_MAC, p) for p in remote.peers)
        if mode in STATIC_MAC_MODES:
            fdb.update(Fdb(vx, e.mac, e.vtep) for e in remote.entries)
        if mode in STATIC_ND_MODES:
            neigh_managed.add(vx)
            neigh.update(Neigh(vx, ip, e.mac) for e in remote.entries for ip in e.ips)
        if mode == "unicast-rsc" and net.router_mac is not None:
            fdb.add(Fdb(vx, net.router_mac, str(net.local), router=True))
        if mode == "unicast-dynamic-l2":
            # No catch-all entry (it would hide the misses); broadcast (ARP)
            # and the IPv6 multicast MACs ND needs still have to reach peers.
            fdb.update(Fdb(vx, BROADCAST_MAC, p) for p in remote.peers)
            fdb.update(Fdb(vx, ALL_NODES_MAC, p) for p in remote.peers)
            fdb.update(
                Fdb(vx, solicited_node_mac(ip), e.vtep) for e in remote.entries for ip in e.ips if ":" in ip
            )
    return OverlayDesired(
        bridges=tuple(bridges),
        vxlans=tuple(vxlans),
        ports=tuple(ports),
        fdb=frozenset(fdb),
        neigh=frozenset(neigh),
        managed=frozenset(managed),
        neigh_managed=frozenset(neigh_managed),
    )


@dataclass(frozen=True, slots=True)
class MissTables:
    """What the miss controller answers from, per VXLAN device name."""

    l2: dict[str, dict[str, str]]  # device -> mac -> vtep
    l3: dict[str, dict[str, str]]  # device -> ip -> mac


def miss_tables(cfg: OverlayConfig, owner: str, snapshot: Snapshot) -> MissTables:
    l2: dict[str, dict[str, str]] = {}
    l3: dict[str, dict[str, str]] = {}
    for net in cfg.networks:
        if net.mode not in DYNAMIC_MODES:
            continue
        remote = remote_view(net, snapshot, owner)
        macs: dict[str, str] = {}
        ips: dict[str, str] = {}
        for e in remote.entries:
            macs.setdefault(e.mac, e.vtep)
            for ip in e.ips:
                ips.setdefault(ip, e.mac)
        l2[net.vxlan_name] = macs
        l3[net.vxlan_name] = ips if net.mode == "unicast-dynamic-nd" else {}
    return MissTables(l2, l3)
