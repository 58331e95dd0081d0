"""The seed-001 lab as data: nodes, fabric segments, addresses, VMs.

Two fabrics (A and B), each a namespace with two bridges: the public and the
private segment. Every hypervisor sits on all four segments; RR1 on fabric A,
RR2 on fabric B; the edge ("internet" router hosting 192.0.2.53 and
2001:db8:ffff::53) on both public segments. Addresses come only from the
documentation/benchmark ranges of DESIGN.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ASN = 65000
INTERNET4 = "192.0.2.53"
INTERNET6 = "2001:db8:ffff::53"
VM_SUBNET = "203.0.113.0/24"
VM_GATEWAY = "203.0.113.254"
VM_PREFIX6 = "2001:db8:cb00:7100::/56"
PRIVATE_FABRIC = "198.18.15.0/24"


@dataclass(frozen=True)
class Segment:
    fabric: str  # "a" / "b"
    kind: str  # "pub" / "priv"
    v4_base: str  # first three octets, e.g. "198.51.100"
    v4_offset: int  # added to a host's number
    v4_len: int
    v6_prefix: str  # e.g. "2001:db8:a::"

    @property
    def ifname(self) -> str:
        """Interface name on the node ("fa-pub"); avoids ip keyword prefixes."""
        return f"f{self.fabric}-{self.kind}"

    @property
    def bridge(self) -> str:
        return "brpub" if self.kind == "pub" else "brpriv"

    def v4(self, host: int) -> str:
        return f"{self.v4_base}.{self.v4_offset + host}"

    def v6(self, host: int) -> str:
        return f"{self.v6_prefix}{host:x}"


SEGMENTS = {
    ("a", "pub"): Segment("a", "pub", "198.51.100", 0, 26, "2001:db8:a::"),
    ("a", "priv"): Segment("a", "priv", "198.18.15", 0, 25, "2001:db8:a1::"),
    ("b", "pub"): Segment("b", "pub", "198.51.100", 64, 26, "2001:db8:b::"),
    ("b", "priv"): Segment("b", "priv", "198.18.15", 128, 25, "2001:db8:b1::"),
}
FABRICS = ("a", "b")


@dataclass(frozen=True)
class Node:
    name: str
    role: str  # hypervisor / route-reflector / edge / vm
    host: int = 0  # host number on each segment it joins
    segments: tuple[tuple[str, str], ...] = ()

    def addr4(self, seg: tuple[str, str]) -> str:
        return SEGMENTS[seg].v4(self.host)

    def addr6(self, seg: tuple[str, str]) -> str:
        return SEGMENTS[seg].v6(self.host)

    @property
    def router_id(self) -> str:
        return self.addr4(self.segments[0])


ANYCAST4 = "203.0.113.10"
ANYCAST6_PREFIX = "2001:db8:cb00:710a::/64"
ANYCAST6 = "2001:db8:cb00:710a::1"
NAT4 = "203.0.113.11"
# Seed 001's "very simple overlay network using VXLAN with unicast" between
# the VMs' second interfaces; the underlay is fabric A's public segment.
OVERLAY = {"name": "ov", "vni": 1001, "mode": "unicast-static-l2"}
OVERLAY_V4 = "198.19.250"  # .N/24 on the VMs' eth1
OVERLAY_V6 = "2001:db8:ee::"  # ::N/64  # seed 001: 203.0.113.11 is NATed to 203.0.113.4


@dataclass(frozen=True)
class Vm:
    name: str  # also the tap name on its hypervisor
    hv: str
    n: int
    anycast: bool = False
    nat: tuple[str, ...] = ()

    @property
    def mac(self) -> str:
        return f"52:54:00:00:00:{self.n:02x}"

    @property
    def ipv4(self) -> str:
        return f"203.0.113.{self.n}"

    @property
    def prefix6(self) -> str:
        return f"2001:db8:cb00:71{self.n:02x}::/64"

    @property
    def ipv6(self) -> str:
        # The SLAAC (EUI-64) address the VM would build from its MAC.
        return f"2001:db8:cb00:71{self.n:02x}:5054:ff:fe00:{self.n:x}"

    # The VM's second interface, on the seed-001 VXLAN overlay.
    @property
    def ov_tap(self) -> str:
        return f"{self.name}-ov"

    @property
    def ov_mac(self) -> str:
        return f"52:54:00:01:00:{self.n:02x}"

    @property
    def ov_ipv4(self) -> str:
        return f"{OVERLAY_V4}.{self.n}"

    @property
    def ov_ipv6(self) -> str:
        return f"{OVERLAY_V6}{self.n:x}"


ALL_SEGMENTS = tuple(SEGMENTS)
HYPERVISORS = tuple(Node(f"hv{i}", "hypervisor", i, ALL_SEGMENTS) for i in (1, 2, 3))
RRS = (
    Node("rr1", "route-reflector", 11, (("a", "pub"), ("a", "priv"))),
    Node("rr2", "route-reflector", 11, (("b", "pub"), ("b", "priv"))),
)
EDGE = Node("edge", "edge", 21, (("a", "pub"), ("b", "pub")))
VMS = (
    Vm("vm1", "hv1", 1, anycast=True),
    Vm("vm2", "hv1", 2),
    Vm("vm3", "hv2", 3, anycast=True),
    Vm("vm4", "hv3", 4, nat=(NAT4,)),
)
ROUTERS = (*HYPERVISORS, *RRS, EDGE)
FABRIC_NODES = tuple(f"fabric-{f}" for f in FABRICS)
NODE_NAMES = (*FABRIC_NODES, *(n.name for n in ROUTERS), *(v.name for v in VMS))


def rr_for(fabric: str) -> Node:
    return RRS[0] if fabric == "a" else RRS[1]


@dataclass
class HostFiles:
    """Where one node's files live inside the lab directory."""

    root: str
    node: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def dir(self) -> str:
        return f"{self.root}/{self.node}"

    @property
    def config(self) -> str:
        return f"{self.dir}/hvrouter.yaml"

    @property
    def state(self) -> str:
        return f"{self.dir}/state"

    @property
    def bird_conf(self) -> str:
        return f"{self.dir}/bird.conf"

    @property
    def bird_sock(self) -> str:
        return f"{self.dir}/bird.ctl"

    @property
    def bird_pid(self) -> str:
        return f"{self.dir}/bird.pid"


