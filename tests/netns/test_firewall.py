"""The hvrouter tables against real packets: a hypervisor namespace with two
VMs and two uplinks (see fwlab.py). Each test first shows that the traffic it
expects the firewall to stop does flow without it, when the kernel alone
would let it through. Anti-spoofing: test_firewall_spoof.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import sh, wait_for
from fwlab import (
    GW4,
    HV_UP0,
    HV_UP0_V6,
    PEER,
    PEER_V6,
    VM1_NAT,
    VM1_V4,
    VM1_V6,
    VM2_NAT6,
    VM2_V6,
    FwLab,
    ns_exec,
    settle,
)
from fwlab import lab as fw_lab

from hvrouter.firewall import FirewallError, apply, observe, remove, sync


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[FwLab]:
    with fw_lab(tmp_path, "hvfw") as made:
        yield made


def udp_seen(log: Path, port: int) -> list[str]:
    return [line.split()[2] for line in log.read_text().splitlines() if line.startswith(f"udp {port} ")]


def test_vms_reach_no_bgp_or_bfd_anywhere_but_other_ports(lab: FwLab, tmp_path: Path) -> None:
    hv_log = lab.listen(lab.hv, tmp_path / "hv.log", tcp=(179, 2222), udp=(3784, 5001))
    peer_log = lab.listen(lab.peer, tmp_path / "peer.log", tcp=(179, 2222), udp=(3784, 5001))
    targets = ((GW4, 179), (HV_UP0, 179), (HV_UP0_V6, 179), (PEER, 179), (PEER_V6, 179),
               (GW4, 2222), (PEER, 2222), (PEER_V6, 2222))
    assert all(lab.connects(lab.vm1, *targets).values()), "without the firewall everything is reachable"

    lab.firewall()
    got = lab.connects(lab.vm1, *targets, timeout=0.7)
    assert [t for t, ok in got.items() if ok] == [(GW4, 2222), (PEER, 2222), (PEER_V6, 2222)]
    assert lab.counter("input", "the hypervisor's BGP") >= 3  # SYNs to the gateway and to up0, both families
    assert lab.counter("forward", "VMs never reach BGP") >= 2

    for dst in (GW4, PEER, PEER_V6):
        lab.send_udp(lab.vm1, dst, 3784)
        lab.send_udp(lab.vm1, dst, 5001)
    wait_for(lambda: len(udp_seen(hv_log, 5001)) == 1 and len(udp_seen(peer_log, 5001)) == 2, what="UDP 5001")
    settle()
    assert udp_seen(hv_log, 3784) == [] and udp_seen(peer_log, 3784) == []
    assert lab.counter("input", "nor does its BFD") == 1
    assert lab.counter("forward", "VMs never reach BFD") == 2
    # The peer (a fabric neighbour, not a VM) still reaches the hypervisor's BFD.
    lab.send_udp(lab.peer, HV_UP0, 3784)
    wait_for(lambda: udp_seen(hv_log, 3784) == [PEER], what="BFD from the peer")


def test_forwarding_only_between_taps_and_uplinks(lab: FwLab) -> None:
    assert lab.ping(lab.peer2, PEER), "transit through the hypervisor works without the firewall"
    lab.firewall()
    before = lab.counter("forward", "anything else")
    assert not lab.ping(lab.peer2, PEER)
    assert lab.counter("forward", "anything else") > before  # logged (rate-limited) and dropped
    # What the firewall is for still flows: VM <-> fabric, VM <-> VM, both families.
    assert lab.ping(lab.vm1, PEER) and lab.ping(lab.peer, VM1_V4)
    assert lab.ping(lab.vm1, PEER_V6) and lab.ping(lab.peer, VM1_V6)
    assert lab.ping(lab.vm1, VM2_V6) and lab.ping(lab.vm2, VM1_V6)


def test_dnat_of_public_addresses(lab: FwLab) -> None:
    lab.firewall()
    # vm1 holds only its primary address; the answer comes from the public one.
    assert sh("ip", "-n", lab.vm1, "-4", "-o", "addr", "show", "dev", "eth0").stdout.count(" inet ") == 1
    assert f"from {VM1_NAT}:" in lab.ping(lab.peer, VM1_NAT)
    assert f"from {VM2_NAT6}:" in lab.ping(lab.peer, VM2_NAT6)
    # The hypervisor itself, and another VM of the same hypervisor, too.
    assert f"from {VM1_NAT}:" in lab.ping(lab.hv, VM1_NAT)
    assert f"from {VM2_NAT6}:" in lab.ping(lab.vm1, VM2_NAT6)


def _conntrack(ns: str) -> str | None:
    proc = ns_exec(ns, "sh", "-c", "cat /proc/net/nf_conntrack 2>/dev/null", check=False)
    if proc.returncode == 0 and proc.stdout:
        return proc.stdout
    if shutil.which("conntrack"):
        return ns_exec(ns, "conntrack", "-L", check=False).stdout
    return None


def test_bfd_creates_no_conntrack_entry(lab: FwLab, tmp_path: Path) -> None:
    hv_log = lab.listen(lab.hv, tmp_path / "hv.log", udp=(3784, 3785, 5001))
    lab.firewall()  # vm1 has a NAT address: conntrack is on in the hypervisor
    lab.send_udp(lab.peer, HV_UP0, 3784, "--sport", "49152")
    lab.send_udp(lab.peer, HV_UP0, 3785, "--sport", "49153")
    lab.send_udp(lab.peer, HV_UP0, 5001, "--sport", "49154")
    lab.send_udp(lab.hv, PEER, 3784, "--sport", "49155")  # our own BFD, outgoing
    wait_for(lambda: len(hv_log.read_text().splitlines()) == 4, what="datagrams at the hypervisor")
    table = _conntrack(lab.hv)
    if table is not None:
        assert "dport=5001" in table, "conntrack is on: the ordinary datagram is tracked"
        for port in ("3784", "3785", "49152", "49153", "49155"):
            assert f"port={port} " not in table, table
    else:  # no way to list conntrack here: the notrack rules must have matched
        assert lab.counter("raw_prerouting", "BFD: stateless") == 2
        assert lab.counter("raw_output", "our own BFD") == 1


def test_sync_applies_on_change_only_and_restores_deleted_tables(lab: FwLab) -> None:
    cfg, ports = lab.cfg(), lab.ports()
    assert observe(lab.nft) is None
    assert sync(cfg, ports, dry_run=True, nft=lab.nft) and observe(lab.nft) is None
    assert sync(cfg, ports, nft=lab.nft)
    assert not sync(cfg, ports, nft=lab.nft)
    sh(*lab.nft, "delete", "table", "inet", "hvrouter")
    assert sync(cfg, ports, nft=lab.nft), "a table deleted by hand comes back"
    assert observe(lab.nft) == lab.render().split('comment "')[1].split('"')[0]
    sh(*lab.nft, "delete", "table", "arp", "hvrouter")
    assert observe(lab.nft) == "" and sync(cfg, ports, nft=lab.nft), "so does the ARP table alone"
    # A port change is a new table; a failed apply leaves the old one in place.
    fewer = [replace(p, nat=()) for p in ports]
    assert sync(cfg, fewer, nft=lab.nft) and not sync(cfg, fewer, nft=lab.nft)
    # Without NAT addresses the table has no NAT chains, and so leaves
    # connection tracking off for all the traffic of the host.
    assert lab.ping(lab.peer, HV_UP0)
    assert f"src={PEER} " not in (_conntrack(lab.hv) or "")
    kept = observe(lab.nft)
    with pytest.raises(FirewallError, match="<hvrouter table>"):
        apply("table inet hvrouter { chain x { bogus } }\n", nft=lab.nft)
    assert observe(lab.nft) == kept
    # A table of the same name made by hand is not ours: replaced.
    sh(*lab.nft, "delete", "table", "inet", "hvrouter")
    sh(*lab.nft, "add", "table", "inet", "hvrouter")
    assert observe(lab.nft) == "" and sync(cfg, fewer, nft=lab.nft) and observe(lab.nft) == kept
    # Uninstall: both tables go, in one transaction.
    assert remove(lab.nft) and observe(lab.nft) is None and not remove(lab.nft)
    assert "hvrouter" not in sh(*lab.nft, "list", "tables").stdout

