"""`hvrouter lab ...`: build, inspect and remove the seed lab.

Everything the lab makes is recorded in /run/hvrouter-lab/<name>/lab.json as
it is made, so `lab down` can undo a crashed or half-finished `lab up`; it
also removes any namespace named `<name>-<node>` for the lab's node names,
stopping the processes inside by PID first (`ip netns pids`). The topology is
built with `ip -batch` scripts (commands only, nothing parsed).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import HvrouterError, InputError, Problem
from . import topology as T

LAB_ROOT = Path(os.environ.get("HVROUTER_LAB_ROOT", "/run/hvrouter-lab"))
DEFAULT_NAME = "hvlab"


class LabError(HvrouterError):
    exit_code = 1


def _run(args: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise LabError(f"{' '.join(args)}: exit {out.returncode}: {out.stderr.strip() or out.stdout.strip()}")
    return out


def _batch(ns: str | None, lines: list[str]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".ip", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    try:
        _run(["ip", *(["-n", ns] if ns else []), "-batch", f.name])
    finally:
        os.unlink(f.name)


def _ns_exists(ns: str) -> bool:
    return Path("/run/netns", ns).exists()


@dataclass
class Lab:
    name: str

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 12 or not self.name.replace("-", "").isalnum():
            raise InputError("lab", [Problem("--name", self.name, "1-12 letters, digits or '-'")])

    @property
    def dir(self) -> Path:
        return LAB_ROOT / self.name

    @property
    def record_path(self) -> Path:
        return self.dir / "lab.json"

    def ns(self, node: str) -> str:
        return f"{self.name}-{node}"

    def files(self, node: str) -> T.HostFiles:
        return T.HostFiles(str(self.dir), node)

    # -- record ---------------------------------------------------------------

    def _record(self) -> dict[str, object]:
        try:
            data = json.loads(self.record_path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _note(self, key: str, value: str) -> None:
        rec = self._record()
        items = rec.setdefault(key, [])
        assert isinstance(items, list)
        if value not in items:
            items.append(value)
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, indent=1))
        tmp.replace(self.record_path)

    def exists(self) -> bool:
        return self.record_path.exists() or any(_ns_exists(self.ns(n)) for n in T.NODE_NAMES)

    # -- up -------------------------------------------------------------------

    def up(self, timeout: float = 120.0) -> dict[str, object]:
        if self.exists():
            raise LabError(f"lab {self.name!r} already exists: `hvrouter lab check --name {self.name}` to use it, "
                           f"`hvrouter lab down --name {self.name}` to remove it")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.record_path.write_text(json.dumps({"name": self.name, "namespaces": [], "created": time.time()}))
        try:
            self._build()
            self._start()
            return self.wait_converged(timeout)
        except BaseException:
            print(f"lab up failed; `hvrouter lab down --name {self.name}` removes what was made", file=sys.stderr)
            raise

    def _add_ns(self, node: str) -> str:
        ns = self.ns(node)
        self._note("namespaces", ns)
        _run(["ip", "netns", "add", ns])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return ns

    def _build(self) -> None:
        for node in T.NODE_NAMES:
            self._add_ns(node)
        for fabric in T.FABRICS:
            _batch(self.ns(f"fabric-{fabric}"), [
                "link add brpub type bridge", "link add brpriv type bridge",
                "link set brpub up", "link set brpriv up",
            ])
        for node in T.ROUTERS:
            node_cmds: list[str] = []
            for seg_key in node.segments:
                seg = T.SEGMENTS[seg_key]
                port = f"{node.name}-{seg.kind}"
                _batch(self.ns(f"fabric-{seg.fabric}"), [
                    f"link add {port} type veth peer name {seg.ifname} netns {self.ns(node.name)}",
                    f"link set {port} master {seg.bridge}",
                    f"link set {port} up",
                ])
                node_cmds += [
                    f"addr add {node.addr4(seg_key)}/{seg.v4_len} dev {seg.ifname}",
                    f"addr add {node.addr6(seg_key)}/64 dev {seg.ifname} nodad",
                    f"link set {seg.ifname} up",
                ]
            if node.role == "edge":
                node_cmds += [f"addr add {T.INTERNET4}/32 dev lo", f"addr add {T.INTERNET6}/128 dev lo"]
            _batch(self.ns(node.name), node_cmds)
        edge = self.ns("edge")
        _run(["ip", "netns", "exec", edge, "sysctl", "-qw", "net.ipv4.ip_forward=1",
              "net.ipv6.conf.all.forwarding=1"])
        for vm in T.VMS:
            # The VMs configure themselves (DHCP, SLAAC) once the agents run.
            ns = self.attach_vm(vm.name, vm.hv, vm.mac)
            if vm.anycast:
                # The VM holds the anycast addresses itself, on its loopback.
                _batch(ns, [f"addr add {T.ANYCAST4}/32 dev lo", f"addr add {T.ANYCAST6}/128 dev lo"])

    def attach_vm(self, name: str, hv: str, mac: str, ipv4: str | None = None, ipv6: str | None = None) -> str:
        """A VM namespace `<lab>-<name>` whose eth0 is tap `name` on `hv`;
        with addresses, configured statically, else left to DHCP/SLAAC."""
        ns = self.ns(name)
        if not _ns_exists(ns):
            self._add_ns(name)
        # A new eth0 copies "default": solicit routers at once, and skip DAD
        # (addresses are unique by construction), so SLAAC is done in ms.
        _run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.router_solicitation_delay=0",
              "net.ipv6.conf.default.accept_dad=0"])
        cmds = [f"link add eth0 address {mac} type veth peer name {name} netns {self.ns(hv)}", "link set eth0 up"]
        vm = next((v for v in T.VMS if v.name == name), None)
        if vm is not None:  # the second interface, on the VXLAN overlay
            cmds += [
                f"link add eth1 address {vm.ov_mac} mtu 1450 type veth peer name {vm.ov_tap} netns {self.ns(hv)}",
                "link set eth1 up",
                f"addr add {vm.ov_ipv4}/24 dev eth1",
                f"addr add {vm.ov_ipv6}/64 dev eth1 nodad",
            ]
        if ipv4:
            cmds += [f"addr add {ipv4}/24 dev eth0", f"route add default via {T.VM_GATEWAY}"]
        if ipv6:
            cmds += [f"addr add {ipv6}/64 dev eth0 nodad", "route add ::/0 via fe80::1 dev eth0"]
        _batch(ns, cmds)
        _run(["ip", "-n", self.ns(hv), "link", "set", name, "up"])
        if vm is not None:
            _run(["ip", "-n", self.ns(hv), "link", "set", vm.ov_tap, "mtu", "1450", "up"])
        return ns

    def _write_config(self, node: T.Node) -> T.HostFiles:
        files = self.files(node.name)
        Path(files.dir).mkdir(parents=True, exist_ok=True)
        builder = {"hypervisor": T.hv_config, "route-reflector": T.rr_config, "edge": T.edge_config}[node.role]
        Path(files.config).write_text(yaml.safe_dump(builder(node, files), sort_keys=False))
        return files

    def _start(self) -> None:
        from ..bird import check, install, render
        from ..config import load_config

        self._write_bin()
        for node in (*T.RRS, T.EDGE):
            files = self._write_config(node)
            cfg = load_config(Path(files.config))
            text = render(cfg)
            check(text)
            install(Path(files.bird_conf), text)
            _run(["ip", "netns", "exec", self.ns(node.name), "bird", "-c", files.bird_conf,
                  "-s", files.bird_sock, "-P", files.bird_pid])
        for node in T.HYPERVISORS:
            files = self._write_config(node)
            self.start_daemon(node.name)
        for vm in T.VMS:
            extra = ["--extra", f"{T.ANYCAST4}/32", "--extra", T.ANYCAST6_PREFIX] if vm.anycast else []
            for addr in vm.nat:
                extra += ["--nat", addr]
            self.hvrouter(vm.hv, "port", "add", vm.name, "--mac", vm.mac, "--network", "public",
                          "--ipv4", vm.ipv4, "--ipv6", vm.prefix6, *extra)
            self.hvrouter(vm.hv, "overlay", "attach", vm.ov_tap, "--network", str(T.OVERLAY["name"]),
                          "--mac", vm.ov_mac, "--address", vm.ov_ipv4, "--address", vm.ov_ipv6, "--port", vm.name)
        for vm in T.VMS:
            self.start_dhcp_clients(vm.name)

    def start_dhcp_clients(self, vm: str) -> None:
        """ISC dhclient for IPv4 and for IPv6 information (-S), as the seed's
        VMs do; SLAAC is the kernel's own. Our script keeps dhclient inside
        the VM namespace and away from the machine's resolv.conf."""
        from importlib import resources

        vm_dir = self.dir / vm
        vm_dir.mkdir(parents=True, exist_ok=True)
        script = vm_dir / "dhclient-script"
        text = resources.files("hvrouter.lab").joinpath("data/dhclient-script").read_text()
        script.write_text(text.replace("@DIR@", str(vm_dir)))
        script.chmod(0o755)
        conf = vm_dir / "dhclient.conf"
        conf.write_text(resources.files("hvrouter.lab").joinpath("data/dhclient.conf").read_text())
        for fam in ("4", "6"):
            args = ["dhclient", f"-{fam}", "-nw", "-cf", str(conf), "-lf", str(vm_dir / f"dhclient{fam}.leases"),
                    "-pf", str(vm_dir / f"dhclient{fam}.pid"), "-sf", str(script)]
            if fam == "6":
                args.append("-S")
            _run(["ip", "netns", "exec", self.ns(vm), *args, "eth0"])

    def start_daemon(self, hv: str) -> int:
        files = self.files(hv)
        log = open(Path(files.dir) / "daemon.log", "a")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(hv), sys.executable, "-m", "hvrouter", "--config", files.config,
             "--state-dir", files.state, "daemon"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        self._note("daemons", f"{hv}:{proc.pid}")
        return proc.pid

    def _write_bin(self) -> None:
        """`lab exec` puts this first in PATH: birdc talks to the node's BIRD."""
        bindir = self.dir / "bin"
        bindir.mkdir(exist_ok=True)
        wrapper = bindir / "birdc"
        wrapper.write_text('#!/bin/sh\nexec /usr/sbin/birdc -s "$HVLAB_BIRD_SOCKET" "$@"\n')
        wrapper.chmod(0o755)

    def env(self, node: str) -> dict[str, str]:
        files = self.files(node)
        venv_bin = str(Path(sys.executable).parent)
        return {
            **os.environ,
            "PATH": f"{self.dir / 'bin'}:{venv_bin}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
            "HVROUTER_CONFIG": files.config,
            "HVROUTER_STATE_DIR": files.state,
            "HVLAB_BIRD_SOCKET": files.bird_sock,
            "HVLAB_NODE": node,
        }

    def hvrouter(self, node: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        files = self.files(node)
        return _run(["ip", "netns", "exec", self.ns(node), sys.executable, "-m", "hvrouter",
                     "--config", files.config, "--state-dir", files.state, *args], check=check)

    def exec(self, node: str, cmd: list[str]) -> int:
        if node not in T.NODE_NAMES and not _ns_exists(self.ns(node)):
            raise InputError("lab exec", [Problem("NODE", node, f"one of {', '.join(T.NODE_NAMES)}")])
        if not _ns_exists(self.ns(node)):
            raise LabError(f"lab {self.name!r} has no node {node} (is the lab up?)")
        if not cmd:
            raise InputError("lab exec", [Problem("CMD", "", "a command after --")])
        return subprocess.call(["ip", "netns", "exec", self.ns(node), *cmd], env=self.env(node))

    # -- check ------------------------------------------------------------------

    def _ping(self, src: str, dst: str, source_addr: str | None) -> tuple[bool, float | None]:
        args = ["ip", "netns", "exec", self.ns(src), "ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1"]
        if source_addr:
            args += ["-I", source_addr]
        out = subprocess.run([*args, dst], capture_output=True, text=True, timeout=30)
        rtt = None
        for line in out.stdout.splitlines():
            if "min/avg/max" in line:
                rtt = float(line.split("=")[1].split("/")[1])
        return out.returncode == 0, rtt

    def bgp(self) -> dict[str, dict[str, int]]:
        from ..bird import Birdc

        out: dict[str, dict[str, int]] = {}
        for node in T.ROUTERS:
            sock = Path(self.files(node.name).bird_sock)
            try:
                sessions = Birdc(sock).bgp_sessions()
            except HvrouterError:
                sessions = []
            out[node.name] = {
                "sessions": len(sessions),
                "sessions_up": sum(1 for s in sessions if s.get("bgp_state") == "Established"),
            }
        return out

    def vm_config(self, vm: T.Vm) -> dict[str, bool]:
        """What the VM configured itself from DHCP and router advertisements."""
        ns = self.ns(vm.name)

        def ip(*args: str) -> str:
            return _run(["ip", "-n", ns, *args], check=False).stdout

        def lease(fam: str) -> dict[str, str]:
            path = self.dir / vm.name / f"dhcp{fam}"
            try:
                return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
            except OSError:
                return {}

        v6 = ip("-6", "addr", "show", "dev", "eth0", "scope", "global")
        d4, d6 = lease("4"), lease("6")
        return {
            "ipv4_address": f"inet {vm.ipv4}/24 " in ip("-4", "addr", "show", "dev", "eth0"),
            "ipv4_default_route": f"default via {T.VM_GATEWAY} " in ip("-4", "route", "show", "default"),
            "ipv4_dns": d4.get("dns", "").split() == [T.INTERNET4] and d4.get("domain") == T.DOMAIN,
            "ipv6_address": f"inet6 {vm.ipv6}/64 " in v6 and "tentative" not in v6,
            "ipv6_default_route": "default via fe80::1 " in ip("-6", "route", "show", "default"),
            "ipv6_dns": d6.get("dns", "").split() == [T.INTERNET6] and T.DOMAIN in d6.get("search", ""),
        }

    def check(self) -> dict[str, object]:
        jobs = []
        sources = [(vm.name, None) for vm in T.VMS] + [("edge", "internet")]
        for src, kind in sources:
            for dst in T.VMS:
                if dst.name == src:
                    continue
                jobs.append((src, kind, dst, "ipv4", dst.ipv4, T.INTERNET4 if kind else None))
                jobs.append((src, kind, dst, "ipv6", dst.ipv6, T.INTERNET6 if kind else None))
        overlay_jobs = [
            (src.name, dst.name, fam, addr)
            for src in T.VMS for dst in T.VMS if src != dst
            for fam, addr in (("ipv4", dst.ov_ipv4), ("ipv6", dst.ov_ipv6))
        ]
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(lambda j: self._ping(j[0], j[4], j[5]), jobs))
            ov_results = list(pool.map(lambda j: self._ping(j[0], j[3], None), overlay_jobs))
        overlay = [
            {"src": src, "dst": dst, "family": fam, "ok": ok, "rtt_ms": rtt}
            for (src, dst, fam, _a), (ok, rtt) in zip(overlay_jobs, ov_results, strict=True)
        ]
        pairs = [
            {"src": "internet" if kind else src, "dst": dst.name, "family": fam, "ok": ok,
             "rtt_ms": rtt}
            for (src, kind, dst, fam, _a, _s), (ok, rtt) in zip(jobs, results, strict=True)
        ]
        bgp = self.bgp()
        vms = {vm.name: self.vm_config(vm) for vm in T.VMS}
        ok = (
            all(p["ok"] for p in pairs)
            and all(p["ok"] for p in overlay)
            and all(v["sessions"] > 0 and v["sessions"] == v["sessions_up"] for v in bgp.values())
            and all(all(flags.values()) for flags in vms.values())
        )
        return {"ok": ok, "pairs": pairs, "overlay": overlay, "bgp": bgp, "vms": vms}

    def wait_converged(self, timeout: float) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        result = self.check()
        while not result["ok"] and time.monotonic() < deadline:
            time.sleep(1.0)
            result = self.check()
        return result

    # -- status / down ------------------------------------------------------------

    def status(self) -> dict[str, object]:
        nodes = {}
        for node in T.NODE_NAMES:
            ns = self.ns(node)
            pids = _run(["ip", "netns", "pids", ns], check=False).stdout.split() if _ns_exists(ns) else []
            nodes[node] = {"namespace": ns if _ns_exists(ns) else None, "processes": len(pids)}
        return {"name": self.name, "exists": self.exists(), "nodes": nodes,
                "bgp": self.bgp() if self.exists() else {}}

    def down(self) -> list[str]:
        rec = self._record()
        names = {str(n) for n in rec.get("namespaces", [])} if isinstance(rec.get("namespaces"), list) else set()
        names |= {self.ns(n) for n in T.NODE_NAMES}
        removed = []
        for ns in sorted(names):
            if not _ns_exists(ns):
                continue
            self._stop_processes(ns)
            _run(["ip", "netns", "del", ns], check=False)
            removed.append(ns)
        shutil.rmtree(self.dir, ignore_errors=True)
        return removed

    @staticmethod
    def _stop_processes(ns: str) -> None:
        """Stop what runs in one of our namespaces (bird, our daemon), by PID."""
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            pids = [int(p) for p in _run(["ip", "netns", "pids", ns], check=False).stdout.split()]
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _run(["ip", "netns", "pids", ns], check=False).stdout.strip():
                time.sleep(0.05)


