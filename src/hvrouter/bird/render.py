"""BIRD 2 configuration from the host configuration, through Jinja2 templates.

The renderer sees the Config and nothing else (never the ports): the BIRD
configuration of a hypervisor is the same with 1 or 10k VMs, so adding a VM
never reloads BIRD. All decisions that need Python (which tables exist, their
BIRD names, which role needs what) are made here; the templates only lay out
the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import BgpConfig, Config
from ..errors import InputError, Problem
from ..templating import environment

ROLES = ("hypervisor", "route-reflector", "edge")
MAIN_TABLE = 254
# Local routes must beat BGP copies of the same prefix (anycast, a VM that
# just moved here): BGP's 100 would otherwise win, the kernel protocol would
# export the remote copy over our route and BGP would withdraw our own
# announcement (only the best route is exported without add-path tx).
KERNEL_PREFERENCE = 250


@dataclass(frozen=True)
class Family:
    version: int
    channel: str  # BIRD channel / net type keyword
    default: str  # the default route of the family


FAMILIES = (Family(4, "ipv4", "0.0.0.0/0"), Family(6, "ipv6", "::/0"))


def bird_table(name: str, version: int) -> str:
    """BIRD table name of hvrouter table `name` for IP `version`.

    BIRD tables hold one net type each, and `public` is a reserved word in
    BIRD's configuration language, hence a prefix and a family suffix:
    local-out -> t_local_out4 / t_local_out6.
    """
    return f"t_{name.replace('-', '_')}{version}"


@dataclass(frozen=True)
class Table:
    name: str  # hvrouter table name
    kernel_id: int

    @property
    def ident(self) -> str:
        """The name as a BIRD identifier fragment (protocol names)."""
        return self.name.replace("-", "_")

    @property
    def bird(self) -> dict[int, str]:
        return {f.version: bird_table(self.name, f.version) for f in FAMILIES}


@dataclass(frozen=True)
class Session:
    """One MP-BGP session to a route reflector (hypervisor and edge roles)."""

    name: str
    address: str
    local: str
    interface: str
    table: Table


@dataclass(frozen=True)
class Clients:
    """A dynamic BGP protocol accepting every client of a range (RR role)."""

    name: str
    range: str
    local: str
    table: Table
    cluster_id: str


@dataclass(frozen=True)
class Pipe:
    name: str
    src: str  # BIRD table
    dst: str
    default: str | None  # the default route to keep out, if any


@dataclass(frozen=True)
class Static:
    name: str
    family: Family
    table: str
    prefixes: tuple[str, ...]


def render(cfg: Config, role: str | None = None) -> str:
    """The BIRD configuration of `role` (default: cfg.bird.role) for this host.

    Raises InputError listing every reason the config cannot be rendered.
    """
    role = role or cfg.bird.role
    context = _context(cfg, role)
    return environment("hvrouter.bird").get_template(f"{role}.conf.j2").render(context)


def _context(cfg: Config, role: str) -> dict[str, Any]:
    where = f"bird config (role {role})"
    problems: list[Problem] = []
    if role not in ROLES:
        raise InputError(where, [Problem("role", role, f"one of {', '.join(ROLES)}")])
    bgp = cfg.bgp
    if bgp is None:
        raise InputError(where, [Problem("bgp", None, "a bgp section (asn, router_id, peers or clients)")])
    if role in ("hypervisor", "edge") and not bgp.peers:
        problems.append(Problem("bgp.peers", [], f"at least one route reflector for role {role}"))
    if role == "route-reflector" and not bgp.clients:
        problems.append(Problem("bgp.clients", [], "at least one client range for role route-reflector"))
    if role == "edge" and not bgp.announce:
        problems.append(Problem("bgp.announce", [], "at least one prefix for the edge to originate"))

    def table(name: str) -> Table:
        return Table(name, cfg.tables[name])

    sessions = [Session(p.name, str(p.address), str(p.local), p.interface, table(p.table)) for p in bgp.peers]
    clients = [
        Clients(c.name, str(c.range), str(c.local), table(c.table), str(c.cluster_id)) for c in bgp.clients
    ]
    context: dict[str, Any] = {
        "role": role,
        "asn": bgp.asn,
        "router_id": str(bgp.router_id),
        "bfd": bgp.bfd,
        "graceful_restart": bgp.graceful_restart,
        "rtproto": cfg.rtproto,
        "families": FAMILIES,
        "sessions": sessions,
        "clients": clients,
        "kernel_tables": [],
        "local_out": None,
        "pipes": [],
        "statics": [],
        "main_table": MAIN_TABLE,
        "kernel_preference": KERNEL_PREFERENCE,
    }
    parts = {"hypervisor": _hypervisor_parts, "route-reflector": _reflector_parts, "edge": _edge_parts}[role]
    names = parts(cfg, bgp, context)
    # Declared in name order: the output must not depend on dict order.
    context["tables"] = [table(n) for n in sorted(names)]
    problems += _name_clashes(context)
    if problems:
        raise InputError(where, problems)
    return context


def _hypervisor_parts(cfg: Config, bgp: BgpConfig, context: dict[str, Any]) -> set[str]:
    """Kernel protocols per synced table, and local-out built from them."""
    names = _synced_tables(cfg)
    kernel_tables = [Table(n, cfg.tables[n]) for n in sorted(names)]
    context["kernel_tables"] = kernel_tables
    if cfg.rules.local_out_table is not None:
        lo = Table(cfg.rules.local_out_table, cfg.tables[cfg.rules.local_out_table])
        context["local_out"] = lo
        context["pipes"] = [
            Pipe(
                f"p_{t.ident}_{lo.ident}{f.version}",
                t.bird[f.version],
                lo.bird[f.version],
                # The hypervisor itself must not use the public default
                # (seed: avoid contacting arbitrary hosts over public).
                f.default if t.name == cfg.rules.default_table else None,
            )
            for t in kernel_tables
            for f in FAMILIES
        ]
        names.add(lo.name)
    return names


def _reflector_parts(cfg: Config, bgp: BgpConfig, context: dict[str, Any]) -> set[str]:
    return {c.table for c in bgp.clients}


def _edge_parts(cfg: Config, bgp: BgpConfig, context: dict[str, Any]) -> set[str]:
    """Static routes to announce in every peer table; BGP routes to main."""
    names = {p.table for p in bgp.peers}
    tables = [Table(n, cfg.tables[n]) for n in sorted(names)]
    context["statics"] = [
        Static(f"s_{t.ident}{f.version}", f, t.bird[f.version], prefixes)
        for t in tables
        for f in FAMILIES
        if (prefixes := tuple(str(p) for p in bgp.announce if p.version == f.version))
    ]
    context["pipes"] = [
        Pipe(f"p_{t.ident}_main{f.version}", t.bird[f.version], f"master{f.version}", None)
        for t in tables
        for f in FAMILIES
    ]
    return names


def _synced_tables(cfg: Config) -> set[str]:
    """Hypervisor tables BIRD learns our routes from and installs BGP routes in:
    every table a network, an uplink, a rule or a BGP session uses, except
    local-out (built from the others)."""
    names = {cfg.rules.default_table}
    names.update(n.table for n in cfg.networks)
    names.update(u.table for u in cfg.fabric.uplinks)
    names.update(p.table for p in cfg.rules.prefixes)
    if cfg.bgp is not None:
        names.update(p.table for p in cfg.bgp.peers)
    names.discard(cfg.rules.local_out_table or "")
    return names


def _name_clashes(context: dict[str, Any]) -> list[Problem]:
    """BGP protocol names share BIRD's namespace with the ones we generate."""
    generated = {p.name for p in context["pipes"]} | {s.name for s in context["statics"]}
    for t in context["tables"]:
        generated.update(t.bird.values())
        generated.update(f"k_{t.ident}{f.version}" for f in FAMILIES)
    generated.update({"k_main4", "k_main6", "master4", "master6"})
    problems = []
    for kind, items in (("peers", context["sessions"]), ("clients", context["clients"])):
        for i, item in enumerate(items):
            if item.name in generated:
                problems.append(Problem(f"bgp.{kind}[{i}].name", item.name, "a name hvrouter does not generate itself"))
    return problems
