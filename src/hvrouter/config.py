"""Host configuration: YAML validated into frozen pydantic models.

Two passes, both reporting every problem at once:
1. structure and types (pydantic), with extra keys forbidden so typos show;
2. cross references (tables named by networks and uplinks exist, gateways sit
   in their subnet, names are unique...).
"""

from __future__ import annotations

import ipaddress
import re
from functools import cached_property
from importlib import resources
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InputError, Problem
from .overlay.types import Mode

NAME_RE = r"^[a-z][a-z0-9-]{0,30}$"
IFNAME_RE = r"^[A-Za-z0-9_.:@+-]{1,15}$"
# Kernel table ids that are not ours to hand out: unspec, compat, default, main, local.
RESERVED_TABLES = {0, 252, 253, 254, 255}
RULE_RANGE = 100  # size of our reserved priority range


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class IPv4Config(_Model):
    subnet: IPv4Network = Field(description="subnet the VMs believe they share")
    gateway: IPv4Address = Field(description="gateway address the VMs see")


class IPv6Config(_Model):
    mode: Literal["prefix-per-port", "shared-prefix"]
    prefix: IPv6Network = Field(
        description="prefix-per-port: the block each port's prefix comes from; "
        "shared-prefix: the /64 every VM shares"
    )
    gateway: IPv6Address = IPv6Address("fe80::1")
    port_prefix_len: int = Field(64, ge=48, le=128)


class ServicesConfig(_Model):
    """What the built-in DHCPv4 / RA / DHCPv6 responder tells the VMs."""

    enabled: bool = True
    dns: tuple[IPv4Address | IPv6Address, ...] = ()
    domain: str | None = Field(None, pattern=r"^[A-Za-z0-9.-]{1,253}$")
    search: tuple[str, ...] = ()
    lease_time: int = Field(86400, ge=60, le=2**31 - 1, description="seconds; long: the address never changes")
    mtu: int | None = Field(None, ge=1280, le=65535)
    ra_interval: int = Field(60, ge=4, le=1800, description="max seconds between periodic RAs")
    router_lifetime: int = Field(1800, ge=0, le=9000)
    dhcpv6: bool = Field(True, description="stateless info (O flag); stateful IA_NA on shared-prefix networks")


class NetworkConfig(_Model):
    name: str = Field(pattern=NAME_RE)
    table: str
    ipv4: IPv4Config | None = None
    ipv6: IPv6Config | None = None
    services: ServicesConfig = ServicesConfig()


class UplinkConfig(_Model):
    interface: str = Field(pattern=IFNAME_RE)
    table: str
    proxy_ndp: bool = Field(
        True, description="answer NDP for VM addresses of shared-prefix networks of this table"
    )


class FabricConfig(_Model):
    uplinks: tuple[UplinkConfig, ...] = ()


class PrefixRule(_Model):
    prefix: IPv4Network | IPv6Network
    table: str


class RulesConfig(_Model):
    priority: int = Field(20000, ge=1, le=32665 - RULE_RANGE)
    default_table: str = "public"
    local_out_table: str | None = "local-out"
    prefixes: tuple[PrefixRule, ...] = ()


class TapConfig(_Model):
    rp_filter: Literal[0, 1, 2] = 1


PROTO_NAME_RE = r"^[a-z][a-z0-9_]{0,30}$"
IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


class BfdConfig(_Model):
    interval_ms: int = Field(100, ge=10, le=10000, description="BFD tx/rx interval")
    multiplier: int = Field(3, ge=1, le=255)


class BgpPeer(_Model):
    """A route reflector (hypervisor/edge roles): one MP-BGP session,
    IPv4 and IPv6 channels, over one fabric segment."""

    name: str = Field(pattern=PROTO_NAME_RE, description="BIRD protocol name")
    address: IPAddress
    local: IPAddress = Field(description="our address on that segment (source)")
    interface: str = Field(pattern=IFNAME_RE)
    table: str = Field(description="the hvrouter table this session carries (public/private)")


