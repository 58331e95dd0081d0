"""`hvrouter bench converge`: from `port add` on HV1 to the first ping
answered from a VM on HV3, in the lab.

For each of K new ports: a VM namespace is attached to HV1 first (tap up,
addresses configured); a pinger in vm4 (on HV3) sends every 10 ms; then the
port is added exactly as `hvrouter port add` does it (validate, commit to the
store, kick the daemon) and the clock runs until the pinger gets its first
answer. The path: hvrouter daemon -> kernel route -> BIRD (netlink
notification) -> BGP to RR1/RR2 -> reflected to HV3 -> HV3's kernel table.

Measured from the commit: the CLI's own start-up (Python imports, ~0.3 s)
happens before it and is not routing convergence. vm4's ARP retransmit
timer is set to 10 ms for the IPv4 probe, otherwise a failed ARP attempt
made before the route existed would add up to 1 s of VM-side waiting.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from ..config import load_config
from ..daemon import kick
from ..lab.manage import Lab, LabError
from ..ports import parse_port
from ..store import Store

PINGER = "vm4"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[idx]


class _Pinger:
    """Echo requests every 10 ms from a namespace until the first reply
    (hvrouter.bench.pinger: ICMP errors while converging must not stop it)."""

    def __init__(self, ns: str, dst: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "hvrouter.bench.pinger", dst, "12", "0.01"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )

    def first_answer(self, timeout: float) -> float | None:
        try:
            out, _ = self.proc.communicate(timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        text = out.strip()
        return float(text) if self.proc.returncode == 0 and text != "timeout" else None


def _wait_dad(ns: str, limit: float = 5.0) -> None:
    """A VM that was just started still has a tentative link-local address
    (duplicate address detection, ~1 s) and does not answer neighbour
    solicitations with it; a running VM would have finished long ago."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        out = subprocess.run(["ip", "-n", ns, "-6", "addr", "show", "dev", "eth0", "tentative"],
                             capture_output=True, text=True).stdout
        if not out.strip():
            return
        time.sleep(0.05)


def run_converge_bench(lab_name: str, ports: int) -> dict[str, object]:
    if not 1 <= ports <= 100:
        raise LabError("--ports must be between 1 and 100 (203.0.113.100-199 are used)")
    lab = Lab(lab_name)
    if not lab.exists():
        raise LabError(f"lab {lab_name!r} is not up (`hvrouter lab up --name {lab_name}`)")
    files = lab.files("hv1")
    cfg = load_config(Path(files.config))
    store = Store(Path(files.state))
    pinger_ns = lab.ns(PINGER)
    subprocess.run(["ip", "netns", "exec", pinger_ns, "sysctl", "-qw", "net.ipv4.neigh.eth0.retrans_time_ms=10"],
                   check=True)
    samples: dict[str, list[float]] = {"ipv4": [], "ipv6": []}
    added: list[str] = []
    try:
        for i in range(ports):
            name = f"cv{i}"
            n = 100 + i
            mac = f"52:54:00:00:01:{i:02x}"
            v4 = f"203.0.113.{n}"
            v6net = f"2001:db8:cb00:71{0x80 + i:02x}"
            vm_ns = lab.attach_vm(name, "hv1", mac, v4, f"{v6net}:5054:ff:fe00:1{i:02x}")
            _wait_dad(vm_ns)
            port, problems = parse_port(
                {"name": name, "mac": mac, "network": "public", "ipv4": [v4], "ipv6": [f"{v6net}::/64"]}, cfg)
            assert port is not None, problems
            pingers = {"ipv4": _Pinger(pinger_ns, v4), "ipv6": _Pinger(pinger_ns, f"{v6net}:5054:ff:fe00:1{i:02x}")}
            time.sleep(0.3)  # the pingers are running (and failing) before the port exists
            t0 = time.monotonic()
            store.add_ports([port], cfg)
            kick(Path(files.state))
            added.append(name)
            for fam, pinger in pingers.items():
                answered = pinger.first_answer(timeout=10.0)
                samples[fam].append((answered - t0) * 1000 if answered is not None else float("inf"))
    finally:
        for name in added:
            try:
                store.delete_port(name)
            except Exception:  # noqa: BLE001 - best-effort cleanup, reported below if it matters
                pass
        kick(Path(files.state))
        for i in range(ports):
            subprocess.run(["ip", "netns", "del", lab.ns(f"cv{i}")], capture_output=True)
    both = [max(a, b) for a, b in zip(samples["ipv4"], samples["ipv6"], strict=True)]
    out: dict[str, object] = {
        "ports": ports,
        "p50_ms": round(statistics.median(both), 1),
        "p90_ms": round(_percentile(both, 0.9), 1),
        "max_ms": round(max(both), 1),
        "failed": sum(1 for v in both if v == float("inf")),
    }
    for fam, vals in samples.items():
        out[fam] = {"p50_ms": round(statistics.median(vals), 1), "p90_ms": round(_percentile(vals, 0.9), 1),
                    "max_ms": round(max(vals), 1)}
    out["measured_from"] = "port add commit (store) to first echo reply seen by vm4 on hv3, both families"
    return out

