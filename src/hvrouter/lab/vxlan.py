"""The seed-002 VXLAN lab: three VTEPs on a routed underlay, four hosts on
two VLANs, one overlay mode at a time.

    h1 ─ s1 ─┐                    s1..s3: VTEPs running the hvrouter agent
    h2 ═ s2 ─┼─ core ─ rr         core:   IPv6 + IPv4 router (smcroute in
    h3 ─ s3 ─┘                            mode multicast, etcd with
    h4 ─ s3                               `--registry etcd`)
                                  rr:     FRR route reflector (mode evpn)

Core link N (rr is N=4): 2001:db8:f0:N::1/64 / 198.19.N.1/24 in core, ::2 / .2
in the node; VTEP loopbacks 2001:db8:ff00::N/128 and 198.19.0.N/32 (also
routed as 198.19.0.0/24 and 2001:db8:ff00::/64 via core, besides the default
route: FRR does not resolve BGP peers through a default route). H1, H3 are
on VLAN 100, H4 on VLAN 200, H2 on both (2001:db8:ff::/64 + 198.19.100.0/24,
2001:db8:fe::/64 + 198.19.200.0/24; Hn is .(9+n) / ::(9+n)).

This kernel has no 802.1Q (no `vlan` links, no bridge VLAN filtering), so a
host's VLAN is its own veth pair named like the sub-interfaces it stands for:
`eth0.100` in the host, `h1.100` in the VTEP; H2's trunk is two such links.
The VTEP attaches `hN.VLAN` to the overlay with `hvrouter overlay attach`, as
an orchestrator would.

The lab is recorded in the same /run/hvrouter-lab/<name>/lab.json as the
seed-001 lab (namespaces as they are made, daemons, plus the mode), so
`hvrouter lab down --name N` of manage.py removes it too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError, Problem
from ..overlay.types import MODES, ZERO_MAC
from .manage import Lab, LabError, _batch, _ns_exists, _run

TOPOLOGY = "vxlan"
UNDERLAYS = ("ipv6", "ipv4")
REGISTRIES = ("sqlite", "etcd")
VTEPS = ("s1", "s2", "s3")
NODES = ("core", *VTEPS, "h1", "h2", "h3", "h4", "rr")
UNDERLAY_MTU = 9000
OVERLAY_MTU = 1500
ROUTER_MAC = "52:54:00:ff:ff:fe"
ETCD_PORT = 2379
VXLAN_PORT = 4789
ASN = 65000
RR_LINK = 4
# The BUM group of each VNI in mode multicast, per underlay family.
GROUPS = {"ipv6": {100: "ff05::100", 200: "ff05::200"}, "ipv4": {100: "239.1.1.100", 200: "239.1.1.200"}}
VLAN_NET = {100: ("198.19.100", "2001:db8:ff::"), 200: ("198.19.200", "2001:db8:fe::")}
MEASURE_ETHERTYPE = 0x88B5  # IEEE "local experimental": nothing answers it


def link_no(node: str) -> int:
    return RR_LINK if node == "rr" else int(node[1:])


def loopback(node: str, family: str) -> str:
    """The node's underlay address (VTEP `local`) on `lo`."""
    n = {"core": 254, "rr": 100}.get(node) or int(node[1:])
    if family == "ipv4":
        return f"198.19.0.{n}"
    return f"2001:db8:ff00::{n:x}"


@dataclass(frozen=True)
class Host:
    name: str
    n: int
    vtep: str
    vlans: tuple[int, ...]

    def mac(self, vlan: int) -> str:
        """One MAC per VLAN sub-interface (the trunked H2 has two), so the
        VNI-merging rsc mode never sees one MAC behind two ports."""
        return f"52:54:00:00:{self.n:02x}:{1 if vlan == 100 else 2:02x}"

    def ipv4(self, vlan: int) -> str:
        return f"{VLAN_NET[vlan][0]}.{9 + self.n}"

    def ipv6(self, vlan: int) -> str:
        return f"{VLAN_NET[vlan][1]}{9 + self.n}"

    def port(self, vlan: int) -> str:
        """The VTEP-side VLAN sub-interface attached to the overlay."""
        return f"{self.name}.{vlan}"