DNS = (INTERNET4, INTERNET6)
DOMAIN = "example.net"


def hv_config(node: Node, files: HostFiles) -> dict[str, object]:
    """hvrouter config of a lab hypervisor."""
    peers = []
    for seg in node.segments:
        fabric, kind = seg
        rr = rr_for(fabric)
        peers.append({
            "name": f"{rr.name}_{kind}",
            "address": rr.addr4(seg),
            "local": node.addr4(seg),
            "interface": SEGMENTS[seg].ifname,
            "table": "public" if kind == "pub" else "private",
        })
    return {
        "rtproto": 211,
        "tables": {"public": 90, "private": 20, "local-out": 100},
        "rules": {"priority": 20000, "prefixes": [{"prefix": PRIVATE_FABRIC, "table": "private"}]},
        "networks": [{
            "name": "public",
            "table": "public",
            "ipv4": {"subnet": VM_SUBNET, "gateway": VM_GATEWAY},
            "ipv6": {"mode": "prefix-per-port", "prefix": VM_PREFIX6},
            "services": {"dns": list(DNS), "domain": DOMAIN, "search": [DOMAIN]},
        }],
        "fabric": {"uplinks": [
            {"interface": SEGMENTS[s].ifname, "table": "public" if s[1] == "pub" else "private"}
            for s in node.segments
        ]},
        "bgp": {"asn": ASN, "router_id": node.router_id, "peers": peers},
        "bird": {"role": "hypervisor", "config_path": files.bird_conf, "socket": files.bird_sock,
                 "run": True, "pidfile": files.bird_pid},
        "overlay": {
            "vtep_id": node.name,
            "registry": {"backend": "sqlite", "path": f"{files.root}/registry.sqlite", "lease": 10},
            "networks": [{**OVERLAY, "local": node.addr4(("a", "pub")), "mtu": 1450}],
        },
    }


def rr_config(node: Node, files: HostFiles) -> dict[str, object]:
    clients = []
    for seg in node.segments:
        s = SEGMENTS[seg]
        clients.append({
            "name": f"hv_{s.kind}",
            "range": f"{s.v4_base}.{s.v4_offset}/{s.v4_len}",
            "local": node.addr4(seg),
            "table": "public" if s.kind == "pub" else "private",
            "cluster_id": "0.0.0.1" if s.kind == "pub" else "0.0.0.2",
        })
    return {
        "tables": {"public": 90, "private": 20, "local-out": 100},
        "bgp": {"asn": ASN, "router_id": node.router_id, "clients": clients},
        "bird": {"role": "route-reflector", "config_path": files.bird_conf, "socket": files.bird_sock,
                 "run": True, "pidfile": files.bird_pid},
    }


def edge_config(node: Node, files: HostFiles) -> dict[str, object]:
    peers = []
    for seg in node.segments:
        rr = rr_for(seg[0])
        peers.append({"name": f"{rr.name}_pub", "address": rr.addr4(seg), "local": node.addr4(seg),
                      "interface": SEGMENTS[seg].ifname, "table": "public"})
    return {
        "tables": {"public": 90, "private": 20, "local-out": 100},
        "bgp": {"asn": ASN, "router_id": node.router_id, "peers": peers,
                "announce": ["0.0.0.0/0", f"{INTERNET4}/32", "::/0", f"{INTERNET6}/128"]},
        "bird": {"role": "edge", "config_path": files.bird_conf, "socket": files.bird_sock,
                 "run": True, "pidfile": files.bird_pid},
    }
