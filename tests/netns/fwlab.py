"""A hypervisor with two VMs and two uplinks, in namespaces, for the firewall
tests. Namespaces are named <prefix>-<random>-<role> (hvfw for the policy
tests, hvas for the anti-spoofing ones); `lab()` removes them and stops the
processes it started, by PID, even when the test fails.

    peer (198.18.15.2, 2001:db8:f0::2)       peer2 (198.18.15.10, 2001:db8:f1::2)
            | eth0                                   | eth0
            | up0 198.18.15.1                        | up1 198.18.15.9
            +--------------------- hv ---------------+
                    | vm1 (tap)             | vm2 (tap)
                    | eth0                  | eth0
    vm1: 203.0.113.4, 2001:db8:cb00:7101::/64   vm2: 2001:db8:5a::5 only (no IPv4
         NAT 203.0.113.11 (public network)           yet: a DHCP client); NAT
                                                     2001:db8:5a:ff::11 (shared)

The routes a fabric would bring (BIRD in production) are added to table 90
by hand; everything else is programmed by `hvrouter reconcile --once`.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conftest import Host, sh, wait_for

from hvrouter.config import Config, load_config
from hvrouter.firewall import counters, render
from hvrouter.firewall import sync as fw_sync
from hvrouter.model import Port
from hvrouter.store import Store

TOOL = str(Path(__file__).with_name("fwtool.py"))
MAC1, MAC2 = "52:54:00:00:00:01", "52:54:00:00:00:02"
VM1_V4, VM1_V6, VM1_NAT = "203.0.113.4", "2001:db8:cb00:7101:5054:ff:fe00:1", "203.0.113.11"
VM2_V6, VM2_NAT6 = "2001:db8:5a::5", "2001:db8:5a:ff::11"
GW4 = "203.0.113.254"
HV_UP0, PEER, HV_UP1, PEER2 = "198.18.15.1", "198.18.15.2", "198.18.15.9", "198.18.15.10"
HV_UP0_V6, PEER_V6, PEER2_V6 = "2001:db8:f0::1", "2001:db8:f0::2", "2001:db8:f1::2"

CONFIG = """
# The tests apply the table themselves, to see the kernel without it first.
firewall: {enabled: false}
rtproto: 211
tables: {public: 90, private: 20, local-out: 100}
rules: {priority: 20000}
networks:
  - name: public
    table: public
    ipv4: {subnet: 203.0.113.0/24, gateway: 203.0.113.254}
    ipv6: {mode: prefix-per-port, prefix: "2001:db8:cb00:7100::/56"}
  - name: shared
    table: public
    ipv4: {subnet: 198.51.100.0/24, gateway: 198.51.100.254}
    ipv6: {mode: shared-prefix, prefix: "2001:db8:5a::/64"}
fabric:
  uplinks:
    - {interface: up0, table: public}
    - {interface: up1, table: public}
"""


def ns_exec(ns: str, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *cmd, check=check, timeout=timeout)


def no_dad(ns: str) -> None:
    """Addresses usable at once: a tentative link-local answers no neighbour
    solicitation, and IPv6 routes to VMs go via their link-local address."""
    ns_exec(ns, "sh", "-c", "for i in all default; do echo 0 > /proc/sys/net/ipv6/conf/$i/accept_dad; done")


@dataclass
class FwLab:
    host: Host
    vm1: str
    vm2: str
    peer: str
    peer2: str

    @property
    def hv(self) -> str:
        return self.host.ns

    @property
    def nft(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.hv, "nft")

    def cfg(self) -> Config:
        return load_config(self.host.config)

    def ports(self) -> list[Port]:
        store = Store(self.host.state)
        try:
            return store.list_ports()
        finally:
            store.close()

    def render(self) -> str:
        return render(self.cfg(), self.ports())

    def firewall(self) -> None:
        assert fw_sync(self.cfg(), self.ports(), nft=self.nft)

    # -- traffic --------------------------------------------------------------

    def tool(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return ns_exec(ns, sys.executable, TOOL, *args, check=check)

    def listen(self, ns: str, log: Path, tcp: tuple[int, ...] = (), udp: tuple[int, ...] = ()) -> Path:
        out = open(log, "w")  # noqa: SIM115 - owned by the process, closed by the OS when it is killed
        cmd = ["ip", "netns", "exec", ns, sys.executable, TOOL, "listen",
               "--tcp", *map(str, tcp), "--udp", *map(str, udp)]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
        self.host.procs.append(proc)  # stopped by PID in the fixture's teardown
        wait_for(lambda: "ready" in log.read_text() or proc.poll() is not None, what=f"listener in {ns}")
        assert proc.poll() is None, log.read_text()
        return log

    def connects(self, ns: str, *targets: tuple[str, int], timeout: float = 1.0) -> dict[tuple[str, int], bool]:
        out = self.tool(ns, "tcp", *(f"{h},{p}" for h, p in targets), "--timeout", str(timeout))
        got = json.loads(out.stdout)
        return {(h, p): got[f"{h},{p}"] for h, p in targets}

    def send_udp(self, ns: str, host: str, port: int, *extra: str) -> None:
        self.tool(ns, "udp", host, str(port), *extra)

    def ping(self, ns: str, dst: str, *extra: str, timeout: int = 1) -> str:
        """ping's output when answered, "" when not."""
        out = ns_exec(ns, "ping", "-n", "-c", "1", "-W", str(timeout), *extra, dst, check=False)
        return out.stdout if out.returncode == 0 else ""

    # -- the table ------------------------------------------------------------

    def counter(self, chain: str, comment: str, family: str = "inet") -> int:
        """Packets counted by the rule of `chain` whose comment starts with `comment`."""
        out = sh(*self.nft, "-j", "list", "chain", family, "hvrouter", chain).stdout
        rules = [item["rule"] for item in json.loads(out)["nftables"] if "rule" in item]
        found = [r for r in rules if r.get("comment", "").startswith(comment)]
        assert len(found) == 1, f"{chain}: {len(found)} rules with a comment starting {comment!r}"
        return sum(e["counter"]["packets"] for e in found[0]["expr"] if "counter" in e)

    def drops(self) -> dict[str, int]:
        """Spoofing drops per port (packets), as `hvrouter status` reads them."""
        return {port: c["packets"] for port, c in counters(nft=self.nft).items()}

    def neigh(self) -> list[str]:
        """The hypervisor's IPv4 neighbour entries: "ADDRESS DEVICE LLADDR"."""
        out = json.loads(self.host.ip("-j", "-4", "neigh", "show"))
        return sorted(f"{n['dst']} {n['dev']} {n.get('lladdr', '-')}" for n in out)

    def route_dev(self, dst: str) -> str:
        """The device the hypervisor routes `dst` to (`ip route get`)."""
        out = json.loads(self.host.ip("-j", "route", "get", dst))
        return str(out[0].get("dev", ""))


