"""`hvrouter bench program`: time one reconcile of N ports against `ip`.

In one run, on the same throwaway namespace with N veth "taps":
  * ip_batch_s        `ip -batch` adding the same routes, gateway addresses
                      and proxy entries hvrouter adds (ip cannot set the
                      per-tap sysctls, which hvrouter also does);
  * ip_batch_routes_s `ip -batch` adding only the routes;
  * ip_per_command_s  one `ip` process per object, timed on a sample of each
                      kind and extrapolated to all objects;
  * hvrouter_s        one `hvrouter reconcile --once` pass (store read,
                      observe, plan, apply), as timed by the process itself;
  * hvrouter_routes_s the route batches inside that pass, to compare with
                      ip_batch_routes_s object for object;
  * noop_reconcile_s  the next pass, which must change nothing;
  * peak_rss_mb       peak RSS of the reconcile process.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address, IPv6Network
from pathlib import Path

from ..config import parse_config
from ..model import Port
from ..store import Store

SAMPLE = 100
PROTO = 211
TABLE = 90
GW4 = "198.18.255.254"
V4_BASE = int(IPv4Address("198.18.0.1"))
V6_BASE = IPv6Network("2001:db8:b000::/48")


def _ip_batch(ns: str, lines: list[str], family: str = "", quiet: bool = False) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".batch", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        path = f.name
    try:
        cmd = ["ip", "-n", ns, *([family] if family else []), "-force", "-batch", path]
        t = time.perf_counter()
        subprocess.run(cmd, check=not quiet, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if quiet else None)
        return time.perf_counter() - t
    finally:
        os.unlink(path)


def _config_text() -> str:
    return f"""
rtproto: {PROTO}
tables: {{public: {TABLE}, private: 20, local-out: 100}}
networks:
  - name: bench
    table: public
    ipv4: {{subnet: 198.18.0.0/16, gateway: {GW4}}}
    ipv6: {{mode: prefix-per-port, prefix: "{V6_BASE}"}}
