"""The responder against real clients: ISC dhclient (IPv4, DHCPv6 stateless
and stateful), kernel SLAAC and rdisc6, in VM namespaces behind taps (veth)
of a hypervisor namespace where `python -m hvrouter.services.run` serves.

    hv: vm1 (public, 203.0.113.4, 2001:db8:cb00:7101::/64)   the tap holds only
        vm2 (shared, 198.51.100.5, 2001:db8:5a::5/128)       the IPv4 gateway /32
        vm3 (public, 203.0.113.6; its VM uses another MAC)   scope link

Namespaces are hvsv-<random>-*, removed in teardown even on failure; every
process is started here and stopped by its PID. dhclient runs with its own
lease, pid and script files, the script only records what it got and
configures the VM's eth0; /etc/netns/<vm>/resolv.conf exists as well, so
that even a stray default script could only write the namespace's copy.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import sh, wait_for

pytestmark = pytest.mark.netns

NETNS_ETC = Path("/etc/netns")
CONFIG = """
tables: {public: 90, local-out: 100}
networks:
  - name: public
    table: public
    ipv4: {subnet: 203.0.113.0/24, gateway: 203.0.113.254}
    ipv6: {mode: prefix-per-port, prefix: "2001:db8:cb00:7100::/56"}
    services: &svc
      dns: [192.0.2.53, "2001:db8:ffff::53"]
      domain: example.test
      search: [example.test, lab.example.test]
      mtu: 1400
      lease_time: 3600
      router_lifetime: 1200
      ra_interval: 600
  - name: shared
    table: public
    ipv4: {subnet: 198.51.100.0/24, gateway: 198.51.100.254}
    ipv6: {mode: shared-prefix, prefix: "2001:db8:5a::/64"}
    services: *svc
"""
PORTS = [
    {"name": "vm1", "mac": "52:54:00:00:00:01", "network": "public", "ipv4": ["203.0.113.4"],
     "ipv6": ["2001:db8:cb00:7101::/64"]},
    {"name": "vm2", "mac": "52:54:00:00:00:02", "network": "shared", "ipv4": ["198.51.100.5"],
     "ipv6": ["2001:db8:5a::5"]},
    {"name": "vm3", "mac": "52:54:00:00:00:03", "network": "public", "ipv4": ["203.0.113.6"],
     "ipv6": ["2001:db8:cb00:7103::/64"]},
]
VM_MACS = {"vm1": "52:54:00:00:00:01", "vm2": "52:54:00:00:00:02", "vm3": "52:54:00:00:00:99"}
GATEWAYS = {"vm1": "203.0.113.254", "vm2": "198.51.100.254", "vm3": "203.0.113.254"}
DHCLIENT_CONF = """request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers,
        domain-search, host-name, interface-mtu, dhcp6.name-servers, dhcp6.domain-search;
"""
# Records the variables dhclient hands its script; configures the address
# in the VM's own namespace; never touches resolv.conf.
SCRIPT = """#!/bin/sh
env | grep -E '^(reason|interface|new_|old_)' | sort > "{out}.$reason.tmp" && mv "{out}.$reason.tmp" "{out}.$reason"
case "$reason" in
  PREINIT) ip link set "$interface" up ;;
  BOUND|RENEW|REBIND|REBOOT)
    ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface"
    ip route replace default via "$new_routers" dev "$interface" ;;
  BOUND6|RENEW6|REBIND6)
    if [ -n "$new_ip6_address" ]; then ip -6 addr replace "$new_ip6_address/$new_ip6_prefixlen" dev "$interface" nodad; fi ;;