def build(host: Host) -> FwLab:
    hv = host.ns
    sh("ip", "netns", "add", hv)
    host.made.append(hv)
    host.ip("link", "set", "lo", "up")
    no_dad(hv)
    peer, peer2 = host.add_ns("peer"), host.add_ns("peer2")
    for ns, up, hv_addr, addr, hv6, addr6 in (
        (peer, "up0", HV_UP0, PEER, HV_UP0_V6, PEER_V6),
        (peer2, "up1", HV_UP1, PEER2, "2001:db8:f1::1", PEER2_V6),
    ):
        no_dad(ns)
        host.ip("link", "add", up, "type", "veth", "peer", "name", "eth0", "netns", ns)
        host.ip("addr", "add", f"{hv_addr}/29", "dev", up)
        host.ip("addr", "add", f"{hv6}/64", "dev", up, "nodad")
        host.ip("link", "set", up, "up")
        sh("ip", "-n", ns, "addr", "add", f"{addr}/29", "dev", "eth0")
        sh("ip", "-n", ns, "addr", "add", f"{addr6}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
    for dst in ("203.0.113.0/24", "198.51.100.0/24", "198.18.15.8/29"):
        sh("ip", "-n", peer, "route", "add", dst, "via", HV_UP0)
    for dst in ("2001:db8:cb00:7100::/56", "2001:db8:5a::/48", "2001:db8:f1::/64"):
        sh("ip", "-n", peer, "-6", "route", "add", dst, "via", HV_UP0_V6)
    sh("ip", "-n", peer2, "route", "add", "default", "via", HV_UP1)
    sh("ip", "-n", peer2, "-6", "route", "add", "default", "via", "2001:db8:f1::1")

    vms = []
    for tap, mac in (("vm1", MAC1), ("vm2", MAC2)):
        vm = host.add_ns(tap)
        no_dad(vm)
        sh("ip", "-n", vm, "link", "add", "eth0", "address", mac, "type", "veth", "peer", "name", tap, "netns", hv)
        sh("ip", "-n", vm, "link", "set", "eth0", "up")
        host.ip("link", "set", tap, "up")
        vms.append(vm)
    vm1, vm2 = vms
    sh("ip", "-n", vm1, "addr", "add", f"{VM1_V4}/24", "dev", "eth0")
    sh("ip", "-n", vm1, "route", "add", "default", "via", GW4)
    for vm, addr in ((vm1, VM1_V6), (vm2, VM2_V6)):
        sh("ip", "-n", vm, "addr", "add", f"{addr}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", vm, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")

    host.config.write_text(CONFIG)
    host.hvrouter("port", "add", "vm1", "--mac", MAC1, "--network", "public", "--ipv4", VM1_V4,
                  "--ipv6", "2001:db8:cb00:7101::/64", "--nat", VM1_NAT)
    host.hvrouter("port", "add", "vm2", "--mac", MAC2, "--network", "shared", "--ipv4", "198.51.100.5",
                  "--ipv6", VM2_V6, "--nat", VM2_NAT6)
    host.hvrouter("reconcile", "--once")
    # What BIRD would bring: the fabric's routes in the table VMs use.
    for dst, dev in (("198.18.15.0/29", "up0"), ("198.18.15.8/29", "up1"),
                     ("2001:db8:f0::/64", "up0"), ("2001:db8:f1::/64", "up1")):
        host.ip("route", "add", dst, "dev", dev, "table", "90")
    return FwLab(host, vm1, vm2, peer, peer2)


@contextmanager
def lab(tmp_path: Path, prefix: str) -> Iterator[FwLab]:
    """A lab in namespaces <prefix>-<random>-<role>, removed afterwards,
    whatever happened; the processes it started are stopped by PID."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    host = Host(ns=f"{name}-hv", prefix=name, workdir=tmp_path)
    try:
        yield build(host)
    finally:
        for proc in host.procs:
            host.stop(proc, signal.SIGKILL)
        for ns in reversed(host.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def settle(seconds: float = 0.2) -> None:
    """Give datagrams that were going to arrive the time to do so, before
    asserting that one did not. Not a measurement."""
    time.sleep(seconds)
