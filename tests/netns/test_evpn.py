"""Mode evpn end to end: FRR (zebra + bgpd) on two VTEPs and a route
reflector, each in its own namespace, with our rendered configs.

Underlay: namespace `core` routes between the /32 loopbacks (198.19.0.x) of
v1, v2 and rr over /31 veth links (198.19.1.x). Overlay: VNI 100, a bridge
and a vxlan device per VTEP (nolearning, port learning off, neigh_suppress
on), made with `ip`; host h1 behind v1, h2 behind v2 (198.19.100.x/24,
2001:db8:ff::x/64). FRR must do the rest: sessions, type-3 and type-2
routes, and the kernel entries zebra installs (extern_learn MACs, one
00:00:00:00:00:00 flood entry per remote VTEP), so the hosts can ping.

Self-contained: namespaces are `hvev<random>-*`, removed in the fixture's
teardown after the FRR daemons are stopped by the PIDs in their pid files.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import ping, sh, wait_for

from hvrouter.config import EvpnConfig
from hvrouter.overlay.evpn import Frr, render

pytestmark = pytest.mark.netns

VNI = 100
ASN = 65000
RR_ADDR = "198.19.0.10"
VTEPS = {"v1": "198.19.0.1", "v2": "198.19.0.2"}
HOSTS = {  # host: (its VTEP, MAC, IPv4, IPv6)
    "h1": ("v1", "02:00:00:00:01:01", "198.19.100.1", "2001:db8:ff::1"),
    "h2": ("v2", "02:00:00:00:01:02", "198.19.100.2", "2001:db8:ff::2"),
}
FLOOD = "00:00:00:00:00:00"


@dataclass
class Lab:
    prefix: str
    workdir: Path
    namespaces: list[str] = field(default_factory=list)
    frr: dict[str, Frr] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def add_ns(self, name: str) -> str:
        ns = self.ns(name)
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    def ip(self, name: str, *args: str) -> str:
        return sh("ip", "-n", self.ns(name), *args).stdout

    def fdb(self, node: str, dev: str = f"vx{VNI}") -> list[dict[str, Any]]:
        out = sh("bridge", "-n", self.ns(node), "-j", "fdb", "show", "dev", dev).stdout
        return json.loads(out) if out.strip() else []


def _underlay(lab: Lab) -> None:
    lab.add_ns("core")
    sh("ip", "netns", "exec", lab.ns("core"), "sysctl", "-qw", "net.ipv4.ip_forward=1")
    for i, (node, loopback) in enumerate([*VTEPS.items(), ("rr", RR_ADDR)]):
        lab.add_ns(node)
        core_side, node_side = f"198.19.1.{2 * i}", f"198.19.1.{2 * i + 1}"
        lab.ip("core", "link", "add", f"c-{node}", "type", "veth", "peer", "name", "up0", "netns", lab.ns(node))
        lab.ip("core", "addr", "add", f"{core_side}/31", "dev", f"c-{node}")
        lab.ip("core", "link", "set", f"c-{node}", "up")
        lab.ip("core", "route", "add", f"{loopback}/32", "via", node_side)
        lab.ip(node, "addr", "add", f"{node_side}/31", "dev", "up0")
        lab.ip(node, "addr", "add", f"{loopback}/32", "dev", "lo")
        lab.ip(node, "link", "set", "up0", "up")
        lab.ip(node, "route", "add", "198.19.0.0/16", "via", core_side, "src", loopback)


def _overlay(lab: Lab) -> None:
    br, vx = f"br{VNI}", f"vx{VNI}"
    for node, loopback in VTEPS.items():
        lab.ip(node, "link", "add", br, "type", "bridge")
        lab.ip(node, "link", "add", vx, "type", "vxlan", "id", str(VNI), "local", loopback,
               "dstport", "4789", "nolearning")
        lab.ip(node, "link", "set", vx, "master", br)
        sh("bridge", "-n", lab.ns(node), "link", "set", "dev", vx, "learning", "off", "neigh_suppress", "on")
        lab.ip(node, "link", "set", vx, "up")
        lab.ip(node, "link", "set", br, "up")
    for host, (node, mac, v4, v6) in HOSTS.items():
        ns = lab.add_ns(host)
        sh("ip", "-n", ns, "link", "add", "eth0", "address", mac, "type", "veth",
           "peer", "name", "hp0", "netns", lab.ns(node))
        sh("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", "eth0")
        sh("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        lab.ip(node, "link", "set", "hp0", "master", br)
        lab.ip(node, "link", "set", "hp0", "up")


def _configs() -> dict[str, str]:
    out = {
        node: render("vtep", EvpnConfig(asn=ASN, router_id=addr, peers=(RR_ADDR,)), node, local=addr)
        for node, addr in VTEPS.items()
    }
    out["rr"] = render("route-reflector", EvpnConfig(asn=ASN, router_id=RR_ADDR), "rr",
                       local=RR_ADDR, clients=["198.19.0.0/24"])
    return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(prefix=f"hvev{secrets.token_hex(3)}", workdir=tmp_path_factory.mktemp("evpn"))
    try:
        _underlay(lab)
        _overlay(lab)
        # The underlay first: a broken one must not look like an FRR failure.
        for node in VTEPS:
            wait_for(lambda n=node: ping(lab.ns(n), RR_ADDR, timeout=1), timeout=5, what=f"underlay {node} -> rr")
        configs = _configs()
        t0 = time.monotonic()
        # The reflector first, as in a real fabric; the VTEPs would retry
        # every CONNECT_RETRY s anyway.
        for node in ("rr", *VTEPS):
            frr = Frr(lab.workdir, node, netns=lab.ns(node))
            lab.frr[node] = frr
            frr.start(configs[node])
        lab.timings["start"] = time.monotonic() - t0
        yield lab
    finally:
        for frr in lab.frr.values():
            try:
                frr.stop()
            except Exception as exc:  # noqa: BLE001 - teardown must reach the namespaces
                print(f"stopping {frr}: {exc}")
        for ns in reversed(lab.namespaces):
            # Whatever else still runs in our namespaces (nothing should).
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _diagnose(lab: Lab) -> str:
    """Every instance's status and the tail of its bgpd log, for a failure message."""
    parts = []
    for node, frr in lab.frr.items():
        try:
            status: object = frr.status()
        except Exception as exc:  # noqa: BLE001 - a diagnosis shows what is wrong
            status = exc
        tail = frr.logfile("bgpd").read_text()[-1500:] if frr.logfile("bgpd").exists() else ""
        parts.append(f"--- {node}: {status}\n{tail}")
    for node in ("core", "rr", *VTEPS):
        for cmd in (["ip", "-s", "link"], ["ip", "neigh"], ["ip", "route"], ["ss", "-tan"]):
            out = subprocess.run(["ip", "netns", "exec", lab.ns(node), *cmd], capture_output=True, text=True)
            parts.append(f"--- {node} {' '.join(cmd)}\n{out.stdout}{out.stderr}")
    parts.append(f"--- ping v1 -> rr: {ping(lab.ns('v1'), RR_ADDR)}")
    return "\n".join(parts)