HOSTS = (
    Host("h1", 1, "s1", (100,)),
    Host("h2", 2, "s2", (100, 200)),
    Host("h3", 3, "s3", (100,)),
    Host("h4", 4, "s3", (200,)),
)
HOST = {h.name: h for h in HOSTS}
# Same-VLAN pairs pinged by check() (both directions, both families).
PAIRS = ((100, "h1", "h2"), (100, "h1", "h3"), (100, "h2", "h3"), (200, "h2", "h4"))
# unicast-rsc: routed without a router, H1 (VLAN 100) <-> H4 (VLAN 200).
RSC_PAIR = ("h1", 100, "h4", 200)


def gateway(vlan: int, family: str) -> str:
    return f"{VLAN_NET[vlan][0]}.1" if family == "ipv4" else f"{VLAN_NET[vlan][1]}1"


def network_name(mode: str, vlan: int) -> str:
    return "rsc" if mode == "unicast-rsc" else f"v{vlan}"


def validate(mode: str, underlay: str | None, registry: str) -> str:
    """Check the options; returns the underlay family (evpn: ipv4, else ipv6 by default)."""
    problems = []
    if mode not in MODES:
        problems.append(Problem("--mode", mode, f"one of {', '.join(MODES)}"))
    if underlay is not None and underlay not in UNDERLAYS:
        problems.append(Problem("--underlay", underlay, "ipv6 or ipv4"))
    if registry not in REGISTRIES:
        problems.append(Problem("--registry", registry, "sqlite or etcd"))
    if mode == "evpn" and underlay == "ipv6":
        problems.append(Problem("--underlay", underlay, "ipv4 in mode evpn (FRR 8.4 has no IPv6 VTEPs)"))
    if problems:
        raise InputError("lab up --topology vxlan", problems)
    return underlay or ("ipv4" if mode == "evpn" else "ipv6")


# -- configuration (pure) ---------------------------------------------------------


def overlay_networks(mode: str, vtep: str, family: str) -> list[dict[str, Any]]:
    local = loopback(vtep, family)
    if mode == "unicast-rsc":
        # Route short-circuit only works inside one VNI: both VLANs share it.
        return [{"name": "rsc", "vni": 100, "mode": mode, "local": local, "mtu": OVERLAY_MTU,
                 "router_mac": ROUTER_MAC}]
    nets = []
    for vni in (100, 200):
        net: dict[str, Any] = {"name": f"v{vni}", "vni": vni, "mode": mode, "local": local, "mtu": OVERLAY_MTU,
                               "ttl": 64}
        if mode == "multicast":
            net.update(group=GROUPS[family][vni], device="core")
        nets.append(net)
    return nets


def registry_endpoint(family: str) -> str:
    addr = loopback("core", family)
    return f"http://[{addr}]:{ETCD_PORT}" if family == "ipv6" else f"http://{addr}:{ETCD_PORT}"


def vtep_config(labdir: str, vtep: str, mode: str, family: str, registry: str) -> dict[str, Any]:
    """The hvrouter config of VTEP `vtep`: no routing, no firewall, just the overlay."""
    reg: dict[str, Any] = {"backend": registry, "lease": 10}
    if registry == "sqlite":
        reg["path"] = f"{labdir}/registry.sqlite"
    else:
        reg["endpoints"] = [registry_endpoint(family)]
    overlay: dict[str, Any] = {"vtep_id": vtep, "registry": reg, "networks": overlay_networks(mode, vtep, family)}
    if mode == "evpn":
        overlay["evpn"] = {"asn": ASN, "router_id": loopback(vtep, "ipv4"), "peers": [loopback("rr", "ipv4")],
                           "directory": f"{labdir}/frr-{vtep}"}
    return {"firewall": {"enabled": False}, "overlay": overlay}


def smcroute_conf(family: str) -> str:
    """(*,G) routes in core: each VNI's group from every VTEP link to the others."""
    lines = ["# hvrouter VXLAN lab: the underlay routes each VNI's BUM group between the VTEPs"]
    lines += [f"phyint {v} enable" for v in VTEPS]
    for group in GROUPS[family].values():
        for src in VTEPS:
            lines.append(f"mroute from {src} group {group} to {' '.join(v for v in VTEPS if v != src)}")
    return "\n".join(lines) + "\n"


