"""observe -> plan -> diff -> apply, and the words to describe it."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from .config import RULE_RANGE, Config
from .kernel import NetlinkSocket, OpFailure, apply, observe
from .model import (
    AF_INET,
    DEVCONF_NAMES,
    RTN_UNICAST,
    Address,
    DevConf,
    KernelObject,
    Link,
    ObjectSet,
    Op,
    Port,
    ProxyNeigh,
    Route,
    Rule,
    Sysctl,
)
from .plan.desired import host_sysctls, plan
from .plan.diff import diff

RTN_NAMES = {1: "", 6: "blackhole ", 7: "unreachable "}


@dataclass
class Report:
    ops: list[Op]
    failures: list[OpFailure]
    port_state: dict[str, str]
    links: dict[str, Link]
    desired_count: int
    timings: dict[str, float] = field(default_factory=dict)
    applied: bool = False
    # nftables table: whether it differed (and was applied unless dry run)
    firewall_changed: bool = False
    firewall_error: str = ""

    def port_status(self) -> dict[str, dict[str, object]]:
        """programmed / pending / drift / error per port, from this pass."""
        differing = Counter(op.owner for op in self.ops)
        failed = Counter(f.op.owner for f in self.failures)
        out: dict[str, dict[str, object]] = {}
        for name, state in sorted(self.port_state.items()):
            if state != "ready":
                word, _, reason = state.partition(": ")
                out[name] = {"state": word, "detail": reason}
            elif self.applied and failed[name]:
                out[name] = {"state": "error", "detail": f"{failed[name]} object(s) failed"}
            elif not self.applied and differing[name]:
                out[name] = {"state": "drift", "detail": f"{differing[name]} object(s) differ"}
            else:
                out[name] = {"state": "programmed", "detail": ""}
        return out


def describe(obj: KernelObject, names: dict[int, str]) -> str:
    fam = "ipv4" if getattr(obj, "family", AF_INET) == AF_INET else "ipv6"

    def dev(i: int) -> str:
        return names.get(i, f"ifindex {i}")

    if isinstance(obj, Route):
        via = f" via {obj.gateway}" if obj.gateway else ""
        out = f" dev {dev(obj.oif)}" if obj.oif and obj.type == RTN_UNICAST else ""
        return f"{fam} route {RTN_NAMES.get(obj.type, '')}{obj.dst}{via}{out} table {obj.table} metric {obj.metric}"
    if isinstance(obj, Address):
        return f"{fam} address {obj.address}/{obj.prefixlen} dev {dev(obj.ifindex)} scope {obj.scope}"
    if isinstance(obj, Rule):
        sel = " ".join(
            x
            for x in (
                f"iif {obj.iif}" if obj.iif else "",
                f"from {obj.src}" if obj.src else "",
                f"to {obj.dst}" if obj.dst else "",
            )
            if x
        ) or "from all"
        sup = f" suppress_prefixlength {obj.suppress_prefixlen}" if obj.suppress_prefixlen >= 0 else ""
        return f"{fam} rule pref {obj.priority} {sel} lookup {obj.table}{sup}"
    if isinstance(obj, ProxyNeigh):
        return f"{fam} proxy-neigh {obj.address} dev {dev(obj.ifindex)}{' router' if obj.router else ''}"
    if isinstance(obj, DevConf):
        vals = " ".join(f"{DEVCONF_NAMES[k]}={v}" for k, v in obj.values)
        return f"tap settings dev {obj.ifname or dev(obj.ifindex)} ipv4 {vals}, arp/ndp proxy_delay=0"
    if isinstance(obj, Sysctl):
        return f"sysctl {obj.name}={obj.value}"
    return repr(obj)


def describe_op(op: Op, names: dict[int, str]) -> str:
    sign = {"add": "+", "delete": "-", "replace": "~", "set": "="}[op.action]
    return f"{sign} {describe(op.obj, names)}  ({op.owner})"


class Reconciler:
    def __init__(self, cfg: Config, nl: NetlinkSocket | None = None) -> None:
        self.cfg = cfg
        self.nl = nl or NetlinkSocket()

    def observe(self, ports: list[Port]) -> tuple[dict[str, Link], ObjectSet]:
        lo = self.cfg.rules.priority
        return observe(
            self.nl,
            self.cfg.rtproto,
            lo,
            lo + RULE_RANGE - 1,
            [s.name for s in host_sysctls()],
        )

    def run(self, ports: list[Port], dry_run: bool = False) -> Report:
        t0 = time.perf_counter()
        links, seen = self.observe(ports)
        t1 = time.perf_counter()
        desired = plan(self.cfg, ports, links)
        ops = diff(desired.objects, seen)
        t2 = time.perf_counter()
        failures: list[OpFailure] = []
        kinds: dict[str, float] = {}
        if not dry_run and ops:
            failures = apply(self.nl, ops, self.cfg.rtproto, kinds)
        t3 = time.perf_counter()
        fw_changed, fw_error = self._firewall(ports, dry_run)
        t4 = time.perf_counter()
        return Report(
            ops=ops,
            failures=failures,
            port_state=desired.port_state,
            links=links,
            desired_count=len(desired.objects),
            timings={"observe_s": t1 - t0, "plan_s": t2 - t1, "apply_s": t3 - t2, "firewall_s": t4 - t3,
                     "total_s": t4 - t0, **kinds},
            applied=not dry_run,
            firewall_changed=fw_changed,
            firewall_error=fw_error,
        )

    def _firewall(self, ports: list[Port], dry_run: bool) -> tuple[bool, str]:
        """The nftables table is rendered whole and replaced atomically when
        its fingerprint differs; a failure is reported, never fatal for the
        routes."""
        if not self.cfg.firewall.enabled:
            return False, ""
        from .errors import HvrouterError
        from .firewall import sync

        try:
            return sync(self.cfg, ports, dry_run=dry_run), ""
        except (HvrouterError, OSError) as exc:
            return False, str(exc)