class BgpClients(_Model):
    """Route-reflector role: accept clients from a range (dynamic BGP), so
    the RR config does not grow with the number of hypervisors."""

    name: str = Field(pattern=PROTO_NAME_RE)
    range: IPNetwork
    local: IPAddress
    table: str
    cluster_id: IPv4Address


class BgpConfig(_Model):
    asn: int = Field(65000, ge=1, le=4294967294)
    router_id: IPv4Address
    bfd: BfdConfig | None = BfdConfig()
    graceful_restart: bool = False
    peers: tuple[BgpPeer, ...] = ()
    clients: tuple[BgpClients, ...] = ()
    announce: tuple[IPNetwork, ...] = Field((), description="edge role: prefixes to originate")


class BirdConfig(_Model):
    role: Literal["hypervisor", "route-reflector", "edge"] = "hypervisor"
    config_path: Path = Path("/etc/bird/bird.conf")
    socket: Path = Path("/run/bird/bird.ctl")
    run: bool = Field(False, description="start and supervise bird ourselves (lab); else the bird2 service")
    pidfile: Path | None = None


class FirewallConfig(_Model):
    enabled: bool = Field(True, description="the safety table `inet hvrouter` (forwarding, RPF, BGP/BFD, NAT)")


OverlayMode = Mode  # the seed-002 variants, listed once in overlay/types.py
MAC_RE = r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$"


class OverlayNetworkConfig(_Model):
    """One VXLAN segment (seed 002): a VNI, a bridge, and how remote entries get in."""

    name: str = Field(pattern=NAME_RE)
    vni: int = Field(ge=1, le=2**24 - 1)
    mode: OverlayMode
    local: IPv4Address | IPv6Address = Field(description="this VTEP's underlay address")
    group: IPv4Address | IPv6Address | None = Field(None, description="multicast mode: the BUM group")
    device: str | None = Field(None, pattern=IFNAME_RE, description="underlay interface (multicast mode)")
    mtu: int = Field(1450, ge=1280, le=9000)
    bridge: str | None = Field(None, pattern=IFNAME_RE, description="default ovb<vni>")
    vxlan: str | None = Field(None, pattern=IFNAME_RE, description="default ovx<vni>")
    port: int = Field(4789, ge=1, le=65535)
    ttl: int = Field(64, ge=1, le=255)
    router_mac: str | None = Field(
        None, pattern=MAC_RE, description="unicast-rsc: the (absent) router's MAC, flagged `router` in the FDB"
    )

    @property
    def bridge_name(self) -> str:
        return self.bridge or f"ovb{self.vni}"

    @property
    def vxlan_name(self) -> str:
        return self.vxlan or f"ovx{self.vni}"


class RegistryConfig(_Model):
    backend: Literal["sqlite", "etcd"] = "sqlite"
    path: Path = Field(Path("/var/lib/hvrouter/registry.sqlite"), description="sqlite: the shared file")
    endpoints: tuple[str, ...] = Field(("http://127.0.0.1:2379",), description="etcd: client URLs")
    prefix: str = Field("/hvrouter/overlay/", pattern=r"^/[A-Za-z0-9/_.-]*/$")
    lease: int = Field(10, ge=2, le=3600, description="seconds an agent's entries outlive it")


class MissConfig(_Model):
    rate: int = Field(20000, ge=10, le=10**7, description="misses handled per second at most; the rest dropped")
    negative_ttl: float = Field(5.0, ge=0.1, le=3600, description="seconds an unknown address is not looked up again")


class EvpnConfig(_Model):
    asn: int = Field(65000, ge=1, le=2**32 - 1)
    router_id: IPv4Address
    peers: tuple[IPv4Address | IPv6Address, ...] = Field((), description="route reflectors")
    run: bool = Field(True, description="start and supervise FRR (bgpd + zebra) ourselves")
    directory: Path = Field(Path("/run/hvrouter/frr"), description="FRR config, sockets and pid files")


