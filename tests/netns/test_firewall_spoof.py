"""Anti-spoofing (issue 5) against real packets, in the lab of fwlab.py with
namespaces hvas-<random>-<role>: a VM may send only with its MAC, from its
addresses, and claim only its own addresses in ARP; every drop is counted
for its port. Each test first shows what the kernel alone lets through.

Counters are compared with the rule counters of the same run rather than
with fixed numbers where the VM's own kernel may add packets of its own
(neighbour probes, MLD reports) on timers."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import sh, wait_for
from fwlab import GW4, MAC1, MAC2, PEER, PEER_V6, VM1_V4, VM1_V6, VM2_V6, FwLab, ns_exec, settle
from fwlab import lab as fw_lab

from hvrouter.firewall import counter_name
from hvrouter.ports import eui64_link_local

VM2_V4 = "198.51.100.5"  # vm2's address in the store; its namespace has none (a DHCP client)
VM1_LL = eui64_link_local(MAC1)
OTHER_MAC = "52:54:00:00:00:99"
DISCOVER = ("--device", "eth0", "--broadcast", "--sport", "68")  # to 255.255.255.255:67, from 0.0.0.0 on vm2
SPOOF_RULES = {  # (family, chain, comment prefix) of every rule that sends a packet to chain spoofed
    ("inet", "vm_source", "a frame must carry"),
    ("inet", "vm_source", "IPv4 source not"),
    ("inet", "vm_source", "IPv6 source not"),
    ("inet", "vm_source", "source not routed"),
    ("arp", "input", "a frame must carry"),
    ("arp", "input", "ARP may only announce"),
    ("arp", "input", "ARP may only claim"),
}


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[FwLab]:
    with fw_lab(tmp_path, "hvas") as made:
        yield made


def udp_seen(log: Path, port: int) -> list[str]:
    return [line.split()[2] for line in log.read_text().splitlines() if line.startswith(f"udp {port} ")]


def rule_drops(lab: FwLab) -> int:
    return sum(lab.counter(chain, comment, family) for family, chain, comment in SPOOF_RULES)


def arp(lab: FwLab, op: str, sha: str, sip: str, tip: str, *extra: str) -> None:
    lab.tool(lab.vm1, "arp", "eth0", "--op", op, "--sha", sha, "--sip", sip, "--tip", tip, *extra)


def link(ns: str, dev: str) -> dict[str, object]:
    out = json.loads(sh("ip", "-n", ns, "-j", "-6", "addr", "show", "dev", dev).stdout)[0]
    assert isinstance(out, dict)
    return out


def tap_link_local(lab: FwLab) -> str:
    infos = link(lab.hv, "vm1")["addr_info"]
    assert isinstance(infos, list)
    return next(str(a["local"]) for a in infos if str(a["local"]).startswith("fe80:"))


def test_a_vm_using_another_vms_addresses_is_dropped_and_counted_for_its_port(lab: FwLab, tmp_path: Path) -> None:
    peer_log = lab.listen(lab.peer, tmp_path / "peer.log", udp=(5001,))
    # Neighbours resolved from the VM's own addresses first: the stolen ones
    # are then only ever IP sources, never ARP/ND senders.
    assert lab.ping(lab.vm1, PEER) and lab.ping(lab.vm1, PEER_V6, "-I", VM1_V6)
    sh("ip", "-n", lab.vm1, "addr", "add", f"{VM2_V4}/32", "dev", "eth0")
    sh("ip", "-n", lab.vm1, "addr", "add", f"{VM2_V6}/128", "dev", "eth0", "nodad")
    # IPv6 has no rp_filter: without the firewall vm1 uses vm2's address.
    lab.send_udp(lab.vm1, PEER_V6, 5001, "--src", VM2_V6)
    wait_for(lambda: udp_seen(peer_log, 5001) == [VM2_V6], what="stolen IPv6 source without the firewall")

    lab.firewall()
    assert lab.drops() == {"vm1": 0, "vm2": 0}
    assert not lab.ping(lab.vm1, PEER_V6, "-I", VM2_V6)
    lab.send_udp(lab.vm1, PEER_V6, 5001, "--src", VM2_V6)
    lab.send_udp(lab.vm1, PEER, 5001, "--src", VM2_V4)
    lab.send_udp(lab.vm1, PEER, 5001)  # its own address: passes
    wait_for(lambda: VM1_V4 in udp_seen(peer_log, 5001), what="datagram from the VM's own address")
    settle()
    assert udp_seen(peer_log, 5001) == [VM2_V6, VM1_V4]
    assert lab.counter("vm_source", "IPv4 source not") == 1
    assert lab.counter("vm_source", "IPv6 source not") == 2
    drops = lab.drops()
    assert drops["vm2"] == 0 and drops["vm1"] == rule_drops(lab) >= 3
    assert lab.ping(lab.vm1, PEER) and lab.ping(lab.vm1, PEER_V6, "-I", VM1_V6)

    # A port change replaces the tables; the counts are carried over.
    lab.host.hvrouter("port", "add", "vm3", "--mac", "52:54:00:00:00:03", "--network", "public", "--ipv4", "203.0.113.7")
    before = lab.drops()["vm1"]
    lab.firewall()
    assert lab.drops() == {"vm1": before, "vm2": 0, "vm3": 0}
    assert f"counter {counter_name('vm1')} " in sh(*lab.nft, "list", "counters", "table", "inet", "hvrouter").stdout

    # Behind the sets, the reverse-path check: an address of the port that is
    # not routed to its tap (the route deleted by hand) is dropped too.
    lab.host.ip("route", "del", f"{VM1_V4}/32", "table", "90")
    lab.send_udp(lab.vm1, PEER, 5001)
    wait_for(lambda: lab.counter("vm_source", "source not routed") == 1, timeout=3, what="reverse-path drop")
    assert lab.drops()["vm1"] == before + 1


def test_a_vm_that_changes_its_mac_is_dropped(lab: FwLab) -> None:
    hv_mac = str(json.loads(lab.host.ip("-j", "link", "show", "vm1"))[0]["address"])
    # Without the firewall nothing checks the MAC.
    sh("ip", "-n", lab.vm1, "link", "set", "eth0", "address", OTHER_MAC)
    assert lab.ping(lab.vm1, PEER)
    sh("ip", "-n", lab.vm1, "link", "set", "eth0", "address", MAC1)
    lab.host.ip("neigh", "flush", "dev", "vm1")
    assert lab.ping(lab.vm1, PEER)

    lab.firewall()
    assert lab.ping(lab.vm1, PEER)
    sh("ip", "-n", lab.vm1, "link", "set", "eth0", "address", OTHER_MAC)
    # A MAC change flushes the VM's ARP cache: a static entry makes it send
    # IP at once; without it the ARP request (from the new MAC) goes first.
    sh("ip", "-n", lab.vm1, "neigh", "replace", GW4, "lladdr", hv_mac, "dev", "eth0")
    assert not lab.ping(lab.vm1, PEER)
    assert lab.counter("vm_source", "a frame must carry") >= 1
    sh("ip", "-n", lab.vm1, "neigh", "del", GW4, "dev", "eth0")
    lab.tool(lab.vm1, "udp", PEER, "5001")
    wait_for(lambda: lab.counter("input", "a frame must carry", "arp") >= 1, timeout=3, what="ARP from the new MAC")
    # The hypervisor still knows the VM by the MAC it was given.
    assert f"{VM1_V4} vm1 {MAC1}" in lab.neigh()
    drops = lab.drops()
    assert drops["vm1"] == rule_drops(lab) >= 2 and drops["vm2"] == 0

    # Its own MAC back, it is served again.
    sh("ip", "-n", lab.vm1, "link", "set", "eth0", "address", MAC1)
    assert lab.ping(lab.vm1, PEER)


def test_arp_claiming_other_addresses_changes_nothing_on_the_hypervisor(lab: FwLab) -> None:
    routes = {dst: lab.route_dev(dst) for dst in (VM2_V4, PEER, VM1_V4)}
    assert routes == {VM2_V4: "vm2", PEER: "up0", VM1_V4: "vm1"}
    # The kernel alone: with reverse-path filtering off on the tap (the
    # config allows `tap: {rp_filter: 0}`), a request from vm1 in the name
    # of vm2's address gets vm2's address into the neighbour table.
    ns_exec(lab.hv, "sysctl", "-q", "-w", "net.ipv4.conf.vm1.rp_filter=0")
    arp(lab, "request", MAC1, VM2_V4, GW4)
    wait_for(lambda: f"{VM2_V4} vm1 {MAC1}" in lab.neigh(), timeout=3, what="neighbour entry without the firewall")
    lab.host.ip("neigh", "flush", "dev", "vm1")

    lab.firewall()
    hv_mac = str(json.loads(lab.host.ip("-j", "link", "show", "vm1"))[0]["address"])
    arp(lab, "request", MAC1, VM2_V4, GW4)  # who-has the gateway, tell vm2's address
    arp(lab, "request", MAC1, VM2_V4, VM2_V4)  # gratuitous ARP for vm2's address
    arp(lab, "reply", MAC1, PEER, GW4, "--dst", hv_mac, "--tha", hv_mac)  # the fabric peer's address
    arp(lab, "reply", MAC1, GW4, VM2_V4)  # the gateway's address, broadcast
    # Its own address, but announced for another MAC (Ethernet source its own).
    arp(lab, "reply", OTHER_MAC, VM1_V4, GW4, "--src", MAC1, "--dst", hv_mac, "--tha", hv_mac)
    settle()
    assert [n for n in lab.neigh() if " vm1 " in n] == []
    assert {dst: lab.route_dev(dst) for dst in routes} == routes
    assert lab.counter("input", "ARP may only claim", "arp") == 4
    assert lab.counter("input", "ARP may only announce", "arp") == 1
    assert lab.drops() == {"vm1": 5, "vm2": 0}

    # An ARP probe (sender 0.0.0.0) claims nothing and passes: a table of
    # the test's own, hooked after ours, sees it.
    rules = ("table arp hvastest {\n chain after {\n  type filter hook input priority 10; policy accept;\n"
             '  iifname "vm1" arp saddr ip 0.0.0.0 counter\n }\n}\n')
    subprocess.run([*lab.nft, "-f", "-"], input=rules, text=True, check=True, capture_output=True)
    arp(lab, "request", MAC1, "0.0.0.0", VM1_V4)
    wait_for(lambda: "packets 1 " in sh(*lab.nft, "list", "table", "arp", "hvastest").stdout, timeout=3,
             what="ARP probe past the hvrouter table")
    # What is its own still works: vm1's address in the name of vm1.
    arp(lab, "request", MAC1, VM1_V4, GW4)
    wait_for(lambda: f"{VM1_V4} vm1 {MAC1}" in lab.neigh(), timeout=3, what="vm1's own ARP")
    assert lab.drops() == {"vm1": 5, "vm2": 0}


def test_ipv6_sources_outside_the_prefix_dropped_slaac_and_link_local_pass(lab: FwLab, tmp_path: Path) -> None:
    peer_log = lab.listen(lab.peer, tmp_path / "peer.log", udp=(5001,))
    hv_log = lab.listen(lab.hv, tmp_path / "hv.log", udp=(5002,))
    inside, outside = "2001:db8:cb00:7101::abcd", "2001:db8:cb00:7102::1"  # vm1 owns 2001:db8:cb00:7101::/64
    for addr in (inside, outside):
        sh("ip", "-n", lab.vm1, "addr", "add", f"{addr}/64", "dev", "eth0", "nodad")
    lab.send_udp(lab.vm1, PEER_V6, 5001, "--src", outside)
    wait_for(lambda: udp_seen(peer_log, 5001) == [outside], what="IPv6 from outside the prefix without the firewall")

    lab.firewall()
    for src in (outside, inside, VM1_V6):  # VM1_V6: SLAAC (EUI-64) in its prefix
        lab.send_udp(lab.vm1, PEER_V6, 5001, "--src", src)
    wait_for(lambda: len(udp_seen(peer_log, 5001)) == 3, what="IPv6 from inside the prefix")
    settle()
    assert sorted(udp_seen(peer_log, 5001)[1:]) == sorted([inside, VM1_V6])
    assert lab.counter("vm_source", "IPv6 source not") >= 1

    # Neighbour discovery from link-local addresses: with both caches empty,
    # IPv6 to the fabric and to the hypervisor's own link-local works.
    sh("ip", "-n", lab.vm1, "-6", "neigh", "flush", "dev", "eth0")
    lab.host.ip("-6", "neigh", "flush", "dev", "vm1")
    assert lab.ping(lab.vm1, PEER_V6, "-I", VM1_V6)
    hv_ll = tap_link_local(lab)
    assert lab.ping(lab.vm1, f"{hv_ll}%eth0")

    # A link-local address other than the EUI-64 one of its MAC is not its own.
    sh("ip", "-n", lab.vm1, "addr", "add", "fe80::dead/64", "dev", "eth0", "nodad")
    lab.send_udp(lab.vm1, f"{hv_ll}%eth0", 5002, "--src", "fe80::dead%eth0")
    lab.send_udp(lab.vm1, f"{hv_ll}%eth0", 5002, "--src", f"{VM1_LL}%eth0")
    wait_for(lambda: udp_seen(hv_log, 5002) == [VM1_LL], what="datagram from the VM's link-local")
    settle()
    assert udp_seen(hv_log, 5002) == [VM1_LL]
    assert lab.counter("vm_source", "IPv6 source not") >= 2
    drops = lab.drops()
    assert drops["vm1"] == rule_drops(lab) >= 2 and drops["vm2"] == 0


def test_dhcp_and_dad_bootstrap_pass_from_the_unspecified_address(lab: FwLab, tmp_path: Path) -> None:
    hv_log = lab.listen(lab.hv, tmp_path / "hv.log", udp=(67,))
    lab.firewall()
    # DHCP: from 0.0.0.0 (vm2 has no IPv4 address yet) to the broadcast address.
    lab.send_udp(lab.vm2, "255.255.255.255", 67, *DISCOVER)
    wait_for(lambda: udp_seen(hv_log, 67) == ["0.0.0.0"], what="DHCP broadcast from 0.0.0.0")

    # DAD: a neighbour solicitation from ::. A table of the test's own counts
    # it before hvrouter's raw chain (-300) and after it.
    rules = (
        "table inet hvastest {\n"
        " chain before {\n  type filter hook prerouting priority -350; policy accept;\n"
        '  iifname "vm1" ip6 saddr :: icmpv6 type nd-neighbor-solicit counter\n }\n'
        " chain after {\n  type filter hook prerouting priority -250; policy accept;\n"
        '  iifname "vm1" ip6 saddr :: icmpv6 type nd-neighbor-solicit counter\n }\n'
        "}\n"
    )
    subprocess.run([*lab.nft, "-f", "-"], input=rules, text=True, check=True, capture_output=True)
    ns_exec(lab.vm1, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/eth0/accept_dad")
    sh("ip", "-n", lab.vm1, "addr", "add", "2001:db8:cb00:7101::d/64", "dev", "eth0")

    def dad_counts() -> tuple[int, int]:
        out = sh(*lab.nft, "list", "table", "inet", "hvastest").stdout
        before, after = (int(line.split("packets ")[1].split()[0]) for line in out.splitlines() if "packets" in line)
        return before, after

    wait_for(lambda: dad_counts()[0] > 0, timeout=5, what="DAD neighbour solicitation from ::")
    assert dad_counts()[1] == dad_counts()[0]
    assert lab.drops() == {"vm1": 0, "vm2": 0}

    # The same DISCOVER from a MAC that is not the port's is dropped.
    sh("ip", "-n", lab.vm2, "link", "set", "eth0", "address", OTHER_MAC)
    lab.send_udp(lab.vm2, "255.255.255.255", 67, *DISCOVER)
    wait_for(lambda: lab.drops()["vm2"] >= 1, timeout=3, what="DISCOVER from another MAC counted")
    settle()
    assert udp_seen(hv_log, 67) == ["0.0.0.0"]
    sh("ip", "-n", lab.vm2, "link", "set", "eth0", "address", MAC2)
