"""One real MP-BGP session with our rendered configs: a route reflector and a
hypervisor in two namespaces joined by a veth (the fabric), each running its
own BIRD. A route hvrouter would install (protocol 211, table 90) must reach
the reflector in both families within a few seconds, with BFD up.

Self-contained: namespaces are `hvbird-<random>-rr/-hv`, removed in a finally
block; the BIRDs are stopped by the PIDs in their pidfiles.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import sh, wait_for

from hvrouter.bird import Birdc, check, install, render
from hvrouter.config import parse_config

HV: dict[str, Any] = {
    "tables": {"public": 90, "private": 20, "local-out": 100},
    "networks": [{"name": "public", "table": "public",
                  "ipv4": {"subnet": "203.0.113.0/24", "gateway": "203.0.113.254"},
                  "ipv6": {"mode": "prefix-per-port", "prefix": "2001:db8:cb00:7100::/56"}}],
    "fabric": {"uplinks": [{"interface": "fa-pub", "table": "public"}]},
    "bgp": {"router_id": "198.51.100.1",
            "peers": [{"name": "rr1_pub", "address": "198.51.100.11", "local": "198.51.100.1",
                       "interface": "fa-pub", "table": "public"}]},
    "bird": {"role": "hypervisor"},
}
RR: dict[str, Any] = {
    "tables": {"public": 90},
    "rules": {"default_table": "public", "local_out_table": None},
    "bgp": {"router_id": "198.51.100.11",
            "clients": [{"name": "hv_pub", "range": "198.51.100.0/26", "local": "198.51.100.11",
                         "table": "public", "cluster_id": "0.0.0.1"}]},
    "bird": {"role": "route-reflector"},
}
V4_ROUTE = "203.0.113.1/32"
V6_ROUTE = "2001:db8:cb00:7101::/64"
V6_ONLINK = "2001:db8:cb00:7102::/64"


def _running(pid: int) -> bool:
    """Alive and not a zombie (bird daemonizes: whoever inherits it reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@dataclass
class Node:
    ns: str
    workdir: Path

    @property
    def conf(self) -> Path:
        return self.workdir / "bird.conf"

    @property
    def sock(self) -> Path:
        return self.workdir / "bird.ctl"

    @property
    def pidfile(self) -> Path:
        return self.workdir / "bird.pid"

    @property
    def birdc(self) -> Birdc:
        return Birdc(self.sock)

    def ip(self, *args: str) -> str:
        return sh("ip", "-n", self.ns, *args).stdout

    def start_bird(self, data: dict[str, Any]) -> None:
        text = render(parse_config(data))
        check(text)
        assert install(self.conf, text)
        sh("ip", "netns", "exec", self.ns, "bird", "-c", str(self.conf), "-s", str(self.sock), "-P", str(self.pidfile))

    def stop_bird(self) -> None:
        try:
            pid = int(self.pidfile.read_text())
        except (FileNotFoundError, ValueError):
            return
        try:
            # Only our bird: the pidfile may be stale and the PID reused.
            if b"bird" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                return
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _running(pid):
                time.sleep(0.05)
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass

    def routes(self, table: str) -> str:
        return "\n".join(ln.text for ln in self.birdc.run("show", "route", "table", table, "all"))


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    suffix = secrets.token_hex(3)
    rr = Node(f"hvbird-{suffix}-rr", tmp_path / "rr")
    hv = Node(f"hvbird-{suffix}-hv", tmp_path / "hv")
    made: list[str] = []
    try:
        for node in (rr, hv):
            node.workdir.mkdir()
            sh("ip", "netns", "add", node.ns)
            made.append(node.ns)
            node.ip("link", "set", "lo", "up")
        hv.ip("link", "add", "fa-pub", "type", "veth", "peer", "name", "hv-a", "netns", rr.ns)
        for node, dev, v4, v6 in ((hv, "fa-pub", "198.51.100.1/26", "2001:db8:a::1/64"),
                                  (rr, "hv-a", "198.51.100.11/26", "2001:db8:a::11/64")):
            node.ip("addr", "add", v4, "dev", dev)
            node.ip("addr", "add", v6, "dev", dev, "nodad")
            node.ip("link", "set", dev, "up")
        yield rr, hv
    finally:
        for node in (hv, rr):
            node.stop_bird()
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _established(node: Node) -> bool:
    sessions = node.birdc.bgp_sessions()
    return bool(sessions) and all(s["bgp_state"] == "Established" for s in sessions)


def _bfd_up(node: Node) -> bool:
    sessions = node.birdc.bfd_sessions()
    return bool(sessions) and all(s["state"] == "Up" for s in sessions)


def _bird_knows_link_local(node: Node, dev: str) -> bool:
    current = ""
    for ln in node.birdc.run("show", "interfaces"):
        if not ln.text.startswith((" ", "\t")):
            current = ln.text.split()[0]  # "tap1 up (index=4)"
        elif current == dev and "fe80::" in ln.text:
            return True
    return False


def test_reflector_learns_hypervisor_routes_in_both_families(pair: tuple[Node, Node]) -> None:
    rr, hv = pair
    rr.start_bird(RR)
    hv.start_bird(HV)
    # BIRD waits 5 s (connect delay) before its first connection attempt.
    wait_for(lambda: _established(hv) and _established(rr), timeout=30, what="BGP Established")
    wait_for(lambda: _bfd_up(hv) and _bfd_up(rr), timeout=10, what="BFD up")

    # A tap whose link-local address BIRD already knows (a running VM).
    hv.ip("link", "add", "tap1", "type", "veth", "peer", "name", "vm1")
    hv.ip("link", "set", "vm1", "up")
    hv.ip("link", "set", "tap1", "up")
    wait_for(lambda: _bird_knows_link_local(hv, "tap1"), timeout=10, what="BIRD sees tap1's link-local")

    hv.ip("route", "add", V4_ROUTE, "dev", "tap1", "scope", "link", "proto", "211", "table", "90")
    hv.ip("-6", "route", "add", V6_ROUTE, "via", "fe80::5054:ff:fe00:1", "dev", "tap1",
          "proto", "211", "table", "90", "metric", "1024")
    # hvrouter's unreachable defaults carry its protocol too: never announced.
    hv.ip("route", "add", "unreachable", "0.0.0.0/0", "proto", "211", "table", "90", "metric", "4294967295")
    hv.ip("-6", "route", "add", "unreachable", "::/0", "proto", "211", "table", "90", "metric", "4294967295")
    wait_for(lambda: V4_ROUTE in rr.routes("t_public4") and V6_ROUTE in rr.routes("t_public6"),
             timeout=8, what="the reflector learning both routes")
    # Learned from netlink notifications: the wait above is bounded below
    # BIRD's 10 s kernel scan, with room for a loaded machine.

    v4, v6 = rr.routes("t_public4"), rr.routes("t_public6")
    assert "BGP.next_hop: 198.51.100.1" in v4
    # IPv6 over the IPv4 session: next hop self is the global IPv6 address of
    # the session's interface (plus its link-local).
    # The global address of the session interface (its link-local follows
    # once the interface's own DAD is over; not needed on a direct session).
    assert "BGP.next_hop: 2001:db8:a::1" in v6
    assert "0.0.0.0/0" not in v4 and "::/0" not in v6

    # A fresh tap without a link-local address yet (VM not running): BIRD
    # learns an `onlink` route at once.
    hv.ip("link", "add", "tap2", "type", "veth", "peer", "name", "vm2")
    hv.ip("link", "set", "tap2", "up")
    hv.ip("-6", "route", "add", V6_ONLINK, "via", "fe80::5054:ff:fe00:2", "dev", "tap2",
          "proto", "211", "table", "90", "metric", "1024", "onlink")
    wait_for(lambda: V6_ONLINK in rr.routes("t_public6"), timeout=3, what="the onlink route at the reflector")

    # local-out: our routes copied by BIRD (its own protocol, not ours).
    local_out = hv.ip("route", "show", "table", "100")
    assert "203.0.113.1 dev tap1 proto bird" in local_out
    assert V6_ROUTE.removesuffix("/64") in hv.ip("-6", "route", "show", "table", "100")

    (session,) = rr.birdc.bgp_sessions()
    assert session["name"] == "hv_pub_1"
    assert session["channels"]["ipv4"]["imported"] == 1
    assert session["channels"]["ipv6"]["imported"] == 2

    # Withdrawal follows the kernel as quickly.
    hv.ip("route", "del", V4_ROUTE, "table", "90", "proto", "211")
    wait_for(lambda: V4_ROUTE not in rr.routes("t_public4"), timeout=3, what="withdrawal at the reflector")