class OverlayConfig(_Model):
    vtep_id: str | None = Field(None, pattern=NAME_RE, description="owner name in the registry; default hostname")
    registry: RegistryConfig = RegistryConfig()
    miss: MissConfig = MissConfig()
    evpn: EvpnConfig | None = None
    networks: tuple[OverlayNetworkConfig, ...] = ()


class Config(_Model):
    rtproto: int = Field(211, ge=5, le=254)
    tables: dict[str, int] = Field(
        default_factory=lambda: {"public": 90, "private": 20, "local-out": 100}
    )
    rules: RulesConfig = RulesConfig()
    networks: tuple[NetworkConfig, ...] = ()
    fabric: FabricConfig = FabricConfig()
    tap: TapConfig = TapConfig()
    bgp: BgpConfig | None = None
    bird: BirdConfig = BirdConfig()
    firewall: FirewallConfig = FirewallConfig()
    overlay: OverlayConfig = OverlayConfig()

    @cached_property
    def network_by_name(self) -> dict[str, NetworkConfig]:
        return {n.name: n for n in self.networks}

    def table_id(self, name: str) -> int:
        return self.tables[name]


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _expected_from_pydantic(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    msg = str(err.get("msg", ""))
    if kind == "extra_forbidden":
        return "no such field (check the spelling)"
    if kind == "missing":
        return "this field to be present"
    if kind == "literal_error":
        return msg.replace("Input should be ", "one of ")
    if kind == "string_pattern_mismatch":
        return msg.replace("String should match pattern", "a name matching")
    return msg[0].lower() + msg[1:] if msg else kind


def _semantic_problems(cfg: Config) -> list[Problem]:
    problems: list[Problem] = []
    tables = cfg.tables

    def need_table(where: str, name: str | None) -> None:
        if name is not None and name not in tables:
            problems.append(Problem(where, name, f"one of the tables {sorted(tables)}"))

    seen_ids: dict[int, str] = {}
    for name, tid in tables.items():
        if not re.match(NAME_RE, name):
            problems.append(Problem(f"tables.{name}", name, "a name matching " + NAME_RE))
        if tid in RESERVED_TABLES or not 1 <= tid < 2**32:
            problems.append(
                Problem(f"tables.{name}", tid, "a table id in 1..2^32-1 other than 252-255")
            )
        elif tid in seen_ids:
            problems.append(
                Problem(f"tables.{name}", tid, f"an id not already used by table {seen_ids[tid]}")
            )
        seen_ids.setdefault(tid, name)

    need_table("rules.default_table", cfg.rules.default_table)
    need_table("rules.local_out_table", cfg.rules.local_out_table)
    for i, pr in enumerate(cfg.rules.prefixes):
        need_table(f"rules.prefixes[{i}].table", pr.table)

    names: set[str] = set()
    for i, net in enumerate(cfg.networks):
        where = f"networks[{i}]"
        if net.name in names:
            problems.append(Problem(f"{where}.name", net.name, "a network name used only once"))
        names.add(net.name)
        need_table(f"{where}.table", net.table)
        if net.ipv4 is None and net.ipv6 is None:
            problems.append(Problem(where, net.name, "at least one of ipv4 / ipv6"))
        if net.ipv4 is not None:
            v4 = net.ipv4
            if v4.gateway not in v4.subnet:
                problems.append(
                    Problem(f"{where}.ipv4.gateway", str(v4.gateway), f"an address in {v4.subnet}")
                )
        if net.ipv6 is not None:
            v6 = net.ipv6
            if not v6.gateway.is_link_local:
                problems.append(
                    Problem(f"{where}.ipv6.gateway", str(v6.gateway), "a link-local address (fe80::/10)")
                )
            if v6.mode == "shared-prefix" and v6.prefix.prefixlen > 64:
                problems.append(
                    Problem(f"{where}.ipv6.prefix", str(v6.prefix), "a prefix of length /64 or shorter")
                )
            if v6.mode == "prefix-per-port" and v6.port_prefix_len < v6.prefix.prefixlen:
                problems.append(
                    Problem(
                        f"{where}.ipv6.port_prefix_len",
                        v6.port_prefix_len,
                        f"a length >= /{v6.prefix.prefixlen} (the network prefix)",
                    )
                )
    # Two networks routed in one table must not overlap: a host route would be
    # ambiguous about which network's gateway/mode applies.
    by_table: dict[str, list[tuple[str, IPv4Network | IPv6Network]]] = {}
    for net in cfg.networks:
        for pfx in (net.ipv4.subnet if net.ipv4 else None, net.ipv6.prefix if net.ipv6 else None):
            if pfx is not None:
                by_table.setdefault(net.table, []).append((net.name, pfx))
    for entries in by_table.values():
        for a in range(len(entries)):
            for b in range(a + 1, len(entries)):
                (na, pa), (nb, pb) = entries[a], entries[b]
                if pa.version == pb.version and pa.overlaps(pb):  # type: ignore[arg-type]
                    problems.append(
                        Problem(f"networks.{nb}", str(pb), f"a prefix not overlapping {na} ({pa})")
                    )

    ifnames: set[str] = set()
    for i, up in enumerate(cfg.fabric.uplinks):
        need_table(f"fabric.uplinks[{i}].table", up.table)
        if up.interface in ifnames:
            problems.append(
                Problem(f"fabric.uplinks[{i}].interface", up.interface, "an interface listed once")
            )
        ifnames.add(up.interface)
    if cfg.bgp is not None:
        bgp = cfg.bgp
        if bgp.graceful_restart and bgp.bfd is not None:
            problems.append(
                Problem(
                    "bgp.graceful_restart",
                    True,
                    "false while bfd is on (BIRD runs BFD in the BGP process: a restart drops BFD too and "
                    "peers flush the routes anyway; set bfd: null to use graceful restart)",
                )
            )
        names: set[str] = set()
        for kind, items in (("peers", bgp.peers), ("clients", bgp.clients)):
            for i, item in enumerate(items):
                need_table(f"bgp.{kind}[{i}].table", item.table)
                if item.name in names:
                    problems.append(Problem(f"bgp.{kind}[{i}].name", item.name, "a session name used once"))
                names.add(item.name)
        for i, peer in enumerate(bgp.peers):
            if peer.address.version != peer.local.version:
                problems.append(Problem(f"bgp.peers[{i}].local", str(peer.local), f"an IPv{peer.address.version} address"))
        for i, cl in enumerate(bgp.clients):
            if cl.range.version != cl.local.version:
                problems.append(Problem(f"bgp.clients[{i}].local", str(cl.local), f"an IPv{cl.range.version} address"))
        role = cfg.bird.role
        if role in ("hypervisor", "edge") and not bgp.peers:
            problems.append(Problem("bgp.peers", [], f"at least one route reflector for role {role}"))
        if role == "route-reflector" and not bgp.clients:
            problems.append(Problem("bgp.clients", [], "at least one client range for role route-reflector"))
    elif cfg.bird.run:
        problems.append(Problem("bgp", None, "a bgp section when bird.run is true"))
    problems += _overlay_problems(cfg.overlay)
    for fam in (4, 6):
        n_uplinks = sum(1 for u in cfg.fabric.uplinks if u.table != cfg.rules.default_table)
        n_prefixes = sum(1 for p in cfg.rules.prefixes if p.prefix.version == fam) + sum(
            1
            for net in cfg.networks
            if net.table != cfg.rules.default_table and (net.ipv4 if fam == 4 else net.ipv6)
        )
        if n_uplinks + 2 * n_prefixes > RULE_RANGE - 11:
            problems.append(
                Problem(
                    "rules",
                    f"{n_uplinks} uplink rules + {2 * n_prefixes} prefix rules (IPv{fam})",
                    f"at most {RULE_RANGE - 11} rules in the reserved range",
                )
            )
    return problems


def _overlay_problems(ov: OverlayConfig) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, set[object]] = {"name": set(), "vni": set(), "bridge": set(), "vxlan": set()}
    for i, net in enumerate(ov.networks):
        where = f"overlay.networks[{i}]"
        for key, value in (("name", net.name), ("vni", net.vni), ("bridge", net.bridge_name), ("vxlan", net.vxlan_name)):
            if value in seen[key]:
                problems.append(Problem(f"{where}.{key}", value, f"a {key} used by one overlay network only"))
            seen[key].add(value)
        if net.mode == "multicast":
            if net.group is None:
                problems.append(Problem(f"{where}.group", None, "a multicast group (mode multicast)"))
            elif not net.group.is_multicast or net.group.version != net.local.version:
                problems.append(Problem(f"{where}.group", str(net.group), f"an IPv{net.local.version} multicast address"))
            if net.device is None and net.local.version == 6:
                problems.append(Problem(f"{where}.device", None, "the underlay interface (an IPv6 group needs one)"))
        elif net.group is not None:
            problems.append(Problem(f"{where}.group", str(net.group), "no group outside mode multicast"))
        if net.mode == "unicast-rsc" and net.router_mac is None:
            problems.append(Problem(f"{where}.router_mac", None, "the router MAC the hosts send to (mode unicast-rsc)"))
        if net.mode == "evpn":
            if ov.evpn is None:
                problems.append(Problem("overlay.evpn", None, "an evpn section (a network uses mode evpn)"))
            if net.local.version != 4:
                problems.append(
                    Problem(f"{where}.local", str(net.local), "an IPv4 underlay address (FRR 8.4 EVPN has IPv4 VTEPs only)")
                )
    return problems


