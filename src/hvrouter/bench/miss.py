"""`hvrouter bench miss`: the miss controller against seed 002's shell loop.

Two namespaces, each with a VXLAN device in mode unicast-dynamic-nd
(nolearning, proxy, l2miss, l3miss) and the same 10k remote MAC/IP/VTEP
entries:
* hvrouter: the real agent (`hvrouter daemon`), entries published in an
  SQLite registry by a fake peer VTEP;
* shell: the seed's controller, `ip monitor neigh dev D | while read ...` (with `dev`, ip prints
  "miss lladdr MAC STALE" / "miss IP STALE") looking
  each miss up in a text file and answering with `bridge fdb replace` /
  `ip neigh replace`.
hvrouter.bench.misswork makes the misses and times the entries in each.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..config import RegistryConfig
from ..lab.manage import Lab
from ..overlay.registry import open_registry
from ..overlay.types import Entry, Member

DEV = "ovx100"
LOCAL = "2001:db8:ff00::1"
PEER = "2001:db8:ff00::2"
SHELL_LOOP = r"""
ip monitor neigh dev {dev} | while read -r a b c rest; do
  [ "$a" = miss ] || continue
  if [ "$b" = lladdr ]; then
    vtep=$(grep -m1 "^$c " {macs} | cut -d' ' -f2)
    [ -n "$vtep" ] && bridge fdb replace "$c" dev {dev} dst "$vtep" permanent
  else
    mac=$(grep -m1 "^$b " {ips} | cut -d' ' -f2)
    [ -n "$mac" ] && ip neigh replace "$b" lladdr "$mac" dev {dev} nud permanent
  fi