"""


def _port(i: int) -> Port:
    mac = f"52:54:{(i >> 24) & 255:02x}:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"
    v6 = IPv6Network((int(V6_BASE.network_address) + (i << 64), 64))
    return Port(f"t{i}", mac, "bench", (str(IPv4Address(V4_BASE + i)),), (str(v6),))


def _ll(mac: str) -> str:
    from ..ports import eui64_link_local

    return eui64_link_local(mac)


def _objects(ports: list[Port]) -> tuple[list[str], list[str], list[str]]:
    routes, addrs, proxies = [], [], []
    for p in ports:
        routes.append(f"route add {p.ipv4[0]}/32 dev {p.name} table {TABLE} proto {PROTO} scope link")
        routes.append(f"route add {p.ipv6[0]} via {_ll(p.mac)} dev {p.name} table {TABLE} proto {PROTO} metric 1024")
        addrs.append(f"address add {GW4}/32 dev {p.name} scope link")
        proxies.append(f"neigh add proxy fe80::1 dev {p.name} router")
    return routes, addrs, proxies


def _flush(ns: str, ports: list[Port], everything: bool) -> None:
    _ip_batch(ns, [f"route flush table {TABLE} proto {PROTO}"], "-4", quiet=True)
    _ip_batch(ns, [f"route flush table {TABLE} proto {PROTO}"], "-6", quiet=True)
    if everything:
        _ip_batch(ns, [f"address del {GW4}/32 dev {p.name}" for p in ports], quiet=True)
        _ip_batch(ns, [f"neigh del proxy fe80::1 dev {p.name}" for p in ports], "-6", quiet=True)


def _settle(ns: str, limit: float = 60.0) -> float:
    """Wait until adding 500 routes takes a steady time: after creating 10k
    links the kernel keeps working for a while, which would skew whatever
    runs first."""
    probe = [f"route add blackhole 198.19.{i // 250}.{i % 250}/32 table 7777" for i in range(500)]
    start = time.perf_counter()
    last = float("inf")
    while time.perf_counter() - start < limit:
        took = _ip_batch(ns, probe)
        _ip_batch(ns, ["route flush table 7777"], "-4", quiet=True)
        if took < 0.05 or abs(took - last) < 0.2 * min(took, last):
            break
        last = took
        time.sleep(1.0)
    return time.perf_counter() - start


def _per_command(ns: str, lines: list[str]) -> float:
    t = time.perf_counter()
    for line in lines:
        subprocess.run(["ip", "-n", ns, *line.split()], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def _reconcile(ns: str, cfg: Path, state: Path) -> tuple[dict[str, object], float]:
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "hvrouter", "--config", str(cfg),
           "--state-dir", str(state), "reconcile", "--once", "--json"]
    t = time.perf_counter()
    out = subprocess.run(cmd, check=False, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"reconcile failed ({out.returncode}): {out.stderr[-2000:]} {out.stdout[-2000:]}")
    return json.loads(out.stdout), wall


def run_program_bench(n: int, keep: bool = False) -> dict[str, object]:
    tag = f"hvb{secrets.token_hex(3)}"
    hv, vm = f"{tag}-hv", f"{tag}-vm"
    work = Path(tempfile.mkdtemp(prefix=f"{tag}-"))
    made: list[str] = []
    try:
        for ns in (hv, vm):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            made.append(ns)
        # The VM ends stay down: no carrier means no IPv6 autoconf chatter on
        # 10k links while timing (taps of stopped VMs look the same).
        subprocess.run(["ip", "netns", "exec", vm, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], check=True)
        ports = [_port(i) for i in range(n)]
        t = time.perf_counter()
        _ip_batch(hv, [f"link add {p.name} up type veth peer name v{i} netns {vm}" for i, p in enumerate(ports)])
        setup_links_s = time.perf_counter() - t

        cfg_path = work / "hvrouter.yaml"
        cfg_path.write_text(_config_text())
        cfg = parse_config(__import__("yaml").safe_load(_config_text()))
        state = work / "state"
        t = time.perf_counter()
        Store(state).add_ports(ports, cfg)
        import_s = time.perf_counter() - t

        settle_s = _settle(hv)
        routes, addrs, proxies = _objects(ports)
        # Best of two for each baseline: the kernel is sometimes still busy
        # with the new links, and the baselines must not be handicapped.
        ip_batch_routes_s = ip_batch_s = float("inf")
        for _ in range(2):
            ip_batch_routes_s = min(ip_batch_routes_s, _ip_batch(hv, routes))
            _flush(hv, ports, everything=False)
            ip_batch_s = min(ip_batch_s, _ip_batch(hv, routes + addrs + proxies))
            _flush(hv, ports, everything=True)
        per_cmd = 0.0
        for lines in (routes[0::2], routes[1::2], addrs, proxies):
            sample = lines[: min(SAMPLE, len(lines))]
            per_cmd += _per_command(hv, sample) / len(sample) * len(lines)
        _flush(hv, ports, everything=True)

        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        first, first_wall = _reconcile(hv, cfg_path, state)
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        second, second_wall = _reconcile(hv, cfg_path, state)
        peak_kb = max(peak_kb, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        t1 = first["timings"]  # type: ignore[index]
        t2 = second["timings"]  # type: ignore[index]
        hvrouter_s = float(t1["total_s"])  # type: ignore[index]
        hv_routes_s = float(t1.get("apply_route_s", 0.0))  # type: ignore[union-attr]
        return {
            "ports": n,
            "objects_applied": first["changes"],
            "failures": len(first["failures"]),  # type: ignore[arg-type]
            "hvrouter_s": round(hvrouter_s, 3),
            "hvrouter_phases_s": {k: round(float(v), 3) for k, v in t1.items()},  # type: ignore[union-attr]
            "hvrouter_process_s": round(first_wall, 3),
            "ip_batch_s": round(ip_batch_s, 3),
            "ip_batch_routes_s": round(ip_batch_routes_s, 3),
            "ip_per_command_s": round(per_cmd, 1),
            "ratio_vs_ip_batch": round(hvrouter_s / ip_batch_s, 2),
            "hvrouter_routes_s": round(hv_routes_s, 3),
            "routes_ratio_vs_ip_batch_routes": round(hv_routes_s / ip_batch_routes_s, 2),
            "speedup_vs_per_command": round(per_cmd / hvrouter_s, 1),
            "noop_reconcile_s": round(float(t2["total_s"]), 3),  # type: ignore[index]
            "noop_changes": second["changes"],
            "noop_process_s": round(second_wall, 3),
            "peak_rss_mb": round(max(peak_kb, before) / 1024, 1),
            "setup_links_s": round(setup_links_s, 2),
            "settle_s": round(settle_s, 1),
            "import_s": round(import_s, 3),
            "namespace": hv if keep else None,
        }
    finally:
        if not keep:
            for ns in made:
                subprocess.run(["ip", "netns", "del", ns], check=False)
            subprocess.run(["rm", "-rf", str(work)], check=False)
