"""`hvrouter` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import Config, example_text, load_config
from .errors import HvrouterError, InputError, Problem
from .model import Port
from .overlay.types import MODES
from .ports import parse_port
from .store import Store

DEFAULT_CONFIG = "/etc/hvrouter/hvrouter.yaml"
DEFAULT_STATE = "/var/lib/hvrouter"


def _config(args: argparse.Namespace) -> Config:
    return load_config(Path(args.config))


def _store(args: argparse.Namespace) -> Store:
    return Store(Path(args.state_dir))


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


# -- config -------------------------------------------------------------------

def cmd_config_check(args: argparse.Namespace) -> int:
    cfg = _config(args)
    print(f"config {args.config}: ok ({len(cfg.networks)} network(s), {len(cfg.fabric.uplinks)} uplink(s))")
    return 0


def cmd_config_example(args: argparse.Namespace) -> int:
    sys.stdout.write(example_text())
    return 0


# -- ports ----------------------------------------------------------------------

def cmd_port_add(args: argparse.Namespace) -> int:
    cfg = _config(args)
    data: dict[str, Any] = {
        "name": args.name,
        "mac": args.mac,
        "network": args.network,
        "ipv4": args.ipv4 or [],
        "ipv6": args.ipv6 or [],
        "extra": args.extra or [],
        "nat": args.nat or [],
    }
    port, problems = parse_port(data, cfg)
    if port is None:
        raise InputError(f"port add {args.name}", problems)
    store = _store(args)
    store.add_ports([port], cfg)
    _kick(args)
    print(f"port {port.name}: added")
    return 0


def cmd_port_del(args: argparse.Namespace) -> int:
    store = _store(args)
    store.delete_ports(args.names)
    _kick(args)
    print(f"port {', '.join(args.names)}: deleted" if len(args.names) < 5 else f"{len(args.names)} ports deleted")
    return 0


def _port_line(p: Port) -> str:
    addrs = [*p.ipv4, *(n.removesuffix("/128") for n in p.ipv6)]
    extra = f" extra {','.join(p.extra)}" if p.extra else ""
    return f"{p.name:<15} {p.mac}  {p.network:<12} {' '.join(addrs)}{extra}"


def cmd_port_list(args: argparse.Namespace) -> int:
    ports = _store(args).list_ports()
    if args.json:
        _print_json([p.to_json() for p in ports])
    else:
        for p in ports:
            print(_port_line(p))
    return 0


def cmd_port_show(args: argparse.Namespace) -> int:
    port = _store(args).get_port(args.name)
    if args.json:
        _print_json(port.to_json())
    else:
        for k, v in port.to_json().items():
            print(f"{k:<8} {' '.join(v) if isinstance(v, list) else v}")
    return 0


def cmd_port_import(args: argparse.Namespace) -> int:
    cfg = _config(args)
    src = sys.stdin if args.file == "-" else None
    try:
        text = src.read() if src else Path(args.file).read_text()
    except OSError as exc:
        raise InputError("port import", [Problem("file", args.file, f"a readable file ({exc.strerror})")]) from None
    ports: list[Port] = []
    problems: list[Problem] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{args.file}:{lineno}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(where, line[:60], f"a JSON object ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(data, dict):
            problems.append(Problem(where, data, "a JSON object with name, mac, network, ipv4, ipv6"))
            continue
        port, errs = parse_port(data, cfg, where)
        problems.extend(errs)
        if port is not None:
            ports.append(port)
    if problems:
        raise InputError(f"port import {args.file} (nothing imported)", problems)
    store = _store(args)
    try:
        store.add_ports(ports, cfg)
    except InputError as exc:
        # Re-label positions with file line numbers is not possible after the
        # blank-line skip; keep the port names, which are in every message.
        raise InputError(f"port import {args.file} (nothing imported)", exc.problems) from None
    _kick(args)
    print(f"imported {len(ports)} port(s)")
    return 0


def cmd_port_export(args: argparse.Namespace) -> int:
    for p in _store(args).list_ports():
        print(json.dumps(p.to_json()))
    return 0


def _kick(args: argparse.Namespace) -> None:
    from .daemon import kick

    kick(Path(args.state_dir))


# -- reconcile / daemon / status --------------------------------------------------

def cmd_reconcile(args: argparse.Namespace) -> int:
    from .reconcile import Reconciler, describe_op

    if not args.once:
        raise InputError("reconcile", [Problem("--once", False, "--once (use `hvrouter daemon` to keep running)")])
    cfg = _config(args)
    t = time.perf_counter()
    ports = _store(args).list_ports()
    load_s = time.perf_counter() - t
    report = Reconciler(cfg).run(ports, dry_run=args.dry_run)
    # A pass as the daemon's periodic resync does it: store read included.
    report.timings = {"load_s": load_s, **report.timings, "total_s": load_s + report.timings["total_s"]}
    names = {link.index: name for name, link in report.links.items()}
    failed = {id(f.op): f.reason for f in report.failures}
    if args.json:
        _print_json(
            {
                "dry_run": args.dry_run,
                "changes": len(report.ops) + int(report.firewall_changed),
                "firewall": {"changed": report.firewall_changed, "error": report.firewall_error or None},
                "failures": [{"op": describe_op(f.op, names), "reason": f.reason} for f in report.failures],
                "ports": report.port_status(),
                "timings": report.timings,
            }
        )
    else:
        verb = "would apply" if args.dry_run else "applied"
        for op in report.ops:
            line = describe_op(op, names)
            print(f"FAILED {line}: {failed[id(op)]}" if id(op) in failed else line)
        if report.firewall_changed:
            print(f"{'~' if args.dry_run else '='} nftables table inet hvrouter {'differs' if args.dry_run else 'replaced'}")
        if report.firewall_error:
            print(f"FAILED nftables table inet hvrouter: {report.firewall_error}")
        pending = sum(1 for s in report.port_state.values() if s != "ready")
        print(
            f"{verb} {len(report.ops) - len(failed)} change(s), {len(failed)} failure(s); "
            f"{len(report.port_state)} port(s), {pending} not ready; {report.timings['total_s']:.3f} s"
        )
    return 1 if report.failures or report.firewall_error else 0


def cmd_daemon(args: argparse.Namespace) -> int:
    from .daemon import Daemon

    cfg = _config(args)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    Daemon(cfg, Path(args.state_dir), resync_interval=args.resync_interval).run()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .reconcile import Reconciler, describe_op

    cfg = _config(args)
    ports = _store(args).list_ports()
    report = Reconciler(cfg).run(ports, dry_run=True)
    status = report.port_status()
    host_drift = [op for op in report.ops if op.owner == "host"]
    names = {link.index: name for name, link in report.links.items()}
    pidfile = Path(args.state_dir) / "hvrouter.pid"
    daemon_pid = None
    if pidfile.exists():
        try:
            pid = int(pidfile.read_text())
            os.kill(pid, 0)
            daemon_pid = pid
        except (ValueError, OSError):
            daemon_pid = None
    counts: dict[str, int] = {}
    for s in status.values():
        counts[str(s["state"])] = counts.get(str(s["state"]), 0) + 1
    routing = _bird_status(cfg)
    services = _services_status(cfg, Path(args.state_dir))
    overlay = _overlay_agent_status(cfg, Path(args.state_dir))
    for name, entry in status.items():
        per_port = services.get("ports", {}).get(name)
        if per_port is not None:
            entry["services"] = per_port
        drops = services.get("spoof_drops", {}).get(name)
        if drops is not None:
            entry["spoof_drops"] = drops
    if args.json:
        _print_json(
            {
                "daemon_pid": daemon_pid,
                "ports": [{"name": n, **s} for n, s in status.items()],
                "summary": counts,
                "host_drift": [describe_op(op, names) for op in host_drift],
                "firewall": "differs" if report.firewall_changed else (report.firewall_error or "in sync"),
                "responder": {k: v for k, v in services.items() if k not in ("ports", "spoof_drops")},
                **({"overlay": overlay} if cfg.overlay.networks else {}),
                **routing,
            }
        )
    else:
        print(f"daemon: {'running, pid ' + str(daemon_pid) if daemon_pid else 'not running'}")
        print(f"host objects: {'in sync' if not host_drift else str(len(host_drift)) + ' differ'}")
        fw = "differs" if report.firewall_changed else (report.firewall_error or "in sync")
        print(f"firewall (nftables table inet hvrouter): {fw}")
        for op in host_drift:
            print(f"  {describe_op(op, names)}")
        if "bird_error" in routing:
            print(f"bgp: {routing['bird_error']}")
        for sess in routing.get("bgp", []):
            chans = ", ".join(
                f"{fam} {c['imported']} received/{c['exported']} sent" for fam, c in sess["channels"].items()
            )
            print(f"bgp {sess['name']:<10} {sess['neighbor']:<16} {sess['bgp_state'] or sess['state']:<12} {chans}")
        for b in routing.get("bfd", []):
            print(f"bfd {b['address']:<16} {b['interface']:<10} {b['state']}")
        print(f"ports: {len(status)} " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        if cfg.overlay.networks:
            if overlay is None:
                print(f"overlay: {len(cfg.overlay.networks)} network(s), agent status not available")
            else:
                miss = overlay.get("controller", {})
                problems = len(overlay.get("failures") or []) + len(overlay.get("pending") or [])
                print(f"overlay: {len(cfg.overlay.networks)} network(s), {overlay.get('peers', 0)} peer VTEP(s), "
                      f"{overlay.get('remote_entries', 0)} remote entr(ies), misses resolved {miss.get('resolved', 0)}"
                      f"{f', {problems} pending/failed' if problems else ''} (`hvrouter overlay status`)")
        if services.get("received") is not None:
            print(f"responder: {services.get('answered', 0)} answered, {services.get('ignored_foreign_mac', 0)} foreign MAC, "
                  f"{services.get('ignored_unknown_interface', 0)} not a port, {services.get('malformed', 0)} malformed")
        for name, s in status.items():
            extra = ""
            if "services" in s:
                served = s["services"].get("served", {})  # type: ignore[union-attr]
                extra += f"  served {sum(served.values())}"
            if "spoof_drops" in s:
                extra += f"  spoof drops {s['spoof_drops'].get('packets', 0)}"  # type: ignore[union-attr]
            print(f"  {name:<15} {s['state']:<11} {s['detail']}{extra}")
    return 0


def _services_status(cfg: Config, state_dir: Path) -> dict[str, Any]:
    """The running daemon's responder counters (it writes them every second)
    and the anti-spoofing drop counters from our nftables table."""
    from .daemon import STATS_NAME

    out: dict[str, Any] = {}
    try:
        out = json.loads((state_dir / STATS_NAME).read_text())
    except (OSError, ValueError):
        pass
    if cfg.firewall.enabled:
        try:
            from .firewall import counters

            out["spoof_drops"] = counters()
        except (ImportError, HvrouterError, OSError):
            pass
    return out


def _overlay_agent_status(cfg: Config, state_dir: Path) -> dict[str, Any] | None:
    """What the running agent's overlay side wrote last (every second)."""
    if not cfg.overlay.networks:
        return None
    from .overlay.agent import STATUS_NAME

    try:
        return json.loads((state_dir / STATUS_NAME).read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def _bird_status(cfg: Config) -> dict[str, Any]:
    """BGP and BFD sessions and routes received, from BIRD's control socket."""
    if cfg.bgp is None:
        return {}
    from .bird import Birdc

    client = Birdc(cfg.bird.socket)
    try:
        return {"bgp": client.bgp_sessions(), "bfd": client.bfd_sessions() if cfg.bgp.bfd else []}
    except HvrouterError as exc:
        return {"bgp": [], "bfd": [], "bird_error": str(exc)}


# -- bird ---------------------------------------------------------------------------

def cmd_bird_config(args: argparse.Namespace) -> int:
    from .bird import check, render

    text = render(_config(args), args.role)
    if args.check:
        check(text)  # BirdConfigError: exit 1 with bird's message, nothing printed
    sys.stdout.write(text)
    return 0


# -- bench --------------------------------------------------------------------------

def _bounded(kind: type[int] | type[float], lo: float, hi: float) -> Callable[[str], float]:
    """An argparse type: a number in [lo, hi] (argparse exits 2 otherwise)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"got {text!r}; expected a number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"got {text}; expected {lo:g} to {hi:g}")
        return value

    return parse


def _print_figures(result: dict[str, Any], as_json: bool) -> int:
    """A benchmark's figures: JSON, or one `name value` line each."""
    if as_json:
        _print_json(result)
    else:
        width = max((len(k) for k in result), default=0) + 2
        for k, v in result.items():
            print(f"{k:<{width}}{v}")
    return 0


def cmd_bench_program(args: argparse.Namespace) -> int:
    from .bench.program import run_program_bench

    return _print_figures(run_program_bench(args.ports, keep=args.keep), args.json)


def cmd_bench_dhcp(args: argparse.Namespace) -> int:
    from .bench.dhcpstorm import run_dhcp_bench

    return _print_figures(run_dhcp_bench(args.ports), args.json)


def cmd_bench_miss(args: argparse.Namespace) -> int:
    from .bench.miss import run_miss_bench

    return _print_figures(run_miss_bench(args.entries, shell_cap=args.shell_seconds), args.json)


def cmd_bench_overlay(args: argparse.Namespace) -> int:
    from .bench.overlayconv import run_overlay_bench

    return _print_figures(run_overlay_bench(args.attachments), args.json)


def cmd_bench_converge(args: argparse.Namespace) -> int:
    from .bench.converge import run_converge_bench

    return _print_figures(run_converge_bench(args.name, args.ports), args.json)


# -- lab --------------------------------------------------------------------------------

def _lab(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .lab.manage import Lab

    return Lab(args.name)


def cmd_lab_up(args: argparse.Namespace) -> int:
    from .lab.manage import render_matrix

    if args.topology == "vxlan":
        from .lab import vxlan

        if args.mode is None:
            raise InputError("lab up --topology vxlan", [Problem("--mode", None, "one of " + ", ".join(MODES))])
        print(f"lab {args.name}: building the seed-002 VXLAN lab, mode {args.mode}...", file=sys.stderr)
        result = vxlan.up(args.name, args.mode, args.underlay, args.registry or "sqlite")
        _print_json(result) if args.json else print(vxlan.render_check(result))
        return 0 if result["ok"] else 1
    for opt in ("mode", "underlay", "registry"):
        if getattr(args, opt) is not None:
            raise InputError("lab up", [Problem(f"--{opt}", getattr(args, opt), "only with --topology vxlan")])
    lab = _lab(args)
    print(f"lab {lab.name}: building namespaces, starting BIRD and hvrouter...", file=sys.stderr)
    result = lab.up()
    if args.json:
        _print_json(result)
    else:
        print(render_matrix(result))
    return 0 if result["ok"] else 1


def cmd_lab_check(args: argparse.Namespace) -> int:
    from .lab.manage import LabError, render_matrix

    lab = _lab(args)
    if not lab.exists():
        raise LabError(f"lab {lab.name!r} does not exist (`hvrouter lab up --name {lab.name}`)")
    from .lab import vxlan

    if vxlan.is_vxlan(lab.name):
        vresult = vxlan.check(lab.name)
        _print_json(vresult) if args.json else print(vxlan.render_check(vresult))
        return 0 if vresult["ok"] else 1
    result = lab.check()
    if args.json:
        _print_json(result)
    else:
        print(render_matrix(result))
    return 0 if result["ok"] else 1


def cmd_lab_status(args: argparse.Namespace) -> int:
    st = _lab(args).status()
    if args.json:
        _print_json(st)
        return 0
    print(f"lab {st['name']}: {'up' if st['exists'] else 'absent'}")
    for node, info in st["nodes"].items():  # type: ignore[attr-defined]
        if info["namespace"]:
            bgp = st["bgp"].get(node)  # type: ignore[attr-defined]
            extra = f"  bgp {bgp['sessions_up']}/{bgp['sessions']} up" if bgp else ""
            print(f"  {node:<9} {info['namespace']:<22} {info['processes']} process(es){extra}")
    return 0


def cmd_lab_exec(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    return _lab(args).exec(args.node, cmd)


def cmd_lab_migrate(args: argparse.Namespace) -> int:
    from .lab.scenarios import migrate

    result = migrate(_lab(args), args.vm, args.hv)
    print(f"{args.vm}: moved from {result['from']} to {result['to']}")
    return 0


def cmd_lab_scenario(args: argparse.Namespace) -> int:
    from .lab.scenarios import run_scenario

    result = run_scenario(_lab(args), args.scenario)
    if args.json:
        _print_json(result)
    else:
        for k, v in result.items():
            if k != "streams":
                print(f"{k:<32} {v}")
        for s in result.get("streams", []):  # type: ignore[attr-defined]
            print(f"  {s['stream']:<40} sent {s['sent']} lost {s['lost']} gap {s['gap_ms']} ms")
    return 0 if result.get("ok", True) else 1


def cmd_lab_measure(args: argparse.Namespace) -> int:
    from .lab import vxlan
    from .lab.manage import LabError

    if not vxlan.is_vxlan(args.name):
        raise LabError(f"lab {args.name!r} is not a VXLAN lab (`hvrouter lab up --topology vxlan --mode MODE`)")
    result = vxlan.measure(args.name, args.frames)
    _print_json(result) if args.json else print(vxlan.render_measure(result))
    return 0


def cmd_lab_down(args: argparse.Namespace) -> int:
    from .lab import vxlan

    removed = vxlan.down(args.name) if vxlan.is_vxlan(args.name) else _lab(args).down()
    print(f"lab {args.name}: removed {len(removed)} namespace(s)")
    return 0


# -- overlay --------------------------------------------------------------------

def cmd_overlay_attach(args: argparse.Namespace) -> int:
    from .overlay.attach import check_attachment, parse_attachment

    cfg = _config(args)
    att, problems = parse_attachment(cfg, args.interface, args.network, args.mac, args.address or [], args.port)
    if att is None:
        raise InputError(f"overlay attach {args.interface}", problems)
    _store(args).add_attachments([att], lambda a: check_attachment(cfg, a))
    _kick(args)
    print(f"{att.interface}: attached to overlay {att.network}")
    return 0


def cmd_overlay_import(args: argparse.Namespace) -> int:
    """The JSON array `overlay list --json` prints; all or nothing."""
    from .overlay.attach import check_attachment, parse_attachment

    cfg = _config(args)
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise InputError("overlay import", [Problem("file", args.file, f"a readable JSON array ({exc})")]) from None
    if not isinstance(data, list):
        raise InputError("overlay import", [Problem("file", type(data).__name__, "a JSON array of attachments")])
    items, problems = [], []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("interface"), str):
            problems.append(Problem(f"[{i}]", item, "an object with interface, network, mac, addresses, port"))
            continue
        att, probs = parse_attachment(cfg, item["interface"], str(item.get("network")), str(item.get("mac")),
                                      [str(a) for a in item.get("addresses") or []], item.get("port"))
        problems += [Problem(f"[{i}].{p.where}", p.value, p.expected) for p in probs]
        if att is not None:
            items.append(att)
    if problems:
        raise InputError("overlay import (nothing attached)", problems)
    _store(args).add_attachments(items, lambda a: check_attachment(cfg, a))
    _kick(args)
    print(f"{len(items)} attachment(s) imported")
    return 0


def cmd_overlay_detach(args: argparse.Namespace) -> int:
    _store(args).delete_attachments(args.interfaces)
    _kick(args)
    print(f"{', '.join(args.interfaces)}: detached")
    return 0


def cmd_overlay_list(args: argparse.Namespace) -> int:
    items = _store(args).list_attachments()
    if args.json:
        _print_json(
            [
                {"interface": a.interface, "network": a.network, "mac": a.mac, "addresses": list(a.addresses), "port": a.port}
                for a in items
            ]
        )
    else:
        for a in items:
            port = f" (port {a.port})" if a.port else ""
            print(f"{a.interface:<15} {a.network:<12} {a.mac}  {' '.join(a.addresses)}{port}")
    return 0


def cmd_overlay_status(args: argparse.Namespace) -> int:
    from .overlay.status import overlay_status, render_status

    st = overlay_status(_config(args), Path(args.state_dir))
    if args.json:
        _print_json(st)
    else:
        print(render_status(st))
    return 0


# -- parser -------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hvrouter", description="Route VMs on the hypervisor.")
    p.add_argument("--config", default=os.environ.get("HVROUTER_CONFIG", DEFAULT_CONFIG), help="host configuration YAML")
    p.add_argument("--state-dir", default=os.environ.get("HVROUTER_STATE_DIR", DEFAULT_STATE), help="store and sockets")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("config", help="check or print the configuration").add_subparsers(dest="sub", required=True)
    c.add_parser("check", help="validate the config file").set_defaults(func=cmd_config_check)
    c.add_parser("example", help="print a commented example").set_defaults(func=cmd_config_example)

    pt = sub.add_parser("port", help="manage VM ports").add_subparsers(dest="sub", required=True)
    a = pt.add_parser("add", help="add a port")
    a.add_argument("name")
    a.add_argument("--mac", required=True)
    a.add_argument("--network", required=True)
    a.add_argument("--ipv4", action="append")
    a.add_argument("--ipv6", action="append")
    a.add_argument("--extra", action="append", help="extra prefix routed to this port (anycast...)")
    a.add_argument("--nat", action="append", help="public address DNATed to the port's address")
    a.set_defaults(func=cmd_port_add)
    d = pt.add_parser("del", help="delete ports (all or none)")
    d.add_argument("names", nargs="+", metavar="NAME")
    d.set_defaults(func=cmd_port_del)
    ls = pt.add_parser("list", help="list ports")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_port_list)
    sh = pt.add_parser("show", help="show one port")
    sh.add_argument("name")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=cmd_port_show)
    im = pt.add_parser("import", help="add ports from JSON lines (all or nothing)")
    im.add_argument("file", help="file of JSON lines, or - for stdin")
    im.set_defaults(func=cmd_port_import)
    pt.add_parser("export", help="print ports as JSON lines").set_defaults(func=cmd_port_export)

    r = sub.add_parser("reconcile", help="make the kernel match the desired state")
    r.add_argument("--once", action="store_true", help="one pass, then exit")
    r.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_reconcile)

    dm = sub.add_parser("daemon", help="run the agent")
    dm.add_argument("--resync-interval", type=float, default=30.0, help="seconds between full resyncs")
    dm.set_defaults(func=cmd_daemon)

    st = sub.add_parser("status", help="ports: programmed / pending / drift")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    ov = sub.add_parser("overlay", help="VXLAN overlay attachments and state").add_subparsers(dest="sub", required=True)
    oa = ov.add_parser("attach", help="attach an interface (a VM's second tap) to an overlay network")
    oa.add_argument("interface")
    oa.add_argument("--network", required=True)
    oa.add_argument("--mac", required=True, help="the MAC behind the interface (the VM's)")
    oa.add_argument("--address", action="append", help="an overlay address of the VM (repeatable)")
    oa.add_argument("--port", help="the routed port this interface belongs to (detached with it)")
    oa.set_defaults(func=cmd_overlay_attach)
    oi = ov.add_parser("import", help="attach from `overlay list --json` output (all or nothing)")
    oi.add_argument("file", help="path, or - for stdin")
    oi.set_defaults(func=cmd_overlay_import)
    od = ov.add_parser("detach", help="detach interfaces (all or none)")
    od.add_argument("interfaces", nargs="+")
    od.set_defaults(func=cmd_overlay_detach)
    ol = ov.add_parser("list", help="list attachments")
    ol.add_argument("--json", action="store_true")
    ol.set_defaults(func=cmd_overlay_list)
    os_ = ov.add_parser("status", help="registry view, kernel entries and miss counters")
    os_.add_argument("--json", action="store_true")
    os_.set_defaults(func=cmd_overlay_status)

    lab = sub.add_parser("lab", help="the seed lab in network namespaces").add_subparsers(dest="sub", required=True)
    for name, func, help_text in (
        ("up", cmd_lab_up, "build the lab, start BIRD and hvrouter, wait for a green check"),
        ("check", cmd_lab_check, "ping every VM pair and from the internet host, both families"),
        ("status", cmd_lab_status, "namespaces, processes and BGP sessions"),
        ("down", cmd_lab_down, "remove everything the lab made"),
    ):
        lp = lab.add_parser(name, help=help_text)
        lp.add_argument("--name", default="hvlab")
        if name != "down":
            lp.add_argument("--json", action="store_true")
        if name == "up":
            lp.add_argument("--topology", choices=["seed", "vxlan"], default="seed",
                            help="seed: the routed lab of seed 001; vxlan: seed 002's H1-H4 / S1-S3")
            lp.add_argument("--mode", choices=MODES, help="vxlan: the overlay mode")
            lp.add_argument("--underlay", choices=["ipv6", "ipv4"], help="vxlan: underlay family (default ipv6)")
            lp.add_argument("--registry", choices=["sqlite", "etcd"], help="vxlan: registry backend (default sqlite)")
        lp.set_defaults(func=func)
    lme = lab.add_parser("measure", help="VXLAN lab: BUM amplification and FDB sizes")
    lme.add_argument("--name", default="hvlab")
    lme.add_argument("--frames", type=_bounded(int, 1, 10000), default=100)
    lme.add_argument("--json", action="store_true")
    lme.set_defaults(func=cmd_lab_measure)
    le = lab.add_parser("exec", help="run a command in a node's namespace and environment")
    le.add_argument("--name", default="hvlab")
    le.add_argument("node")
    le.add_argument("cmd", nargs=argparse.REMAINDER)
    le.set_defaults(func=cmd_lab_exec)
    lm = lab.add_parser("migrate", help="move a lab VM to another hypervisor (live-migration style)")
    lm.add_argument("--name", default="hvlab")
    lm.add_argument("vm")
    lm.add_argument("hv")
    lm.set_defaults(func=cmd_lab_migrate)
    ls_ = lab.add_parser("scenario", help="inject a fault under a ping stream and measure it")
    ls_.add_argument("--name", default="hvlab")
    ls_.add_argument("--json", action="store_true")
    ls_.add_argument("scenario", help="fabric-down, rr-down, hv-down, agent-restart, bird-restart, migrate, anycast")
    ls_.set_defaults(func=cmd_lab_scenario)

    bcfg = sub.add_parser("bird-config", help="print this host's BIRD configuration")
    bcfg.add_argument("--role", choices=["hypervisor", "route-reflector", "edge"], help="default: bird.role")
    bcfg.add_argument("--check", action="store_true", help="also check it with `bird -p`")
    bcfg.set_defaults(func=cmd_bird_config)

    b = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="sub", required=True)
    bp = b.add_parser("program", help="time programming N ports against ip -batch")
    bp.add_argument("--ports", type=int, default=10000)
    bp.add_argument("--json", action="store_true")
    bp.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    bp.set_defaults(func=cmd_bench_program)
    bd = b.add_parser("dhcp", help="DHCPv4 boot storm: hvrouter's responder, then dnsmasq")
    bd.add_argument("--ports", type=int, default=1000)
    bd.add_argument("--json", action="store_true")
    bd.set_defaults(func=cmd_bench_dhcp)
    bm = b.add_parser("miss", help="VXLAN miss controller vs the seed's shell loop (10k MACs/IPs)")
    bm.add_argument("--entries", type=_bounded(int, 1, 25000), default=10000)
    bm.add_argument("--shell-seconds", type=_bounded(float, 1, 600), default=30.0, help="cap on the shell loop's burst phase")
    bm.add_argument("--json", action="store_true")
    bm.set_defaults(func=cmd_bench_miss)
    bo = b.add_parser("overlay", help="overlay attach on S3 -> FDB entry on S1 and S2 (VXLAN lab, SQLite and etcd)")
    bo.add_argument("--attachments", type=_bounded(int, 1, 150), default=20)
    bo.add_argument("--json", action="store_true")
    bo.set_defaults(func=cmd_bench_overlay)
    bc = b.add_parser("converge", help="port add on hv1 -> first ping answered from hv3 (lab)")
    bc.add_argument("--name", default="hvlab")
    bc.add_argument("--ports", type=int, default=20)
    bc.add_argument("--json", action="store_true")
    bc.set_defaults(func=cmd_bench_converge)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except HvrouterError as exc:
        print(f"hvrouter: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