done
"""

def dataset(n: int) -> list[tuple[str, str, str]]:
    rows = []
    for i in range(n):
        mac = f"52:54:01:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
        ip = f"198.19.{128 + i // 200}.{10 + i % 200}"
        rows.append((mac, ip, PEER))
    return rows


def _ns(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "-n", name, "addr", "add", f"{LOCAL}/128", "dev", "lo"], check=True)


def _del_ns(name: str) -> None:
    """Stop what runs in it by PID (the lab's way), then remove it."""
    if not Path("/run/netns", name).exists():
        return
    Lab._stop_processes(name)
    subprocess.run(["ip", "netns", "del", name], check=False)


def _config(tmp: Path) -> Path:
    path = tmp / "hv.yaml"
    path.write_text(
        "firewall: {enabled: false}\n"
        "overlay:\n"
        "  vtep_id: bench\n"
        f"  registry: {{backend: sqlite, path: {tmp / 'registry.sqlite'}, lease: 30}}\n"
        "  miss: {rate: 1000000, negative_ttl: 5}\n"
        f"  networks: [{{name: bench, vni: 100, mode: unicast-dynamic-nd, local: '{LOCAL}', vxlan: {DEV}, bridge: ovb100}}]\n"
    )
    return path


def _status(state: Path) -> dict[str, object]:
    try:
        return json.loads((state / "overlay-status.json").read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def _work(ns: str, data: Path, samples: int, cap: float, unknown: int = 0) -> dict[str, object]:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "hvrouter.bench.misswork", DEV, str(data),
         str(samples), str(cap), str(unknown)],
        capture_output=True, text=True, timeout=cap + 120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"misswork in {ns}: exit {out.returncode}: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def publish_peer(tmp: Path, rows: list[tuple[str, str, str]]) -> None:
    """The fake peer VTEP's entries, in the SQLite registry under `tmp`."""
    reg = open_registry(RegistryConfig(backend="sqlite", path=tmp / "registry.sqlite", lease=3600))
    try:
        reg.publish("peer", [Member(100, PEER, "peer")], [Entry(100, mac, (ip,), vtep, "peer") for mac, ip, vtep in rows])
    finally:
        reg.close()


class HvrouterSide:
    """The real agent in a namespace, answering from an SQLite registry."""

    def __init__(self, ns: str, tmp: Path, rows: list[tuple[str, str, str]], publish: bool = True) -> None:
        self.ns, self.tmp = ns, tmp
        self.state = tmp / "state"
        if publish:
            publish_peer(tmp, rows)
        exe = shutil.which("hvrouter") or str(Path(sys.executable).with_name("hvrouter"))
        self.log = open(tmp / "daemon.log", "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, exe, "--config", str(_config(tmp)), "--state-dir", str(self.state), "daemon"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            st = _status(self.state)
            if st.get("remote_entries") == len(rows) and DEV in (st.get("devices") or []):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"hvrouter agent in {ns} not ready: {(tmp / 'daemon.log').read_text()[-2000:]}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _shell_side(ns: str, tmp: Path, rows: list[tuple[str, str, str]]) -> subprocess.Popen[bytes]:
    subprocess.run(
        ["ip", "-n", ns, "link", "add", DEV, "type", "vxlan", "id", "100", "local", LOCAL, "dstport", "4789",
         "nolearning", "proxy", "l2miss", "l3miss"], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", DEV, "up"], check=True)
    macs, ips = tmp / "macs.txt", tmp / "ips.txt"
    macs.write_text("".join(f"{m} {v}\n" for m, _i, v in rows))
    ips.write_text("".join(f"{i} {m}\n" for m, i, _v in rows))
    script = SHELL_LOOP.format(dev=DEV, macs=macs, ips=ips)
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "bash", "-c", script],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(0.5)  # `ip monitor` subscribed
    return proc


def run_miss_bench(n: int = 10000, shell_cap: float = 30.0, shell_samples: int = 300) -> dict[str, object]:
    prefix = "hvbm" + secrets.token_hex(3)
    ns_hv, ns_sh = f"{prefix}-hv", f"{prefix}-sh"
    tmp = Path(tempfile.mkdtemp(prefix="hvrouter-bench-miss-"))
    rows = dataset(n)
    data = tmp / "data.txt"
    data.write_text("".join(f"{m} {i} {v}\n" for m, i, v in rows))
    hv: HvrouterSide | None = None
    shell: subprocess.Popen[bytes] | None = None
    try:
        _ns(ns_hv)
        _ns(ns_sh)
        hv = HvrouterSide(ns_hv, tmp, rows)
        h = _work(ns_hv, data, n, 60.0)
        counters = _status(hv.state).get("controller", {})
        hv.stop()
        shell = _shell_side(ns_sh, tmp, rows)
        s = _work(ns_sh, data, shell_samples, shell_cap)
    finally:
        if hv is not None:
            hv.stop()
        if shell is not None and shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
        _del_ns(ns_hv)
        _del_ns(ns_sh)
        shutil.rmtree(tmp, ignore_errors=True)
    hv_rate = float(h["per_s"])  # type: ignore[arg-type]
    sh_rate = float(s["per_s"])  # type: ignore[arg-type]
    return {
        "entries": n,
        "hvrouter_per_s": hv_rate,
        "shell_per_s": sh_rate,
        "ratio": round(hv_rate / sh_rate, 1) if sh_rate else None,
        "p50_ms": h.get("p50_ms"),
        "p99_ms": h.get("p99_ms"),
        "max_ms": h.get("max_ms"),
        "latency_samples": h.get("latency_samples"),
        "latency_lost": h.get("latency_lost"),
        "hvrouter_resolved": h.get("resolved"),
        "hvrouter_elapsed_s": h.get("elapsed_s"),
        "burst_send_s": h.get("burst_send_s"),
        "shell_p50_ms": s.get("p50_ms"),
        "shell_p99_ms": s.get("p99_ms"),
        "shell_latency_samples": s.get("latency_samples"),
        "shell_resolved": s.get("resolved"),
        "shell_elapsed_s": s.get("elapsed_s"),
        "controller": counters,
    }
