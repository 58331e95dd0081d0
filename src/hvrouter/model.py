"""Ports and the kernel objects hvrouter plans, reads and applies.

Kernel objects are NamedTuples (cheap to build and hash at 10k ports) holding
normalized values only: prefixes and addresses as compressed strings,
interfaces as ifindex, zero/empty for "absent". Two objects compare equal
exactly when the kernel holds the same thing, which is what lets a restart
change nothing that is already right.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from typing import Literal, NamedTuple

AF_INET = 2
AF_INET6 = 10

RTN_UNICAST = 1
RTN_BLACKHOLE = 6
RTN_UNREACHABLE = 7

RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254

# IPv4 per-device configuration ids (include/uapi/linux/ip.h, IPV4_DEVCONF_*).
DEVCONF_FORWARDING = 1
DEVCONF_PROXY_ARP = 3
DEVCONF_SEND_REDIRECTS = 6
DEVCONF_RP_FILTER = 8
DEVCONF_NAMES = {
    DEVCONF_FORWARDING: "forwarding",
    DEVCONF_PROXY_ARP: "proxy_arp",
    DEVCONF_SEND_REDIRECTS: "send_redirects",
    DEVCONF_RP_FILTER: "rp_filter",
}

Kind = Literal["route", "address", "rule", "proxy", "devconf", "neighparms", "sysctl"]
KINDS: tuple[Kind, ...] = ("sysctl", "devconf", "neighparms", "address", "route", "rule", "proxy")
# Kinds we tag and therefore own (and may delete); the others are settings we
# only ever set to the desired value.
OWNED_KINDS: frozenset[Kind] = frozenset({"route", "address", "rule", "proxy"})


@dataclass(frozen=True, slots=True)
class Port:
    """Desired state of one VM port. `name` is also the tap interface name."""

    name: str
    mac: str
    network: str
    ipv4: tuple[IPv4Address, ...] = ()
    # prefix-per-port networks: the port's prefixes; shared-prefix: /128s.
    ipv6: tuple[IPv6Network, ...] = ()
    # Extra routed addresses (anycast, NAT targets...) sent to this port.
    extra: tuple[IPv4Network | IPv6Network, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "mac": self.mac,
            "network": self.network,
            "ipv4": [str(a) for a in self.ipv4],
            "ipv6": [_v6_text(n) for n in self.ipv6],
            "extra": [str(n) for n in self.extra],
        }


def _v6_text(net: IPv6Network) -> str:
    return str(net.network_address) if net.prefixlen == 128 else str(net)


class Route(NamedTuple):
    family: int
    table: int
    dst: str  # "203.0.113.1/32"
    metric: int
    type: int = RTN_UNICAST
    scope: int = RT_SCOPE_UNIVERSE
    oif: int = 0
    gateway: str = ""

    def key(self) -> tuple[object, ...]:
        return ("route", self.family, self.table, self.dst, self.metric)


class Address(NamedTuple):
    family: int
    ifindex: int
    address: str
    prefixlen: int
    scope: int

    def key(self) -> tuple[object, ...]:
        return ("address", self.family, self.ifindex, self.address, self.prefixlen)


class Rule(NamedTuple):
    family: int
    priority: int
    table: int
    iif: str = ""
    src: str = ""  # "198.18.15.0/24" or ""
    dst: str = ""
    suppress_prefixlen: int = -1

    def key(self) -> tuple[object, ...]:
        return ("rule", *self)


class ProxyNeigh(NamedTuple):
    family: int
    ifindex: int
    address: str
    router: bool

    def key(self) -> tuple[object, ...]:
        return ("proxy", self.family, self.ifindex, self.address)


class DevConf(NamedTuple):
    """The IPv4 per-device settings we manage on one interface."""

    ifindex: int
    values: tuple[tuple[int, int], ...]  # sorted (DEVCONF id, value)

    def key(self) -> tuple[object, ...]:
        return ("devconf", self.ifindex)


class NeighParms(NamedTuple):
    family: int
    ifindex: int
    proxy_delay_ms: int

    def key(self) -> tuple[object, ...]:
        return ("neighparms", self.family, self.ifindex)


class Sysctl(NamedTuple):
    """A host-level /proc/sys setting (relative path, dotted form)."""

    name: str  # "net.ipv6.conf.all.forwarding"
    value: str

    def key(self) -> tuple[object, ...]:
        return ("sysctl", self.name)


KernelObject = Route | Address | Rule | ProxyNeigh | DevConf | NeighParms | Sysctl


def kind_of(obj: KernelObject) -> Kind:
    return obj.key()[0]  # type: ignore[return-value]


class Link(NamedTuple):
    """What the planner needs to know about an existing interface."""

    index: int
    name: str
    up: bool
    mac: str


@dataclass
class ObjectSet:
    """Kernel objects by key, with the name of what wants each one."""

    objects: dict[tuple[object, ...], KernelObject] = field(default_factory=dict)
    owners: dict[tuple[object, ...], str] = field(default_factory=dict)

    def add(self, obj: KernelObject, owner: str) -> None:
        key = obj.key()
        self.objects[key] = obj
        self.owners[key] = owner

    def __len__(self) -> int:
        return len(self.objects)

    def count(self, kind: Kind) -> int:
        return sum(1 for k in self.objects if k[0] == kind)


@dataclass(frozen=True, slots=True)
class Op:
    action: Literal["add", "replace", "delete", "set"]
    obj: KernelObject
    owner: str
    old: KernelObject | None = None

    @property
    def kind(self) -> Kind:
        return kind_of(self.obj)