def attach_commands(mode: str, host: Host) -> list[list[str]]:
    """`hvrouter overlay attach` argument lists for one host's VLAN ports."""
    out = []
    for vlan in host.vlans:
        out.append(["overlay", "attach", host.port(vlan), "--network", network_name(mode, vlan),
                    "--mac", host.mac(vlan), "--address", host.ipv4(vlan), "--address", host.ipv6(vlan)])
    return out


# -- the lab ------------------------------------------------------------------------


class VxlanLab:
    """One VXLAN lab; the namespaces and record are those of `manage.Lab`."""

    def __init__(self, name: str) -> None:
        self.lab = Lab(name)
        self.name = name

    def ns(self, node: str) -> str:
        return self.lab.ns(node)

    @property
    def dir(self) -> Path:
        return self.lab.dir

    def record(self) -> dict[str, Any]:
        return self.lab._record()

    def params(self) -> tuple[str, str, str]:
        rec = self.record()
        if rec.get("topology") != TOPOLOGY:
            raise LabError(f"lab {self.name!r} is not a VXLAN lab (no record at {self.lab.record_path}; "
                           f"`hvrouter lab up --topology vxlan --name {self.name}`)")
        return str(rec["mode"]), str(rec["underlay"]), str(rec["registry"])

    # -- build ------------------------------------------------------------------------

    def create(self, mode: str, family: str, registry: str) -> None:
        if self.lab.exists() or any(_ns_exists(self.ns(n)) for n in NODES):
            raise LabError(f"lab {self.name!r} already exists: `hvrouter lab down --name {self.name}` removes it")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lab.record_path.write_text(json.dumps({
            "name": self.name, "topology": TOPOLOGY, "mode": mode, "underlay": family, "registry": registry,
            "namespaces": [], "created": time.time(),
        }))

    def build_underlay(self, with_rr: bool) -> None:
        nodes = ["core", *VTEPS, *(["rr"] if with_rr else [])]
        for node in nodes:
            self.lab._add_ns(node)
        core = self.ns("core")
        core_cmds = [
            f"addr add {loopback('core', 'ipv6')}/128 dev lo",
            f"addr add {loopback('core', 'ipv4')}/32 dev lo",
        ]
        for node in nodes[1:]:
            n = link_no(node)
            core_cmds += [
                # `dev` everywhere: `rr` must never be read as an ip keyword.
                f"link add dev {node} mtu {UNDERLAY_MTU} type veth peer name core mtu {UNDERLAY_MTU} "
                f"netns {self.ns(node)}",
                f"link set dev {node} up",
                f"addr add 2001:db8:f0:{n}::1/64 dev {node} nodad",
                f"addr add 198.19.{n}.1/24 dev {node}",
                f"route add {loopback(node, 'ipv6')}/128 via 2001:db8:f0:{n}::2 dev {node}",
                f"route add {loopback(node, 'ipv4')}/32 via 198.19.{n}.2 dev {node}",
            ]
        _run(["ip", "netns", "exec", core, "sysctl", "-qw", "net.ipv4.ip_forward=1",
              "net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.default.accept_dad=0"])
        for node in nodes[1:]:
            # The veth peer appears in the node when core makes it: set sysctls first.
            _run(["ip", "netns", "exec", self.ns(node), "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"])
        _batch(core, core_cmds)
        for node in nodes[1:]:
            n = link_no(node)
            _batch(self.ns(node), [
                f"addr add {loopback(node, 'ipv6')}/128 dev lo",
                f"addr add {loopback(node, 'ipv4')}/32 dev lo",
                "link set dev core up",
                f"addr add 2001:db8:f0:{n}::2/64 dev core nodad",
                f"addr add 198.19.{n}.2/24 dev core",
                f"route add default via 198.19.{n}.1 dev core",
                f"route add ::/0 via 2001:db8:f0:{n}::1 dev core",
                # The loopbacks as a route of their own: FRR (evpn) does not
                # resolve BGP next hops and peers through a default route.
                f"route add 198.19.0.0/24 via 198.19.{n}.1 dev core",
                f"route add 2001:db8:ff00::/64 via 2001:db8:f0:{n}::1 dev core",
            ])

    def build_hosts(self, mode: str) -> None:
        for host in HOSTS:
            ns = self.lab._add_ns(host.name)
            _run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0",
                  "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_ra=0",
                  "net.ipv6.conf.default.router_solicitations=0",
                  # H2 holds both VLANs: answer ARP only on the VLAN of the address.
                  "net.ipv4.conf.all.arp_ignore=1"])
            cmds = []
            for vlan in host.vlans:
                # No 802.1Q in this kernel: one veth pair per VLAN (module docstring).
                sub, port = f"eth0.{vlan}", host.port(vlan)
                cmds += [
                    f"link add dev {sub} address {host.mac(vlan)} mtu {OVERLAY_MTU} type veth "
                    f"peer name {port} mtu {OVERLAY_MTU} netns {self.ns(host.vtep)}",
                    f"addr add {host.ipv4(vlan)}/24 dev {sub}",
                    f"addr add {host.ipv6(vlan)}/64 dev {sub} nodad",
                    f"link set dev {sub} up",
                ]
            if mode == "unicast-rsc" and host.name in (RSC_PAIR[0], RSC_PAIR[2]):
                # Seed 002: "the router doesn't exist at all, but the host has an
                # ND entry for it"; the VTEP short-circuits frames sent to it.
                vlan = host.vlans[0]
                other = 200 if vlan == 100 else 100
                sub = f"eth0.{vlan}"
                for fam, prefix in (("ipv4", f"{VLAN_NET[other][0]}.0/24"), ("ipv6", f"{VLAN_NET[other][1]}/64")):
                    gw = gateway(vlan, fam)
                    cmds += [
                        f"neigh replace {gw} lladdr {ROUTER_MAC} nud permanent dev {sub}",
                        f"route add {prefix} via {gw} dev {sub}",
                    ]
            _batch(ns, cmds)
            _batch(self.ns(host.vtep), [f"link set dev {host.port(vlan)} up" for vlan in host.vlans])

    # -- services and agents ---------------------------------------------------------

    def start_services(self, mode: str, family: str, registry: str) -> None:
        if registry == "etcd":
            from ..overlay.etcdrun import start_etcd

            etcd = start_etcd(self.ns("core"), loopback("core", family), ETCD_PORT, self.dir / "etcd",
                              log=self.dir / "etcd.log")
            self.lab._note("daemons", f"etcd:{etcd.pid}")
        if mode == "multicast":
            self.start_smcroute(family)
        if mode == "evpn":
            self.start_rr()

    def start_smcroute(self, family: str) -> None:
        conf = self.dir / "smcroute.conf"
        conf.write_text(smcroute_conf(family))
        log = open(self.dir / "smcroute.log", "a")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns("core"), "smcrouted", "-n", "-l", "info", "-f", str(conf),
             "-P", str(self.dir / "smcroute.pid"), "-u", str(self.dir / "smcroute.sock")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        self.lab._note("daemons", f"smcroute:{proc.pid}")
        mif = "/proc/net/ip6_mr_vif" if family == "ipv6" else "/proc/net/ip_mr_vif"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = _run(["ip", "netns", "exec", self.ns("core"), "cat", mif], check=False).stdout
            if all(f" {v} " in text for v in VTEPS):
                return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise LabError(f"smcroute in {self.ns('core')} did not set up multicast interfaces s1..s3 "
                       f"(see {self.dir / 'smcroute.log'})")

    def start_rr(self) -> None:
        from ..config import EvpnConfig
        from ..overlay.evpn import Frr, render

        cfg = EvpnConfig.model_validate({"asn": ASN, "router_id": loopback("rr", "ipv4"), "directory": self.dir / "frr-rr"})
        clients = [loopback(v, "ipv4") for v in VTEPS]
        text = render("route-reflector", cfg, "rr", local=loopback("rr", "ipv4"), clients=clients)
        frr = Frr(cfg.directory, "rr", netns=self.ns("rr"))
        frr.start(text)
        for daemon in ("zebra", "bgpd"):
            self.lab._note("daemons", f"rr-{daemon}:{frr.pid(daemon)}")

    def start_agents(self, mode: str, family: str, registry: str) -> None:
        for vtep in VTEPS:
            files = self.lab.files(vtep)
            Path(files.dir).mkdir(parents=True, exist_ok=True)
            Path(files.config).write_text(
                yaml.safe_dump(vtep_config(str(self.dir), vtep, mode, family, registry), sort_keys=False))
            self.lab.start_daemon(vtep)
        # Attachments go in through the CLI, as an orchestrator hook would.
        jobs = [(h.vtep, args) for h in HOSTS for args in attach_commands(mode, h)]
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            outs = list(pool.map(lambda j: self.lab.hvrouter(j[0], *j[1], check=False), jobs))
        bad = [f"{vtep}: hvrouter {' '.join(args)}: {o.stderr.strip() or o.stdout.strip()}"
               for (vtep, args), o in zip(jobs, outs, strict=True) if o.returncode != 0]
        if bad:
            raise LabError("; ".join(bad))

    # -- check ---------------------------------------------------------------------------

    def _ping(self, src: str, dst_addr: str, count: int = 1, deadline: float = 3.0) -> tuple[bool, float | None]:
        # -c 1 -w D: keep sending every 0.2 s until one reply or D seconds; the
        # miss modes lose the first packets while the controller answers.
        args = ["ip", "netns", "exec", self.ns(src), "ping", "-n", "-q", "-c", str(count), "-i", "0.2",
                "-w", str(max(1, round(deadline))), dst_addr]
        out = subprocess.run(args, capture_output=True, text=True, timeout=deadline + 10)
        rtt = None
        for line in out.stdout.splitlines():
            if "min/avg/max" in line:
                rtt = float(line.split("=")[1].split("/")[1])
        return out.returncode == 0, rtt

    def check(self, deadline: float = 3.0) -> dict[str, Any]:
        mode, family, registry = self.params()
        jobs: list[tuple[str, str, str, str]] = []  # src, dst, family, address
        for vlan, a, b in PAIRS:
            for src, dst in ((a, b), (b, a)):
                jobs += [(src, dst, "ipv4", HOST[dst].ipv4(vlan)), (src, dst, "ipv6", HOST[dst].ipv6(vlan))]
        if mode == "unicast-rsc":
            h1, v1, h4, v4 = RSC_PAIR
            for src, dst, vlan in ((h1, h4, v4), (h4, h1, v1)):
                jobs += [(src, dst, "ipv4", HOST[dst].ipv4(vlan)), (src, dst, "ipv6", HOST[dst].ipv6(vlan))]
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            results = list(pool.map(lambda j: self._ping(j[0], j[3], deadline=deadline), jobs))
        pairs = [
            {"src": src, "dst": dst, "family": fam, "address": addr, "ok": ok, "rtt_ms": rtt}
            for (src, dst, fam, addr), (ok, rtt) in zip(jobs, results, strict=True)
        ]
        return {"name": self.name, "topology": TOPOLOGY, "mode": mode, "underlay": family, "registry": registry,
                "ok": all(p["ok"] for p in pairs), "pairs": pairs,
                "seconds": round(time.monotonic() - t0, 2)}

    # -- measure -------------------------------------------------------------------------

    def _nft(self, node: str, script: str) -> str:
        out = subprocess.run(["ip", "netns", "exec", self.ns(node), "nft", "-f", "-"],
                             input=script, capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise LabError(f"nft in {self.ns(node)}: {out.stderr.strip()}")
        return out.stdout

    def _install_counters(self) -> None:
        """nft counters in each VTEP: all VXLAN packets on the underlay link,
        and those carrying our probe frames (inner EtherType at UDP payload
        offset 8 + 12 bytes: bit 224 of the transport header)."""
        probe = f"@th,224,16 0x{MEASURE_ETHERTYPE:04x}"
        for vtep in VTEPS:
            self._nft(vtep, f"""table inet hvxlab
delete table inet hvxlab
table inet hvxlab {{
  counter vxlan_out {{ }}
  counter vxlan_in {{ }}
  counter probe_out {{ }}
  counter probe_in {{ }}
  chain out {{
    type filter hook output priority 0; policy accept;
    oifname "core" udp dport {VXLAN_PORT} counter name vxlan_out
    oifname "core" udp dport {VXLAN_PORT} {probe} counter name probe_out
  }}
  chain in {{
    type filter hook input priority 0; policy accept;
    iifname "core" udp dport {VXLAN_PORT} counter name vxlan_in
    iifname "core" udp dport {VXLAN_PORT} {probe} counter name probe_in
  }}
}}
""")

    def _counters(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for vtep in VTEPS:
            text = _run(["ip", "netns", "exec", self.ns(vtep), "nft", "-j", "list", "counters", "table", "inet",
                         "hvxlab"]).stdout
            vals = {}
            for item in json.loads(text)["nftables"]:
                c = item.get("counter")
                if c:
                    vals[c["name"]] = int(c["packets"])
            out[vtep] = vals
        return out

    def _broadcast(self, host: Host, vlan: int, frames: int) -> None:
        """`frames` broadcast Ethernet frames out of the host's VLAN interface."""
        code = (
            "import socket,sys\n"
            "s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n"
            "s.bind((sys.argv[1],0))\n"
            "f=b'\\xff'*6+bytes.fromhex(sys.argv[2].replace(':',''))+bytes.fromhex(sys.argv[3])+bytes(46)\n"
            "[s.send(f) for _ in range(int(sys.argv[4]))]\n"
        )
        _run(["ip", "netns", "exec", self.ns(host.name), sys.executable, "-c", code, f"eth0.{vlan}",
              host.mac(vlan), f"{MEASURE_ETHERTYPE:04x}", str(frames)])

    def fdb_sizes(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per VTEP, per VXLAN device: FDB entries (all; remote ones, i.e. with
        a `dst`; of those the all-zero flood entries, `router` ones and FRR's
        `extern_learn` ones) and ARP/ND entries on the device."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for vtep in VTEPS:
            ns = self.ns(vtep)
            links = json.loads(_run(["ip", "-n", ns, "-j", "link", "show", "type", "vxlan"]).stdout or "[]")
            devs = {}
            for link in links:
                dev = link["ifname"]
                fdb = json.loads(_run(["bridge", "-n", ns, "-j", "fdb", "show", "dev", dev]).stdout or "[]")
                neigh = json.loads(_run(["ip", "-n", ns, "-j", "neigh", "show", "dev", dev]).stdout or "[]")
                remote = [e for e in fdb if "dst" in e]
                devs[dev] = {
                    "fdb": len(fdb),
                    "fdb_remote": len(remote),
                    "fdb_zero": sum(1 for e in remote if e["mac"] == ZERO_MAC),
                    "fdb_router": sum(1 for e in remote if "router" in e.get("flags", [])),
                    "fdb_extern": sum(1 for e in remote if "extern_learn" in e.get("flags", [])),
                    "neigh": len(neigh),
                }
            out[vtep] = devs
        return out

    def measure(self, frames: int = 100) -> dict[str, Any]:
        """BUM amplification: H1 sends `frames` broadcast frames on VLAN 100;
        count the VXLAN packets carrying them that S1 sends, and that all
        VTEPs receive. Plus FDB / neighbour sizes on every VXLAN device."""
        mode, family, registry = self.params()
        self._install_counters()
        before = self._counters()
        self._broadcast(HOST["h1"], 100, frames)
        time.sleep(0.3)
        after = self._counters()
        delta = {v: {k: after[v][k] - before[v].get(k, 0) for k in after[v]} for v in VTEPS}
        sent = delta["s1"]["probe_out"]
        received = sum(d["probe_in"] for d in delta.values())
        return {
            "name": self.name, "mode": mode, "underlay": family, "registry": registry,
            "broadcast_frames": frames,
            "underlay_packets_sent_by_s1": sent,
            "bum_amplification": round(sent / frames, 2),
            "underlay_packets_received": received,
            "received_per_frame": round(received / frames, 2),
            "per_vtep": delta,
            "fdb": self.fdb_sizes(),
        }


# -- API (the CLI calls these) --------------------------------------------------------------


def up(name: str, mode: str, underlay: str | None = None, registry: str = "sqlite",
       timeout: float = 60.0, agents: bool = True) -> dict[str, Any]:
    """Build the lab, start its services and VTEP agents, attach the hosts,
    and wait (up to `timeout` s) for a green check. Returns the last check
    plus `timings` (seconds per phase) and `up_seconds`; `ok` False if the
    check never went green. `agents=False` stops after the underlay, hosts
    and services (etcd, smcroute, the FRR reflector), for hand experiments.
    Raises InputError for bad options, LabError if anything fails to start
    (what was made stays recorded: `down(name)` removes it)."""
    family = validate(mode, underlay, registry)
    lab = VxlanLab(name)
    t0 = time.monotonic()
    timings: dict[str, float] = {}

    def phase(label: str, since: float) -> float:
        now = time.monotonic()
        timings[label] = round(now - since, 2)
        return now

    lab.create(mode, family, registry)
    try:
        lab.build_underlay(with_rr=mode == "evpn")
        lab.build_hosts(mode)
        t = phase("namespaces", t0)
        lab.start_services(mode, family, registry)
        t = phase("services", t)
        if agents:
            lab.start_agents(mode, family, registry)
            t = phase("agents", t)
            deadline = time.monotonic() + timeout
            result = lab.check()
            while not result["ok"] and time.monotonic() < deadline:
                time.sleep(0.5)
                result = lab.check()
            phase("converge", t)
        else:
            result = {"name": name, "topology": TOPOLOGY, "mode": mode, "underlay": family, "registry": registry,
                      "ok": True, "pairs": []}
    except BaseException:
        print(f"lab up failed; `hvrouter lab down --name {name}` removes what was made", file=sys.stderr)
        raise
    result["timings"] = timings
    result["up_seconds"] = round(time.monotonic() - t0, 2)
    return result


def check(name: str) -> dict[str, Any]:
    return VxlanLab(name).check()


def measure(name: str, frames: int = 100) -> dict[str, Any]:
    return VxlanLab(name).measure(frames)


def down(name: str) -> list[str]:
    """Remove the lab: what manage.Lab.down does (processes by PID, then the
    namespaces and the lab directory), after asking every process of every
    namespace to stop at once, so the agents' shutdowns overlap instead of
    being waited for one namespace after the other. Returns the namespaces
    removed."""
    lab = VxlanLab(name).lab
    rec = lab._record()
    recorded = rec.get("namespaces")
    names = {str(n) for n in recorded} if isinstance(recorded, list) else set()
    names |= {lab.ns(n) for n in NODES}
    pids: list[int] = []
    for ns in sorted(names):
        if _ns_exists(ns):
            pids += [int(p) for p in _run(["ip", "netns", "pids", ns], check=False).stdout.split()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 3.0
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _running(p)]
        time.sleep(0.05)
    return lab.down()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has stopped; its parent (not us) reaps it
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def is_vxlan(name: str) -> bool:
    """Whether lab `name` was made by this module (for `lab check` dispatch)."""
    return VxlanLab(name).record().get("topology") == TOPOLOGY


def render_check(result: dict[str, Any]) -> str:
    lines = [f"VXLAN lab {result.get('name')}: mode {result.get('mode')}, underlay {result.get('underlay')}, "
             f"registry {result.get('registry')}"]
    for p in result.get("pairs", []):
        rtt = f"{p['rtt_ms']:.3f} ms" if p.get("rtt_ms") is not None else "-"
        lines.append(f"  {p['src']} -> {p['dst']} {p['family']:<4} {p['address']:<18} "
                     f"{'ok' if p['ok'] else 'FAIL':<4} {rtt}")
    lines.append("lab check: " + ("OK" if result.get("ok") else "FAILED"))
    return "\n".join(lines)




def render_measure(result: dict[str, Any]) -> str:
    lines = [
        f"VXLAN lab {result['name']}: mode {result['mode']}, underlay {result['underlay']}",
        f"  BUM amplification: {result['broadcast_frames']} broadcast frames from h1 (VLAN 100) -> "
        f"{result['underlay_packets_sent_by_s1']} underlay packets sent by s1 ({result['bum_amplification']} per frame), "
        f"{result['underlay_packets_received']} received by the VTEPs ({result['received_per_frame']} per frame)",
    ]
    for vtep, devs in result["fdb"].items():
        for dev, n in devs.items():
            lines.append(f"  {vtep} {dev}: fdb {n['fdb']} (remote {n['fdb_remote']}, all-zero {n['fdb_zero']}, "
                         f"router {n['fdb_router']}, extern_learn {n['fdb_extern']}), neighbours {n['neigh']}")
    return "\n".join(lines)
