"""`hvrouter lab scenario NAME`: inject a fault under a ping stream and
report what it cost. Streams send one echo request every 10 ms (100/s) from
inside the lab's namespaces (hvrouter.bench.stream); loss_ms = lost packets
x interval, gap_ms = the longest run of consecutive losses x interval.
Every scenario puts the lab back as it found it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..bird import Birdc
from ..daemon import kick
from ..errors import HvrouterError, InputError, Problem
from ..store import Store
from . import topology as T
from .manage import Lab, LabError, _run

INTERVAL = 0.01


@dataclass(frozen=True)
class Stream:
    src: str  # node
    dst: str
    source: str = ""  # source address (the internet host)

    @property
    def label(self) -> str:
        who = "internet" if self.source else self.src
        return f"{who}->{self.dst}"


def _start(lab: Lab, streams: list[Stream], duration: float) -> list[tuple[Stream, subprocess.Popen[str]]]:
    return [
        (s, subprocess.Popen(
            ["ip", "netns", "exec", lab.ns(s.src), sys.executable, "-m", "hvrouter.bench.stream", s.dst,
             str(duration), str(INTERVAL), s.source],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        for s in streams
    ]


def _collect(procs: list[tuple[Stream, subprocess.Popen[str]]]) -> list[dict[str, object]]:
    out = []
    for s, proc in procs:
        stdout, _ = proc.communicate(timeout=120)
        data = json.loads(stdout)
        data["stream"] = s.label
        out.append(data)
    return out


def _vm(name: str) -> T.Vm:
    return next(v for v in T.VMS if v.name == name)


def _streams(src: str, dsts: list[str], internet: bool = True) -> list[Stream]:
    out = []
    for d in dsts:
        vm = _vm(d) if d.startswith("vm") else None
        addrs = (vm.ipv4, vm.ipv6) if vm else ((T.INTERNET4, T.INTERNET6) if d == "internet" else (d,))
        for a in addrs:
            out.append(Stream(src, a))
    if internet:
        for d in dsts:
            if d.startswith("vm"):
                vm = _vm(d)
                out += [Stream("edge", vm.ipv4, T.INTERNET4), Stream("edge", vm.ipv6, T.INTERNET6)]
    return out


def _set_fabric_ports(lab: Lab, node: str, fabrics: tuple[str, ...], up: bool) -> None:
    """Cut (or restore) a node's links at the fabric side, as a switch port
    failure would: the node sees its carrier go, the others see nothing."""
    for f in fabrics:
        for kind in ("pub", "priv"):
            if (f, kind) in next(n for n in T.ROUTERS if n.name == node).segments:
                _run(["ip", "-n", lab.ns(f"fabric-{f}"), "link", "set", f"{node}-{kind}", "up" if up else "down"])


def _bird_pid(lab: Lab, node: str) -> int | None:
    try:
        return int(Path(lab.files(node).bird_pid).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stop_bird(lab: Lab, node: str) -> None:
    pid = _bird_pid(lab, node)
    if pid is None:
        raise LabError(f"{node}: no bird pid file")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def start_bird(lab: Lab, node: str) -> None:
    f = lab.files(node)
    _run(["ip", "netns", "exec", lab.ns(node), "bird", "-c", f.bird_conf, "-s", f.bird_sock, "-P", f.bird_pid])


def wait_sessions(lab: Lab, timeout: float = 60.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        bgp = lab.bgp()
        if all(v["sessions"] > 0 and v["sessions"] == v["sessions_up"] for v in bgp.values()):
            return round(time.monotonic() - t0, 2)
        time.sleep(0.2)
    raise LabError(f"BGP sessions not all up after {timeout:.0f} s: {lab.bgp()}")


def _bird_text(lab: Lab, node: str, *cmd: str) -> str:
    lines = Birdc(Path(lab.files(node).bird_sock)).run(*cmd, tolerate="not found")
    return "\n".join(line.text for line in lines)


def _bird_has(lab: Lab, node: str, prefix: str, table: str = "t_public4") -> bool:
    return prefix in _bird_text(lab, node, "show", "route", prefix, "table", table)


def _summary(results: list[dict[str, object]]) -> dict[str, object]:
    return {
        "lost": sum(int(r["lost"]) for r in results),  # type: ignore[call-overload]
        "loss_ms": max(float(r["loss_ms"]) for r in results),  # type: ignore[arg-type]
        "gap_ms": max(float(r["gap_ms"]) for r in results),  # type: ignore[arg-type]
        "streams": results,
    }


def _during(delay: float, action: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(delay), action()), daemon=True)
    t.start()
    return t


# -- scenarios ------------------------------------------------------------------


def fabric_down(lab: Lab) -> dict[str, object]:
    streams = _streams("vm1", ["vm4", "internet"], internet=False)
    procs = _start(lab, streams, 10.0)
    time.sleep(2.0)
    _set_fabric_ports(lab, "hv1", ("a",), up=False)
    time.sleep(4.0)
    _set_fabric_ports(lab, "hv1", ("a",), up=True)
    result = _summary(_collect(procs))
    result["sessions_back_after_restore_s"] = wait_sessions(lab)
    result["target"] = "loss_ms < 1000"
    result["ok"] = float(result["loss_ms"]) < 1000  # type: ignore[arg-type]
    return result


def rr_down(lab: Lab) -> dict[str, object]:
    streams = _streams("vm1", ["vm4", "internet"], internet=False)
    procs = _start(lab, streams, 10.0)
    time.sleep(2.0)
    stop_bird(lab, "rr1")
    time.sleep(4.0)
    start_bird(lab, "rr1")
    result = _summary(_collect(procs))
    result["sessions_back_s"] = wait_sessions(lab)
    result["target"] = "lost == 0"
    result["ok"] = result["lost"] == 0
    return result


def hv_down(lab: Lab) -> dict[str, object]:
    bfd = 100  # ms, the default shipped (BfdConfig)
    prefix = f"{_vm('vm4').ipv4}/32"
    watchers = {"rr1": 0.0, "rr2": 0.0, "hv1": 0.0}
    procs = _start(lab, _streams("vm1", ["internet"], internet=False), 4.0)
    time.sleep(1.0)
    for node in watchers:
        assert _bird_has(lab, node, prefix), f"{node} does not hold {prefix} before the fault"
    t0 = time.monotonic()
    _set_fabric_ports(lab, "hv3", ("a", "b"), up=False)

    def watch(node: str) -> None:
        while time.monotonic() - t0 < 10:
            if not _bird_has(lab, node, prefix):
                watchers[node] = (time.monotonic() - t0) * 1000
                return
            time.sleep(0.002)
        watchers[node] = float("inf")

    threads = [threading.Thread(target=watch, args=(n,)) for n in watchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    collateral = _summary(_collect(procs))
    _set_fabric_ports(lab, "hv3", ("a", "b"), up=True)
    back = wait_sessions(lab)
    withdraw = max(watchers.values())
    return {
        "withdraw_ms": round(withdraw, 1),
        "per_node_ms": {k: round(v, 1) for k, v in watchers.items()},
        "bfd": f"{bfd} ms x 3",
        "target": f"withdraw_ms <= {3 * bfd + 200}",
        "ok": withdraw <= 3 * bfd + 200,
        "unaffected_streams_lost": collateral["lost"],
        "sessions_back_s": back,
    }


_WITHDRAWS = re.compile(r"Import withdraws:\s+(\d+)")


def _withdraws_from(lab: Lab, rr: str, neighbors: set[str]) -> int:
    client = Birdc(Path(lab.files(rr).bird_sock))
    total = 0
    for sess in client.bgp_sessions():
        if sess.get("neighbor") in neighbors:
            out = _bird_text(lab, rr, "show", "protocols", "all", str(sess["name"]))
            total += sum(int(m) for m in _WITHDRAWS.findall(out))
    return total


def _daemon_pids(lab: Lab, hv: str) -> list[int]:
    pids = []
    for pid in _run(["ip", "netns", "pids", lab.ns(hv)], check=False).stdout.split():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"hvrouter" in b" ".join(cmd) and b"daemon" in cmd:
            pids.append(int(pid))
    return pids


def agent_restart(lab: Lab) -> dict[str, object]:
    hv1 = next(n for n in T.HYPERVISORS if n.name == "hv1")
    neighbors = {hv1.addr4(s) for s in hv1.segments if s[0] == "a"}
    before = _withdraws_from(lab, "rr1", neighbors)
    procs = _start(lab, _streams("vm1", ["vm4", "internet"], internet=False) + _streams("vm4", ["vm1"], internet=True),
                   8.0)
    time.sleep(2.0)
    for pid in _daemon_pids(lab, "hv1"):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    lab.start_daemon("hv1")
    result = _summary(_collect(procs))
    after = _withdraws_from(lab, "rr1", neighbors)
    result["withdrawals"] = after - before
    result["target"] = "withdrawals == 0 and lost == 0"
    result["ok"] = result["withdrawals"] == 0 and result["lost"] == 0
    return result


def bird_restart(lab: Lab) -> dict[str, object]:
    procs = _start(lab, _streams("vm1", ["vm4", "internet"], internet=False), 20.0)
    time.sleep(2.0)
    t0 = time.monotonic()
    stop_bird(lab, "hv1")
    start_bird(lab, "hv1")
    wait_sessions(lab)
    result = _summary(_collect(procs))
    result["sessions_back_s"] = round(time.monotonic() - t0, 2)
    result["mode"] = "BFD on, graceful restart off (default)"
    return result


def _locate(lab: Lab, vm: str) -> str | None:
    for hv in T.HYPERVISORS:
        if _run(["ip", "-n", lab.ns(hv.name), "link", "show", vm], check=False).returncode == 0:
            return hv.name
    return None


def migrate(lab: Lab, vm: str, dest: str) -> dict[str, float]:
    """Move a lab VM the way a live migration does: the port is added on the
    destination (pending until its tap appears), the VM's link is
    re-attached there, and the port is removed from the source."""
    if vm not in {v.name for v in T.VMS} and _locate(lab, vm) is None:
        raise InputError("lab migrate", [Problem("VM", vm, f"a VM of the lab ({', '.join(v.name for v in T.VMS)})")])
    if dest not in {h.name for h in T.HYPERVISORS}:
        raise InputError("lab migrate", [Problem("HV", dest, "one of hv1, hv2, hv3")])
    src = _locate(lab, vm)
    if src is None:
        raise LabError(f"{vm}: tap not found on any hypervisor")
    if src == dest:
        raise InputError("lab migrate", [Problem("HV", dest, f"a hypervisor other than {src}, where {vm} runs")])
    src_state, dst_state = Path(lab.files(src).state), Path(lab.files(dest).state)
    port = Store(src_state).get_port(vm)
    attachments = [a for a in Store(src_state).list_attachments() if a.port == vm]
    t0 = time.monotonic()
    Store(dst_state).add_ports([port])
    Store(dst_state).add_attachments(attachments, lambda a: [])
    kick(dst_state)
    _run(["ip", "-n", lab.ns(src), "link", "set", vm, "netns", lab.ns(dest)])
    _run(["ip", "-n", lab.ns(dest), "link", "set", vm, "up"])
    for a in attachments:  # the VM's overlay interface moves with it
        _run(["ip", "-n", lab.ns(src), "link", "set", a.interface, "netns", lab.ns(dest)])
        _run(["ip", "-n", lab.ns(dest), "link", "set", a.interface, "up"])
    t1 = time.monotonic()
    Store(src_state).delete_port(vm)
    kick(src_state)
    return {"from": src, "to": dest, "relink_ms": round((t1 - t0) * 1000, 1)}  # type: ignore[dict-item]


def migrate_scenario(lab: Lab) -> dict[str, object]:
    vm2 = _vm("vm2")
    procs = _start(lab, _streams("vm4", ["vm2"], internet=True), 8.0)
    time.sleep(2.0)
    moved = migrate(lab, "vm2", "hv2")
    result = _summary(_collect(procs))
    result["migration"] = moved
    hv1_routes = _run(["ip", "-n", lab.ns("hv1"), "route", "show", "table", "90"]).stdout
    result["stale_local_route_on_hv1"] = f"{vm2.ipv4} dev vm2" in hv1_routes
    hv2 = next(n for n in T.HYPERVISORS if n.name == "hv2")
    expected_hops = {hv2.addr4(s) for s in hv2.segments if s[1] == "pub"}
    hops: set[str] = set()
    for rr in ("rr1", "rr2"):
        out = _bird_text(lab, rr, "show", "route", f"{vm2.ipv4}/32", "table", "t_public4")
        hops |= set(re.findall(r"via (\S+)", out))
    result["rr_next_hops"] = sorted(hops)
    result["stale_route_anywhere"] = bool(result["stale_local_route_on_hv1"]) or not hops <= expected_hops
    migrate(lab, "vm2", "hv1")  # put the lab back
    time.sleep(1.0)
    result["target"] = "gap_ms < 1000 and no stale route"
    result["ok"] = float(result["gap_ms"]) < 1000 and not result["stale_route_anywhere"]  # type: ignore[arg-type]
    return result


def _rx_packets(lab: Lab, vm: str) -> int:
    return int(_run(["ip", "netns", "exec", lab.ns(vm), "cat", "/sys/class/net/eth0/statistics/rx_packets"]).stdout)


def anycast(lab: Lab) -> dict[str, object]:
    streams = [Stream("vm4", T.ANYCAST4), Stream("vm4", T.ANYCAST6),
               Stream("edge", T.ANYCAST4, T.INTERNET4), Stream("edge", T.ANYCAST6, T.INTERNET6)]
    procs = _start(lab, streams, 8.0)
    time.sleep(2.0)
    _run(["ip", "-n", lab.ns("hv1"), "link", "set", "vm1", "down"])  # the anycast VM on hv1 stops
    time.sleep(3.0)
    rx0 = _rx_packets(lab, "vm3")
    time.sleep(2.0)
    rx1 = _rx_packets(lab, "vm3")
    result = _summary(_collect(procs))
    _run(["ip", "-n", lab.ns("hv1"), "link", "set", "vm1", "up"])
    result["vm3_rx_packets_in_2s_after_stop"] = rx1 - rx0
    result["ok"] = (rx1 - rx0) >= 4 * 150 and float(result["gap_ms"]) < 1000  # type: ignore[arg-type]
    result["target"] = "traffic keeps flowing to vm3 (4 streams x 100/s)"
    time.sleep(1.0)
    return result


SCENARIOS: dict[str, Callable[[Lab], dict[str, object]]] = {
    "fabric-down": fabric_down,
    "rr-down": rr_down,
    "hv-down": hv_down,
    "agent-restart": agent_restart,
    "bird-restart": bird_restart,
    "migrate": migrate_scenario,
    "anycast": anycast,
}


def run_scenario(lab: Lab, name: str) -> dict[str, object]:
    if name not in SCENARIOS:
        raise InputError("lab scenario", [Problem("NAME", name, f"one of {', '.join(SCENARIOS)}")])
    if not lab.exists():
        raise LabError(f"lab {lab.name!r} is not up (`hvrouter lab up --name {lab.name}`)")
    try:
        wait_sessions(lab, 30)
    except HvrouterError as exc:
        raise LabError(f"lab {lab.name!r} is not converged before the scenario: {exc}") from None
    result = SCENARIOS[name](lab)
    return {"scenario": name, **result}
