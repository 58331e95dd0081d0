"""Ports and the kernel objects hvrouter plans, reads and applies.

Kernel objects are NamedTuples (cheap to build and hash at 10k ports) holding
normalized values only: prefixes and addresses as compressed strings,
interfaces as ifindex, zero/empty for "absent". Two objects compare equal
exactly when the kernel holds the same thing, which is what lets a restart
change nothing that is already right.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
# Only those the kernel also reports in netconf messages (cheap to read back).
DEVCONF_FORWARDING = 1
DEVCONF_PROXY_ARP = 3
DEVCONF_RP_FILTER = 8
DEVCONF_NAMES = {
    DEVCONF_FORWARDING: "forwarding",
    DEVCONF_PROXY_ARP: "proxy_arp",
    DEVCONF_RP_FILTER: "rp_filter",
}

Kind = Literal["route", "address", "rule", "proxy", "devconf", "sysctl"]
KINDS: tuple[Kind, ...] = ("sysctl", "devconf", "address", "route", "rule", "proxy")
# Kinds we tag and therefore own (and may delete); the others are settings we
# only ever set to the desired value.
OWNED_KINDS: frozenset[Kind] = frozenset({"route", "address", "rule", "proxy"})


@dataclass(frozen=True, slots=True)
class Port:
    """Desired state of one VM port. `name` is also the tap interface name."""

    name: str
    mac: str
    network: str
    # Addresses are stored as normalized text (validated on input): the
    # planner and the kernel codec work on text, and building 30k ipaddress
    # objects on every pass at 10k ports costs more than the pass itself.
    ipv4: tuple[str, ...] = ()  # "203.0.113.1"
    # prefix-per-port networks: the port's prefixes; shared-prefix: /128s.
    ipv6: tuple[str, ...] = ()  # "2001:db8:cb00:7101::/64", "2001:db8::5/128"
    # Extra routed prefixes (anycast, NAT targets...) sent to this port.
    extra: tuple[str, ...] = ()  # "203.0.113.10/32"
    # Public addresses translated (DNAT) to the port's first address of the
    # same family; routed to the port too, so the address is announced and
    # reverse-path checks pass (seed 001's 203.0.113.11 -> 203.0.113.4).
    nat: tuple[str, ...] = ()  # "203.0.113.11"

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "mac": self.mac,
            "network": self.network,
            "ipv4": list(self.ipv4),
            "ipv6": [n.removesuffix("/128") for n in self.ipv6],
            "extra": list(self.extra),
            "nat": list(self.nat),
        }


class Route(NamedTuple):
    family: int
    table: int
    dst: str  # "203.0.113.1/32"
    metric: int
    type: int = RTN_UNICAST
    scope: int = RT_SCOPE_UNIVERSE
    oif: int = 0
    gateway: str = ""
    # RTNH_F_ONLINK only. IPv6 routes via a VM's link-local carry it: BIRD
    # learns them at once instead of waiting for its next kernel scan when it
    # has not seen an address on the new tap yet.
    flags: int = 0

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
    """Per-tap settings: IPv4 devconf values (read back through netconf) and,
    written together with them, proxy_delay=0 for ARP and NDP.

    proxy_delay is not read back on every pass: it lives only in /proc/sys
    per device (20k file reads, 0.32 s per pass at 10k taps). A tap that is
    new or was re-created always has default devconf values, so it always
    gets its proxy_delay written too; only a hand edit of proxy_delay alone
    goes unnoticed."""

    ifindex: int
    ifname: str
    values: tuple[tuple[int, int], ...]  # sorted (DEVCONF id, value)

    def key(self) -> tuple[object, ...]:
        return ("devconf", self.ifindex)


class Sysctl(NamedTuple):
    """A /proc/sys setting, by path relative to /proc/sys (interface names may
    contain dots, so no dotted form)."""

    name: str  # "net/ipv6/conf/all/forwarding"
    value: str

    def key(self) -> tuple[object, ...]:
        return ("sysctl", self.name)


KernelObject = Route | Address | Rule | ProxyNeigh | DevConf | Sysctl


def kind_of(obj: KernelObject) -> Kind:
    return obj.key()[0]  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Link:
    """What the planner needs to know about an existing interface."""

    index: int
    name: str
    up: bool


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
