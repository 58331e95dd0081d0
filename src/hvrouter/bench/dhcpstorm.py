"""`hvrouter bench dhcp`: a boot storm of N VMs against hvrouter's responder,
then against dnsmasq on the same taps with the same bindings.

Setup (not timed): a hypervisor namespace with N taps (veth), the VM ends in a
clients namespace with the ports' MACs, N ports (IPv4 only: the storm is
DHCPv4). Run 1: `hvrouter daemon` serves them. Run 2: the daemon is stopped,
each tap gets the gateway as a /16 (dnsmasq answers only on interfaces with
an address in the range's network) and dnsmasq runs with one `dhcp-host`
line per port. Each run: every client sends DISCOVER within 100 ms, answers
its OFFER with a REQUEST; measured: time until all hold an ACK, and
DISCOVER→OFFER latency p50/p99.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path

from ..config import parse_config
from ..model import Port
from ..store import Store

GW = "198.18.255.254"
BASE = int(IPv4Address("198.18.0.1"))
CONFIG = f"""
firewall: {{enabled: false}}
networks:
  - name: bench
    table: public
    ipv4: {{subnet: 198.18.0.0/16, gateway: {GW}}}
    services: {{dns: [192.0.2.53], domain: example.net, lease_time: 3600}}
"""


def _batch(ns: str, lines: list[str]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".ip", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    try:
        subprocess.run(["ip", "-n", ns, "-batch", f.name], check=True, capture_output=True)
    finally:
        os.unlink(f.name)


def _mac(i: int) -> str:
    return f"52:54:00:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"


def _storm(ns: str, n: int) -> dict[str, object]:
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "hvrouter.bench.dhcpclients", str(n),
                          "0.1", "20"], capture_output=True, text=True, timeout=120, check=True)
    return dict(json.loads(out.stdout))


def _wait_routes(ns: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ip", "-n", ns, "route", "show", "table", "90", "proto", "211"],
                             capture_output=True, text=True).stdout
        if out.count(" dev t") >= n:
            return
        time.sleep(0.2)
    raise RuntimeError(f"hvrouter did not program {n} ports within {timeout} s")


def run_dhcp_bench(n: int) -> dict[str, object]:
    tag = f"hvd{secrets.token_hex(3)}"
    hv, cl = f"{tag}-hv", f"{tag}-cl"
    work = Path(tempfile.mkdtemp(prefix=f"{tag}-"))
    made: list[str] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for ns in (hv, cl):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            made.append(ns)
        subprocess.run(["ip", "netns", "exec", cl, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"], check=True)
        _batch(hv, [f"link add t{i} up type veth peer name v{i} address {_mac(i)} netns {cl}" for i in range(n)])
        _batch(cl, [f"link set v{i} up" for i in range(n)])
        (work / "hvrouter.yaml").write_text(CONFIG)
        cfg = parse_config(__import__("yaml").safe_load(CONFIG))
        ports = [Port(f"t{i}", _mac(i), "bench", (str(IPv4Address(BASE + i)),)) for i in range(n)]
        Store(work / "state").add_ports(ports, cfg)

        daemon = subprocess.Popen(
            ["ip", "netns", "exec", hv, sys.executable, "-m", "hvrouter", "--config", str(work / "hvrouter.yaml"),
             "--state-dir", str(work / "state"), "--log-level", "warning", "daemon"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(daemon)
        _wait_routes(hv, n)
        time.sleep(1.0)  # the responder's port table follows the pass that programmed them
        hvrouter = _storm(cl, n)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)

        # dnsmasq needs an address of the range's network on the interface.
        _batch(hv, [f"addr del {GW}/32 dev t{i}" for i in range(n)])
        _batch(hv, [f"addr add {GW}/16 dev t{i}" for i in range(n)])
        hosts = work / "dnsmasq.hosts"
        hosts.write_text("".join(f"{p.mac},{p.ipv4[0]}\n" for p in ports))
        dnsmasq = subprocess.Popen(
            ["ip", "netns", "exec", hv, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
             "--dhcp-range=198.18.0.0,static,255.255.0.0,3600", f"--dhcp-hostsfile={hosts}",
             "--dhcp-authoritative", "--dhcp-option=option:dns-server,192.0.2.53", "--except-interface=lo",
             f"--dhcp-leasefile={work / 'dnsmasq.leases'}", f"--pid-file={work / 'dnsmasq.pid'}",
             f"--log-facility={work / 'dnsmasq.log'}", "--dhcp-lease-max=100000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(dnsmasq)
        time.sleep(1.5)
        reference = _storm(cl, n)
        return {
            "ports": n,
            "hvrouter": hvrouter,
            "dnsmasq": reference,
            "targets": {"all_bound_s": 2.0, "offer_p99_ms": 50.0},
        }
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["rm", "-rf", str(work)])