esac
exit 0
"""


@dataclass
class Lab:
    prefix: str
    workdir: Path
    namespaces: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    etc_dirs: list[Path] = field(default_factory=list)
    responder: subprocess.Popen[str] | None = None

    @property
    def hv(self) -> str:
        return f"{self.prefix}-hv"

    def vm(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def exec(self, ns: str, *cmd: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *cmd, check=check, timeout=timeout)

    def add_ns(self, ns: str) -> None:
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")

    def start(self, cmd: list[str], log: Path) -> subprocess.Popen[str]:
        out = open(log, "w")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
        out.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    # -- the responder ------------------------------------------------------

    def write_ports(self, ports: list[dict[str, object]]) -> None:
        tmp = self.workdir / "ports.tmp"
        tmp.write_text(json.dumps(ports))
        tmp.replace(self.workdir / "ports.json")

    def reload(self) -> None:
        assert self.responder is not None
        self.responder.send_signal(signal.SIGHUP)

    def stats(self) -> dict[str, object]:
        assert self.responder is not None and self.responder.poll() is None, self.responder_log()
        path = self.workdir / "stats.json"
        before = path.stat().st_mtime_ns if path.exists() else 0
        self.responder.send_signal(signal.SIGUSR1)
        wait_for(lambda: path.exists() and path.stat().st_mtime_ns != before, what="responder stats")
        return dict(json.loads(path.read_text()))

    def responder_log(self) -> str:
        return (self.workdir / "responder.log").read_text()

    # -- clients ------------------------------------------------------------------

    def dhclient(self, vm: str, *flags: str) -> tuple[subprocess.Popen[str], Path]:
        """dhclient in the foreground (-d), so its PID is ours to stop; the
        script writes <out>.<reason> files."""
        tag = f"{vm}{''.join(flags).replace('-', '')}"
        out = self.workdir / f"lease-{tag}"
        # A fresh client every time: no lease to reboot from, no old outputs.
        for old in (*self.workdir.glob(f"lease-{tag}.*"), self.workdir / f"{tag}.leases"):
            old.unlink(missing_ok=True)
        script = self.workdir / f"script-{tag}.sh"
        script.write_text(SCRIPT.format(out=out))
        script.chmod(0o755)
        conf = self.workdir / "dhclient.conf"
        conf.write_text(DHCLIENT_CONF)
        cmd = ["ip", "netns", "exec", self.vm(vm), "dhclient", "-d", "-v", *flags, "-cf", str(conf),
               "-sf", str(script), "-lf", str(self.workdir / f"{tag}.leases"),
               "-pf", str(self.workdir / f"{tag}.pid"), "eth0"]
        return self.start(cmd, self.workdir / f"dhclient-{tag}.log"), out

    def lease(self, out: Path, *reasons: str, timeout: float = 10) -> dict[str, str]:
        def found() -> Path | None:
            return next((p for r in reasons if (p := Path(f"{out}.{r}")).exists()), None)

        wait_for(lambda: found() is not None, timeout=timeout, what=f"dhclient {out.name}: {reasons}")
        path = found()
        assert path is not None
        return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def build(lab: Lab) -> None:
    lab.add_ns(lab.hv)
    for name, mac in VM_MACS.items():
        vm = lab.vm(name)
        lab.add_ns(vm)
        # resolv.conf of the namespace: `ip netns exec` bind-mounts it over
        # /etc/resolv.conf, so nothing run in the VM can reach the machine's.
        d = NETNS_ETC / vm
        d.mkdir(parents=True, exist_ok=True)
        lab.etc_dirs.append(d)
        (d / "resolv.conf").write_text("# hvrouter test namespace\n")
        # Before eth0 exists, so it inherits them: no DAD (the link-local is
        # usable at once, dhclient -6 can bind), RS without the random delay.
        lab.exec(vm, "sh", "-c", "for k in accept_dad router_solicitation_delay; do "
                 "echo 0 > /proc/sys/net/ipv6/conf/default/$k; echo 0 > /proc/sys/net/ipv6/conf/all/$k || true; done")
        sh("ip", "-n", vm, "link", "add", "eth0", "address", mac, "type", "veth", "peer", "name", name, "netns", lab.hv)
        sh("ip", "-n", lab.hv, "link", "set", name, "up")
        # As the planner has it: the tap's only address is the gateway, /32, scope link.
        sh("ip", "-n", lab.hv, "addr", "add", f"{GATEWAYS[name]}/32", "dev", name, "scope", "link")
    (lab.workdir / "hvrouter.yaml").write_text(CONFIG)
    lab.write_ports(PORTS)
    log = lab.workdir / "responder.log"
    lab.responder = lab.start(
        ["ip", "netns", "exec", lab.hv, sys.executable, "-m", "hvrouter.services.run",
         "--config", str(lab.workdir / "hvrouter.yaml"), "--ports", str(lab.workdir / "ports.json"),
         "--stats", str(lab.workdir / "stats.json"), "--poll", "0.2"],
        log,
    )
    wait_for(lambda: "ready" in log.read_text() or lab.responder.poll() is not None,  # type: ignore[union-attr]
             what="responder start")
    assert lab.responder.poll() is None, log.read_text()
    for name in VM_MACS:
        sh("ip", "-n", lab.vm(name), "link", "set", "eth0", "up")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(prefix=f"hvsv-{secrets.token_hex(3)}", workdir=tmp_path_factory.mktemp("services"))
    made_etc = not NETNS_ETC.exists()
    try:
        build(lab)
        yield lab
    finally:
        for proc in reversed(lab.procs):
            lab.stop(proc)
        for ns in reversed(lab.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for d in lab.etc_dirs:
            shutil.rmtree(d, ignore_errors=True)
        if made_etc:
            try:
                NETNS_ETC.rmdir()
            except OSError:
                pass  # someone else's namespaces use it now


def test_dhcpv4_real_clients(lab: Lab) -> None:
    (p1, out1), (p2, out2) = lab.dhclient("vm1"), lab.dhclient("vm2")
    got1, got2 = lab.lease(out1, "BOUND"), lab.lease(out2, "BOUND")
    lab.stop(p1)
    lab.stop(p2)
    assert got1["new_ip_address"] == "203.0.113.4"
    assert got1["new_subnet_mask"] == "255.255.255.0"
    assert got1["new_routers"] == "203.0.113.254"
    assert got1["new_dhcp_server_identifier"] == "203.0.113.254"
    assert got1["new_domain_name_servers"] == "192.0.2.53"
    assert got1["new_domain_name"] == "example.test"
    assert got1["new_domain_search"] == "example.test. lab.example.test."
    assert got1["new_host_name"] == "vm1"
    assert got1["new_interface_mtu"] == "1400"
    assert got1["new_dhcp_lease_time"] == "3600"
    # Another port on the same hypervisor gets its own address, nothing of vm1's.
    assert (got2["new_ip_address"], got2["new_routers"], got2["new_host_name"]) == ("198.51.100.5", "198.51.100.254", "vm2")
    addrs = lab.exec(lab.vm("vm1"), "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
    assert "203.0.113.4/24" in addrs
    assert "default via 203.0.113.254" in lab.exec(lab.vm("vm1"), "ip", "route").stdout


def test_slaac_and_router_advertisement(lab: Lab) -> None:
    vm = lab.vm("vm1")

    def slaac() -> bool:
        out = lab.exec(vm, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global").stdout
        return "2001:db8:cb00:7101:5054:ff:fe00:1/64" in out

    wait_for(slaac, timeout=10, what="SLAAC address (prefix + EUI-64) in vm1")
    route = lab.exec(vm, "ip", "-6", "route", "show", "default").stdout
    assert "via fe80::1 dev eth0" in route and "proto ra" in route
    ra = lab.exec(vm, "rdisc6", "-1", "-w", "2000", "eth0").stdout
    for line in ("Stateful address conf.    :           No", "Stateful other conf.      :          Yes",
                 "Router lifetime           :         1200", "MTU                      :         1400",
                 "Prefix                   : 2001:db8:cb00:7101::/64", "Recursive DNS server     : 2001:db8:ffff::53",
                 "DNS search list          : example.test lab.example.test", "from fe80::1"):
        assert line in ra, ra
    assert "On-link                 :          Yes" in ra and "Autonomous address conf.:          Yes" in ra


def test_dhcpv6_stateless(lab: Lab) -> None:
    proc, out = lab.dhclient("vm1", "-6", "-S")
    got = lab.lease(out, "BOUND6", "RENEW6")
    lab.stop(proc)
    assert got["new_dhcp6_name_servers"] == "2001:db8:ffff::53"
    assert got["new_dhcp6_domain_search"] == "example.test. lab.example.test."
    assert "new_ip6_address" not in got


def test_dhcpv6_stateful_on_shared_prefix(lab: Lab) -> None:
    vm = lab.vm("vm2")
    proc, out = lab.dhclient("vm2", "-6")
    got = lab.lease(out, "BOUND6")
    lab.stop(proc)
    assert got["new_ip6_address"] == "2001:db8:5a::5"
    assert got["new_dhcp6_name_servers"] == "2001:db8:ffff::53"
    assert "2001:db8:5a::5/128" in lab.exec(vm, "ip", "-6", "-o", "addr", "show", "dev", "eth0").stdout
    ra = lab.exec(vm, "rdisc6", "-1", "-w", "2000", "eth0").stdout
    assert "Stateful address conf.    :          Yes" in ra
    assert "Prefix                   : 2001:db8:5a::/64" in ra
    # Off-link, and no SLAAC: the /128 from DHCPv6 is the one routed.
    assert "On-link                 :           No" in ra and "Autonomous address conf.:           No" in ra
    assert "via fe80::1" in lab.exec(vm, "ip", "-6", "route", "show", "default").stdout
    globals_ = lab.exec(vm, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global").stdout
    assert "5054:ff:fe00:2" not in globals_


def test_fuzz_storm_while_a_real_client_is_served(lab: Lab) -> None:
    """Junk from vm1 (15k mutated frames, three protocols) while vm2's
    dhclient gets a fresh lease."""
    before = lab.stats()
    fuzzer = lab.start(["ip", "netns", "exec", lab.vm("vm1"), sys.executable, "-m", "hvrouter.services.fuzz",
                        "--interface", "eth0", "--mac", "52:54:00:00:00:01", "--count", "5000", "--seed", "7"],
                       lab.workdir / "fuzz.log")
    proc, out = lab.dhclient("vm2")
    got = lab.lease(out, "BOUND")
    lab.stop(proc)
    assert fuzzer.wait(60) == 0, (lab.workdir / "fuzz.log").read_text()
    assert got["new_ip_address"] == "198.51.100.5"
    # The responder still answers vm1 afterwards.
    assert "from fe80::1" in lab.exec(lab.vm("vm1"), "rdisc6", "-1", "-w", "2000", "eth0").stdout

    # Frames the kernel filter lets through (most of them) are counted once
    # the responder has drained its socket.
    seen: list[object] = []

    def settled() -> bool:
        seen.append(lab.stats()["received"])
        return len(seen) >= 2 and seen[-1] == seen[-2]

    wait_for(settled, timeout=10, what="the storm to be counted")
    after = lab.stats()
    assert int(after["received"]) - int(before["received"]) > 5000  # type: ignore[call-overload]
    assert after["errors"] == 0
    assert int(after["malformed"]) > int(before["malformed"]) + 1000  # type: ignore[call-overload]
    outcomes = ("answered", "no_reply", "ignored_unknown_interface", "ignored_foreign_mac", "malformed", "errors")
    assert sum(int(after[k]) for k in outcomes) == after["received"]  # type: ignore[call-overload]
    kernel = after["kernel"]
    assert isinstance(kernel, dict)
    print(f"storm: {after['received']} received, kernel drops {kernel['drops']}")


def test_wrong_mac_and_removed_port_get_nothing(lab: Lab) -> None:
    """vm3's VM uses a MAC that is not its port's; vm1's port is deleted
    (the responder is updated, not restarted). Both ask for 3 s."""
    lab.write_ports([p for p in PORTS if p["name"] != "vm1"])
    lab.reload()
    wait_for(lambda: lab.stats()["ports_served"] == 2, what="the port table without vm1")
    before = lab.stats()
    v4_3, out_v4_3 = lab.dhclient("vm3")
    v6_3, out_v6_3 = lab.dhclient("vm3", "-6", "-S")
    v4_1, out_v4_1 = lab.dhclient("vm1")
    v6_1, out_v6_1 = lab.dhclient("vm1", "-6", "-S")
    lab.exec(lab.vm("vm3"), "rdisc6", "-1", "-w", "300", "-r", "2", "eth0", check=False)  # solicitations
    rs = lab.start(["ip", "netns", "exec", lab.vm("vm1"), "rdisc6", "-1", "-w", "1000", "-r", "3", "eth0"],
                   lab.workdir / "rdisc6-vm1.log")
    time.sleep(3.5)

    # On a loaded machine the clients may take longer to send everything:
    # wait (bounded) until their requests have been seen, then look.
    def seen_all() -> bool:
        now = lab.stats()
        ports_now = now["ports"]
        assert isinstance(ports_now, dict)
        foreign = ports_now["vm3"]["ignored_foreign_mac"] - before["ports"]["vm3"]["ignored_foreign_mac"]  # type: ignore[index]
        unknown = int(now["ignored_unknown_interface"]) - int(before["ignored_unknown_interface"])  # type: ignore[call-overload]
        return bool(foreign >= 3 and unknown >= 3)

    wait_for(seen_all, timeout=20, what="the clients' requests reaching the responder")
    for proc in (v4_3, v6_3, v4_1, v6_1):
        lab.stop(proc)
    rs.wait(10)
    for out in (out_v4_3, out_v6_3, out_v4_1, out_v6_1):
        for reason in ("BOUND", "BOUND6", "RENEW6"):
            assert not Path(f"{out}.{reason}").exists(), f"{out.name} got an answer ({reason})"
    # vm1's timers are gone with its port: not even a periodic RA. (vm3's
    # port still advertises to whoever is on its tap, by multicast: only
    # the foreign MAC's own solicitations and requests go unanswered.)
    assert "from fe80::1" not in (lab.workdir / "rdisc6-vm1.log").read_text()
    after = lab.stats()
    ports = after["ports"]
    assert isinstance(ports, dict) and "vm1" not in ports
    vm3_after = ports["vm3"]
    vm3_before = before["ports"]["vm3"]  # type: ignore[index]
    assert vm3_after["ignored_foreign_mac"] - vm3_before["ignored_foreign_mac"] >= 3  # DHCPv4, DHCPv6, RS
    assert vm3_after["answered"] == vm3_before["answered"]
    assert "ra.solicited" not in vm3_after["served"]
    unknown = int(after["ignored_unknown_interface"]) - int(before["ignored_unknown_interface"])  # type: ignore[call-overload]
    assert unknown >= 3
    assert after["errors"] == 0