def render_matrix(result: dict[str, object]) -> str:
    pairs = result["pairs"]
    assert isinstance(pairs, list)
    srcs = [vm.name for vm in T.VMS] + ["internet"]
    lines = ["src \\ dst  " + "".join(f"{vm.name:>16}" for vm in T.VMS)]
    for src in srcs:
        cells = []
        for vm in T.VMS:
            fams = [p for p in pairs if p["src"] == src and p["dst"] == vm.name]
            if not fams:
                cells.append(f"{'-':>16}")
                continue
            txt = "/".join(("ok" if p["ok"] else "FAIL") for p in sorted(fams, key=lambda p: p["family"]))
            cells.append(f"{txt + ' (v4/v6)':>16}")
        lines.append(f"{src:<11}" + "".join(cells))
    bgp = result["bgp"]
    assert isinstance(bgp, dict)
    lines.append("")
    lines.append("BGP sessions up: " + "  ".join(f"{n} {v['sessions_up']}/{v['sessions']}" for n, v in bgp.items()))
    vms = result.get("vms", {})
    assert isinstance(vms, dict)
    for name, flags in vms.items():
        bad = [k for k, v in flags.items() if not v]
        state = "ok" if not bad else "MISSING " + ", ".join(bad)
        lines.append(f"{name} self-configuration (DHCPv4, SLAAC, DHCPv6 info): {state}")
    overlay = result.get("overlay", [])
    assert isinstance(overlay, list)
    if overlay:
        good = sum(1 for p in overlay if p["ok"])
        bad = [f"{p['src']}->{p['dst']} {p['family']}" for p in overlay if not p["ok"]]
        lines.append(f"VXLAN overlay (VMs' eth1, VNI {T.OVERLAY['vni']}): {good}/{len(overlay)} pings ok"
                     + (f"; FAILED {', '.join(bad)}" if bad else ""))
    lines.append("lab check: " + ("OK" if result["ok"] else "FAILED"))
    return "\n".join(lines)