def _wait(lab: Lab, check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    try:
        wait_for(check, timeout=timeout, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_diagnose(lab)}") from None


def _established(frr: Frr) -> set[str]:
    return {a for a, p in frr.peers().items() if p.state == "Established"}


def test_daemons_run_in_their_namespaces_with_files_in_their_directory(lab: Lab) -> None:
    for node, frr in lab.frr.items():
        want = os.stat(f"/run/netns/{lab.ns(node)}").st_ino
        for daemon in ("zebra", "bgpd"):
            pid = frr.pid(daemon)
            assert pid is not None, f"{node} {daemon} not running"
            assert os.stat(f"/proc/{pid}/ns/net").st_ino == want, f"{node} {daemon} in the wrong namespace"
            assert os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino  # the test runs outside
        names = {p.name for p in frr.path.iterdir()}
        assert {"frr.conf", "zebra.conf", "zebra.pid", "bgpd.pid", "zebra.vty", "bgpd.vty", "zserv.api"} <= names
    # zebra reads only the global lines: no BGP command for it to reject.
    zebra_log = lab.frr["v1"].logfile("zebra").read_text()
    assert "No such command" not in zebra_log, zebra_log


def test_sessions_and_type3_routes(lab: Lab) -> None:
    t0 = time.monotonic()
    rr = lab.frr["rr"]
    _wait(lab, lambda: _established(rr) == set(VTEPS.values()), "both VTEPs Established at the RR")
    lab.timings["established"] = lab.timings["start"] + time.monotonic() - t0
    for node, addr in VTEPS.items():
        assert _established(lab.frr[node]) == {RR_ADDR}
        peer = rr.peers()[addr]
        assert peer.connections == 1, (peer, _diagnose(lab))

    def imet_everywhere() -> bool:
        return all(f.routes()["type3_originators"] == sorted(VTEPS.values()) for f in lab.frr.values())

    _wait(lab, imet_everywhere, "type-3 routes of both VTEPs on every node")
    lab.timings["type3"] = lab.timings["start"] + time.monotonic() - t0
    # zebra knows VNI 100 with its local VTEP address and the other VTEP as flood target.
    for node, addr in VTEPS.items():
        other = next(a for n, a in VTEPS.items() if n != node)
        vni = lab.frr[node].vnis()[VNI]
        assert (vni["vxlan"], vni["bridge"], vni["local_vtep"]) == (f"vx{VNI}", f"br{VNI}", addr)
        _wait(lab, lambda f=lab.frr[node], o=other: f.vnis()[VNI]["remote_vteps"] == [o], f"{node} flood list")
    assert lab.frr["rr"].vnis() == {}
    status = rr.status()
    assert status["established"] == 2 and status["type3"] == 2, status


def test_hosts_ping_and_zebra_installs_remote_entries(lab: Lab) -> None:
    _wait(lab, lambda: _established(lab.frr["rr"]) == set(VTEPS.values()), "sessions")
    t0 = time.monotonic()
    h1, h2 = lab.ns("h1"), lab.ns("h2")
    _, _, v4, v6 = HOSTS["h2"]
    _wait(lab, lambda: ping(h1, v4, timeout=1), "h1 -> h2 IPv4 ping")
    lab.timings["ping4_after_sessions"] = time.monotonic() - t0
    _wait(lab, lambda: ping(h1, v6, timeout=1), "h1 -> h2 IPv6 ping")
    assert ping(h2, HOSTS["h1"][2]) and ping(h2, HOSTS["h1"][3])
    macs = sorted(mac for _, mac, _, _ in HOSTS.values())
    for node in VTEPS:
        _check_remote_entries(lab, node, macs)
    status = lab.frr["v1"].status()
    assert status["vnis"][str(VNI)]["remote_vteps"] == [VTEPS["v2"]], status


def _check_remote_entries(lab: Lab, node: str, macs: list[str]) -> None:
    frr = lab.frr[node]
    _wait(lab, lambda: set(macs) <= set(frr.routes()["type2_macs"]), f"type-2 of both MACs on {node}")
    other = next(a for n, a in VTEPS.items() if n != node)
    remote_mac = next(mac for n, mac, _, _ in HOSTS.values() if n != node)
    local_mac = next(mac for n, mac, _, _ in HOSTS.values() if n == node)

    def installed() -> bool:
        return any(e["mac"] == remote_mac and "extern_learn" in e.get("flags", []) and e.get("dst") == other
                   for e in lab.fdb(node))

    _wait(lab, installed, f"{node}: extern_learn {remote_mac} dst {other}")
    fdb = lab.fdb(node)
    # The bridge's own (master) copy is extern_learn too: no flooding, no ageing.
    assert any(e["mac"] == remote_mac and e.get("master") == f"br{VNI}" and "extern_learn" in e.get("flags", [])
               for e in fdb), fdb
    flood = [e for e in fdb if e["mac"] == FLOOD]
    assert [e.get("dst") for e in flood] == [other], flood
    # Nothing about our own host points into the tunnel.
    assert not any(e["mac"] == local_mac and "dst" in e for e in fdb), fdb


def test_apply_is_a_noop_when_unchanged_and_keeps_sessions_up(lab: Lab) -> None:
    _wait(lab, lambda: _established(lab.frr["rr"]) == set(VTEPS.values()), "sessions")
    v1 = lab.frr["v1"]
    same = render("vtep", EvpnConfig(asn=ASN, router_id=VTEPS["v1"], peers=(RR_ADDR,)), "v1", local=VTEPS["v1"])
    assert v1.apply(same) is False
    # What we render is what FRR runs: frr-reload finds nothing to change.
    diff = subprocess.run(
        ["/usr/lib/frr/frr-reload.py", "--test", "--stdout", "--daemon", "bgpd", "--bindir", "/usr/bin",
         "--confdir", str(v1.path), "--rundir", str(v1.path), "--vty_socket", str(v1.path), str(v1.config_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert diff.returncode == 0, diff.stderr
    assert "Lines To Delete" not in diff.stdout and "Lines To Add" not in diff.stdout, diff.stdout
    # A second (absent) reflector: added live, the existing session untouched.
    extra = "198.19.0.11"
    changed = render("vtep", EvpnConfig(asn=ASN, router_id=VTEPS["v1"], peers=(RR_ADDR, extra)), "v1",
                     local=VTEPS["v1"])
    t0 = time.monotonic()
    assert v1.apply(changed) is True
    lab.timings["apply"] = time.monotonic() - t0
    assert f"neighbor {extra} peer-group RR" in v1.vtysh("show running-config")
    peers = v1.peers()
    assert set(peers) == {RR_ADDR, extra}
    assert peers[RR_ADDR].state == "Established" and peers[RR_ADDR].connections == 1, peers
    assert v1.apply(changed) is False
    assert v1.apply(same) is True
    assert set(v1.peers()) == {RR_ADDR}
    assert v1.peers()[RR_ADDR].connections == 1
    assert ping(lab.ns("h1"), HOSTS["h2"][2])


def test_stop_by_pid_and_restart(lab: Lab) -> None:
    """Last: stops v2, checks the RR and v1 forget it, starts it again."""
    _wait(lab, lambda: _established(lab.frr["rr"]) == set(VTEPS.values()), "sessions")
    v2 = lab.frr["v2"]
    pids = [v2.pid(d) for d in ("zebra", "bgpd")]
    assert all(pids)
    v2.stop()
    assert not v2.alive()
    assert not any(Path(f"/proc/{p}").exists() and v2.pid(d) for p, d in zip(pids, ("zebra", "bgpd"), strict=True))
    # FRR's crash-log directories go away with a clean exit.
    assert not any(Path(f"/var/tmp/frr/{d}.{p}").exists() for p, d in zip(pids, ("zebra", "bgpd"), strict=True))
    # bgpd's Cease/NOTIFICATION on shutdown: withdrawn at once, not after the hold time.
    _wait(lab, lambda: lab.frr["v1"].routes()["type3_originators"] == [VTEPS["v1"]], "v2's type-3 withdrawn at v1",
          timeout=5)
    _wait(lab, lambda: not any(e["mac"] == FLOOD for e in lab.fdb("v1")), "v1's flood entry removed", timeout=5)
    t0 = time.monotonic()
    v2.start(_configs()["v2"])
    _wait(lab, lambda: ping(lab.ns("h1"), HOSTS["h2"][2], timeout=1), "ping after v2 restart")
    lab.timings["restart_to_ping"] = time.monotonic() - t0
    print("evpn timings (s):", {k: round(v, 2) for k, v in lab.timings.items()})