def parse_config(data: object, source: str = "config") -> Config:
    """Validate a decoded YAML document; raise InputError listing every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(source, [Problem("(top level)", type(data).__name__, "a mapping")])
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        problems = [
            Problem(_loc(tuple(e["loc"])), e.get("input"), _expected_from_pydantic(dict(e))) for e in errors
        ]
        # A misspelt key should not hide the other mistakes: without the
        # unknown keys the rest may still validate, and be cross-checked.
        if all(e["type"] == "extra_forbidden" for e in errors):
            pruned = _without(data, [tuple(e["loc"]) for e in errors])
            try:
                problems += _semantic_problems(Config.model_validate(pruned))
            except ValidationError:
                pass
        raise InputError(source, problems) from None
    problems = _semantic_problems(cfg)
    if problems:
        raise InputError(source, problems)
    return cfg


def _without(data: object, locs: list[tuple[int | str, ...]]) -> object:
    """A deep copy of `data` without the entries at `locs`."""
    import copy

    out = copy.deepcopy(data)
    for loc in locs:
        node: Any = out
        for part in loc[:-1]:
            node = node[part]
        if isinstance(node, dict):
            node.pop(loc[-1], None)
    return out


def load_config(path: Path) -> Config:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(
            f"config {path}", [Problem("file", str(path), "an existing YAML file (see `hvrouter config example`)")]
        ) from None
    except OSError as exc:
        raise InputError(f"config {path}", [Problem("file", str(path), f"a readable file ({exc.strerror})")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "document"
        raise InputError(f"config {path}", [Problem(where, getattr(exc, "problem", str(exc)), "valid YAML")]) from None
    return parse_config(data, f"config {path}")


def example_text() -> str:
    return resources.files("hvrouter").joinpath("data/example.yaml").read_text()


def network_of(cfg: Config, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    for net in cfg.networks:
        if isinstance(address, IPv4Address) and net.ipv4 and address in net.ipv4.subnet:
            return net.name
        if isinstance(address, IPv6Address) and net.ipv6 and address in net.ipv6.prefix:
            return net.name
    return None
