"""Desired kernel objects from the host config and the ports. Pure.

The only input from the running system is the list of existing links (a tap
that does not exist yet makes its port *pending*), so this is unit-tested
without root.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

from ..config import RULE_RANGE, Config, NetworkConfig
from ..model import (
    AF_INET,
    AF_INET6,
    DEVCONF_FORWARDING,
    DEVCONF_PROXY_ARP,
    DEVCONF_RP_FILTER,
    RT_SCOPE_LINK,
    RT_SCOPE_UNIVERSE,
    RTN_UNICAST,
    RTN_UNREACHABLE,
    Address,
    DevConf,
    Link,
    ObjectSet,
    Port,
    ProxyNeigh,
    Route,
    Rule,
    Sysctl,
)
from ..ports import eui64_link_local, ip_text, net_text

HOST = "host"
MAIN_TABLE = 254
# IPv6 routes get metric 1024 when none is given; be explicit so that what we
# read back compares equal to what we asked for.
V6_METRIC = 1024
# Lowest possible preference: a default learned from BGP (metric 32 in BIRD)
# always wins, and when none is there lookups stop here instead of leaking to
# the main table.
LAST_RESORT_METRIC = 2**32 - 1
ONLINK = 4  # RTNH_F_ONLINK, see model.Route.flags
SLOT_RULES = 10  # first slot for uplink/prefix rules


@dataclass
class Desired:
    objects: ObjectSet = field(default_factory=ObjectSet)
    # port name -> "ready" or the reason it is not programmed
    port_state: dict[str, str] = field(default_factory=dict)


def host_sysctls() -> list[Sysctl]:
    return [
        Sysctl("net/ipv4/conf/all/forwarding", "1"),
        Sysctl("net/ipv6/conf/all/forwarding", "1"),
        # A multipath route keeps using a next hop whose link is down unless
        # told otherwise: with two fabrics, a cut link must drop out of ECMP
        # at once, before BFD and BGP even notice.
        Sysctl("net/ipv4/conf/all/ignore_routes_with_linkdown", "1"),
        Sysctl("net/ipv6/conf/all/ignore_routes_with_linkdown", "1"),
        # send_redirects is OR-ed between "all" and the device. Writing
        # "default" propagates to every device not set explicitly (and to new
        # ones), so no tap ever sends an ICMP redirect to a VM.
        Sysctl("net/ipv4/conf/all/send_redirects", "0"),
        # ICMP errors (TTL exceeded...) about VM traffic are sent from the
        # address of the interface the packet came in on, not from whatever
        # address the route to the sender would pick.
        Sysctl("net/ipv4/icmp_errors_use_inbound_ifaddr", "1"),
        # A tap that just appeared (a VM started or migrated here) keeps its
        # link-local tentative for ~1 s of duplicate address detection, and
        # until then the host cannot resolve the VM over IPv6 (measured: an
        # 800 ms gap on migration). Optimistic DAD is ignored when forwarding
        # is on (RFC 4429 keeps routers out of it), so new interfaces skip DAD:
        # a tap's link-local comes from its own random MAC, and the uplinks
        # are configured before the agent runs.
        Sysctl("net/ipv6/conf/default/accept_dad", "0"),
        Sysctl("net/ipv4/conf/default/send_redirects", "0"),
        # Proxy NDP answers only for the explicit entries we program (fe80::1
        # on taps, VM addresses on uplinks); "all" avoids one file per tap.
        Sysctl("net/ipv6/conf/all/proxy_ndp", "1"),
    ]


def plan_rules(cfg: Config) -> list[Rule]:
    """The constant rule set, both families. Never depends on ports."""
    base = cfg.rules.priority
    tables = cfg.tables
    default = cfg.rules.default_table
    out: list[Rule] = []
    for fam in (AF_INET, AF_INET6):
        # The host's own traffic (and the next-hop checks the kernel makes with
        # iif lo) may use connected and management routes, not main's default.
        out.append(Rule(fam, base, MAIN_TABLE, iif="lo", suppress_prefixlen=0))
        if cfg.rules.local_out_table:
            out.append(Rule(fam, base + 1, tables[cfg.rules.local_out_table], iif="lo"))
        slot = base + SLOT_RULES
        for up in cfg.fabric.uplinks:
            if up.table != default:
                out.append(Rule(fam, slot, tables[up.table], iif=up.interface))
                slot += 1
        prefixes: list[tuple[IPv4Network | IPv6Network, str]] = [
            (p.prefix, p.table) for p in cfg.rules.prefixes
        ]
        for net in cfg.networks:
            if net.table != default:
                if net.ipv4:
                    prefixes.append((net.ipv4.subnet, net.table))
                if net.ipv6:
                    prefixes.append((net.ipv6.prefix, net.table))
        for pfx, tname in prefixes:
            if (pfx.version == 4) != (fam == AF_INET):
                continue
            out.append(Rule(fam, slot, tables[tname], dst=net_text(pfx)))
            out.append(Rule(fam, slot + 1, tables[tname], src=net_text(pfx)))
            slot += 2
        out.append(Rule(fam, base + RULE_RANGE - 1, tables[default]))
    return out


def routed_tables(cfg: Config) -> list[int]:
    """Tables fed by networks, uplinks or the catch-all rule (not local-out)."""
    names = {cfg.rules.default_table}
    names.update(n.table for n in cfg.networks)
    names.update(u.table for u in cfg.fabric.uplinks)
    names.update(p.table for p in cfg.rules.prefixes)
    names.discard(cfg.rules.local_out_table or "")
    return sorted(cfg.tables[n] for n in names)


def plan_host(cfg: Config, into: ObjectSet) -> None:
    for s in host_sysctls():
        into.add(s, HOST)
    for r in plan_rules(cfg):
        into.add(r, HOST)
    for table in routed_tables(cfg):
        into.add(Route(AF_INET, table, "0.0.0.0/0", LAST_RESORT_METRIC, RTN_UNREACHABLE), HOST)
        into.add(Route(AF_INET6, table, "::/0", LAST_RESORT_METRIC, RTN_UNREACHABLE), HOST)


@dataclass(frozen=True)
class _NetPlan:
    """Per-network constants, computed once per pass rather than per port."""

    table: int
    gw4: str | None
    gw6: str | None
    v6_mode: str
    devconf: tuple[tuple[int, int], ...]
    proxy_uplinks: tuple[int, ...]


def _net_plan(cfg: Config, net: NetworkConfig, links: Mapping[str, Link]) -> _NetPlan:
    return _NetPlan(
        table=cfg.tables[net.table],
        gw4=ip_text(net.ipv4.gateway) if net.ipv4 else None,
        gw6=ip_text(net.ipv6.gateway) if net.ipv6 else None,
        v6_mode=net.ipv6.mode if net.ipv6 else "",
        devconf=(
            (DEVCONF_FORWARDING, 1),
            (DEVCONF_PROXY_ARP, 1),
            (DEVCONF_RP_FILTER, cfg.tap.rp_filter),
        ),
        proxy_uplinks=tuple(
            links[u.interface].index
            for u in cfg.fabric.uplinks
            if u.table == net.table and u.proxy_ndp and u.interface in links
        ),
    )


def plan_port(port: Port, np: _NetPlan, idx: int, into: ObjectSet) -> None:
    table = np.table
    owner = port.name
    add = into.add
    lladdr = eui64_link_local(port.mac)
    add(DevConf(idx, port.name, np.devconf), owner)
    if np.gw4 is not None:
        add(Address(AF_INET, idx, np.gw4, 32, RT_SCOPE_LINK), owner)
        for a in port.ipv4:
            add(Route(AF_INET, table, f"{a}/32", 0, RTN_UNICAST, RT_SCOPE_LINK, idx), owner)
    if np.gw6 is not None:
        # The gateway fe80::1 is answered by proxy NDP on the tap rather than
        # configured as an address: 10k taps each holding fe80::1 cost the
        # kernel 35 s (same-address hash chains), proxy entries 1 s.
        add(ProxyNeigh(AF_INET6, idx, np.gw6, True), owner)
        if np.v6_mode == "prefix-per-port":
            for pfx in port.ipv6:
                add(Route(AF_INET6, table, pfx, V6_METRIC, RTN_UNICAST, RT_SCOPE_UNIVERSE, idx, lladdr, ONLINK), owner)
        else:
            for pfx in port.ipv6:
                add(Route(AF_INET6, table, pfx, V6_METRIC, RTN_UNICAST, RT_SCOPE_UNIVERSE, idx), owner)
                for up in np.proxy_uplinks:
                    add(ProxyNeigh(AF_INET6, up, pfx.partition("/")[0], False), owner)
    # Extra and NAT destinations are routed via the VM's own address (onlink),
    # as the seed does: the VM answers ARP/ND for its primary address, not
    # necessarily for an anycast address it holds on its loopback.
    via4 = port.ipv4[0] if port.ipv4 else ""
    for pfx in (*port.extra, *(f"{a}/{128 if ':' in a else 32}" for a in port.nat)):
        if ":" not in pfx:
            if via4:
                add(Route(AF_INET, table, pfx, 0, RTN_UNICAST, RT_SCOPE_UNIVERSE, idx, via4, ONLINK), owner)
            else:
                add(Route(AF_INET, table, pfx, 0, RTN_UNICAST, RT_SCOPE_LINK, idx), owner)
        else:
            add(Route(AF_INET6, table, pfx, V6_METRIC, RTN_UNICAST, RT_SCOPE_UNIVERSE, idx, lladdr, ONLINK), owner)

def plan(cfg: Config, ports: Iterable[Port], links: Mapping[str, Link]) -> Desired:
    """Everything the kernel should hold for this config and these ports."""
    out = Desired()
    plan_host(cfg, out.objects)
    nets = {n.name: _net_plan(cfg, n, links) for n in cfg.networks}
    for port in ports:
        np = nets.get(port.network)
        if np is None:
            out.port_state[port.name] = f"error: network {port.network!r} is not in the config"
            continue
        link = links.get(port.name)
        if link is None:
            out.port_state[port.name] = "pending: tap missing"
            continue
        if not link.up:
            out.port_state[port.name] = "pending: tap down"
            continue
        plan_port(port, np, link.index, out.objects)
        out.port_state[port.name] = "ready"
    return out
