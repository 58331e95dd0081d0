"""Plain data shared by the overlay planner, registry, controller and kernel.

No behaviour here: frozen dataclasses that every overlay module agrees on.
MACs are lowercase `aa:bb:cc:dd:ee:ff`; IP addresses are compressed text
(`str(ipaddress.ip_address(x))`) so equal addresses compare equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

Mode = Literal[
    "multicast",
    "unicast-flood",
    "unicast-static-l2",
    "unicast-static-nd",
    "unicast-rsc",
    "unicast-dynamic-l2",
    "unicast-dynamic-nd",
    "evpn",
]
MODES: tuple[str, ...] = get_args(Mode)
ZERO_MAC = "00:00:00:00:00:00"
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


# --- registry content -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """A VTEP takes part in a VNI (flood lists, EVPN type-3 equivalent)."""

    vni: int
    vtep: str  # underlay address of the VTEP
    owner: str  # vtep id of the agent that published it


@dataclass(frozen=True, slots=True)
class Entry:
    """One MAC on one VNI behind one VTEP, with the IPs it answers for."""

    vni: int
    mac: str
    ips: tuple[str, ...]
    vtep: str
    owner: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the live (lease not expired) owners published."""

    revision: int
    members: frozenset[Member] = frozenset()
    entries: frozenset[Entry] = frozenset()


# --- local attachments (store) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Attachment:
    """A local interface (a VM's second tap, a host's VLAN port) in an overlay."""

    interface: str
    network: str  # overlay network name in the host config
    mac: str  # the MAC behind that interface (the VM's), published in the registry
    addresses: tuple[str, ...] = ()
    port: str | None = None  # routed port this attachment belongs to, if any


# --- kernel objects ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VxlanSpec:
    name: str
    vni: int
    local: str | None
    group: str | None = None  # multicast group (mode multicast)
    device: str | None = None  # underlay interface (needed with an IPv6 group)
    port: int = 4789
    ttl: int = 0  # 0: inherit (64); multicast over a routed underlay needs more than 1
    learning: bool = True
    proxy: bool = False
    rsc: bool = False
    l2miss: bool = False
    l3miss: bool = False
    mtu: int | None = None


@dataclass(frozen=True, slots=True)
class BridgeSpec:
    name: str
    mtu: int | None = None


@dataclass(frozen=True, slots=True)
class BridgePort:
    """An interface enslaved to an overlay bridge, with its port flags."""

    interface: str
    bridge: str
    learning: bool = True
    neigh_suppress: bool = False


@dataclass(frozen=True, slots=True)
class Fdb:
    """A remote FDB entry on a VXLAN device (`bridge fdb append MAC dev D dst X`)."""

    device: str
    mac: str
    dst: str
    router: bool = False  # NTF_ROUTER (route short-circuit)
    permanent: bool = True  # False: dynamic (ages out)
    ext_learned: bool = False  # NTF_EXT_LEARNED: written by the miss controller, left alone by the planner


@dataclass(frozen=True, slots=True)
class Neigh:
    """An ARP/ND entry on a VXLAN device (proxy mode answers from these)."""

    device: str
    ip: str
    mac: str
    permanent: bool = True  # False: NUD_REACHABLE (turns STALE: proxy stops answering)
    ext_learned: bool = False  # NTF_EXT_LEARNED: written by the miss controller


@dataclass(frozen=True, slots=True)
class Miss:
    """A kernel miss notification from a VXLAN device."""

    kind: Literal["l2", "l3"]
    ifindex: int
    key: str  # the MAC (l2) or the IP (l3)


@dataclass(frozen=True, slots=True)
class OverlayDesired:
    """What the planner wants in the kernel for all overlay networks."""

    bridges: tuple[BridgeSpec, ...] = ()
    vxlans: tuple[VxlanSpec, ...] = ()
    ports: tuple[BridgePort, ...] = ()
    fdb: frozenset[Fdb] = frozenset()
    neigh: frozenset[Neigh] = frozenset()
    # Devices whose remote entries we own (everything except evpn/multicast
    # learning): the diff removes unplanned permanent entries on these only.
    managed: frozenset[str] = field(default_factory=frozenset)
    # Devices whose ARP/ND entries are all planned (static-nd, rsc): unplanned
    # permanent ones are removed there; elsewhere the controller owns them.
    neigh_managed: frozenset[str] = field(default_factory=frozenset)
