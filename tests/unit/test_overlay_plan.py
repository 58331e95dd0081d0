"""Overlay planning per mode (pure)."""

from __future__ import annotations

import pytest

from hvrouter.config import parse_config
from hvrouter.errors import InputError
from hvrouter.overlay.plan import miss_tables, plan, publication, solicited_node_mac
from hvrouter.overlay.types import ZERO_MAC, Attachment, Entry, Fdb, Member, Neigh, Snapshot

LOCAL = "2001:db8:ff00::1"
PEERS = ("2001:db8:ff00::2", "2001:db8:ff00::3")


def cfg(mode: str, **extra: object):
    net = {"name": "v100", "vni": 100, "mode": mode, "local": LOCAL, **extra}
    return parse_config({"overlay": {"vtep_id": "s1", "networks": [net]}}).overlay


def snapshot() -> Snapshot:
    members = {Member(100, LOCAL, "s1"), Member(100, PEERS[0], "s2"), Member(100, PEERS[1], "s3"),
               Member(200, PEERS[1], "s3"), Member(100, "198.19.0.9", "s9")}
    entries = {
        Entry(100, "52:54:00:00:01:01", ("198.19.100.10", "2001:db8:ff::10"), LOCAL, "s1"),
        Entry(100, "52:54:00:00:02:01", ("198.19.100.11", "2001:db8:ff::11"), PEERS[0], "s2"),
        Entry(100, "52:54:00:00:03:01", ("198.19.100.12", "2001:db8:ff::12"), PEERS[1], "s3"),
        Entry(200, "52:54:00:00:04:01", ("2001:db8:fe::13",), PEERS[1], "s3"),
        Entry(100, "52:54:00:00:09:01", ("198.19.100.99",), "198.19.0.9", "s9"),  # IPv4 VTEP: unreachable from v6
    }
    return Snapshot(7, frozenset(members), frozenset(entries))


def test_flood_has_one_zero_entry_per_peer_and_learns() -> None:
    d = plan(cfg("unicast-flood"), "s1", [], snapshot())
    assert d.fdb == {Fdb("ovx100", ZERO_MAC, p) for p in PEERS}
    assert d.vxlans[0].learning and not d.vxlans[0].proxy
    assert d.managed == {"ovx100"} and not d.neigh


def test_static_l2_adds_each_remote_mac() -> None:
    d = plan(cfg("unicast-static-l2"), "s1", [], snapshot())
    macs = {f.mac for f in d.fdb}
    assert macs == {ZERO_MAC, "52:54:00:00:02:01", "52:54:00:00:03:01"}
    assert not d.vxlans[0].learning


def test_static_nd_no_flooding_and_neigh_per_ip() -> None:
    d = plan(cfg("unicast-static-nd"), "s1", [], snapshot())
    assert ZERO_MAC not in {f.mac for f in d.fdb}
    assert Neigh("ovx100", "2001:db8:ff::12", "52:54:00:00:03:01") in d.neigh
    assert Neigh("ovx100", "198.19.100.11", "52:54:00:00:02:01") in d.neigh
    assert len(d.neigh) == 4 and d.vxlans[0].proxy


def test_rsc_flags_the_router_mac() -> None:
    d = plan(cfg("unicast-rsc", router_mac="52:54:00:ff:ff:fe"), "s1", [], snapshot())
    assert Fdb("ovx100", "52:54:00:ff:ff:fe", LOCAL, router=True) in d.fdb
    assert d.vxlans[0].rsc and d.vxlans[0].proxy


def test_rsc_requires_router_mac() -> None:
    with pytest.raises(InputError, match="router_mac"):
        cfg("unicast-rsc")


def test_dynamic_l2_has_no_catch_all_but_bum_macs() -> None:
    d = plan(cfg("unicast-dynamic-l2"), "s1", [], snapshot())
    macs = {f.mac for f in d.fdb}
    assert ZERO_MAC not in macs and "52:54:00:00:02:01" not in macs
    assert "ff:ff:ff:ff:ff:ff" in macs and solicited_node_mac("2001:db8:ff::12") in macs
    assert Fdb("ovx100", solicited_node_mac("2001:db8:ff::12"), PEERS[1]) in d.fdb
    assert d.vxlans[0].l2miss and not d.vxlans[0].l3miss


def test_dynamic_nd_plans_nothing_static_and_tables_answer() -> None:
    c = cfg("unicast-dynamic-nd")
    d = plan(c, "s1", [], snapshot())
    assert not d.fdb and not d.neigh and d.vxlans[0].l3miss and d.vxlans[0].proxy
    t = miss_tables(c, "s1", snapshot())
    assert t.l2["ovx100"]["52:54:00:00:03:01"] == PEERS[1]
    assert t.l3["ovx100"]["2001:db8:ff::11"] == "52:54:00:00:02:01"
    assert "52:54:00:00:01:01" not in t.l2["ovx100"]  # our own
    assert "198.19.100.99" not in t.l3["ovx100"]  # other underlay family


def test_multicast_and_evpn_are_not_managed() -> None:
    m = cfg("multicast", group="ff05::100", device="core")
    d = plan(m, "s1", [], snapshot())
    assert d.vxlans[0].group == "ff05::100" and d.vxlans[0].device == "core" and d.vxlans[0].learning
    assert not d.fdb and not d.managed
    e = parse_config({"overlay": {"evpn": {"router_id": "198.19.0.1"}, "networks": [
        {"name": "v100", "vni": 100, "mode": "evpn", "local": "198.19.0.1"}]}}).overlay
    d = plan(e, "s1", [], snapshot())
    assert d.ports[0].neigh_suppress and not d.ports[0].learning and not d.managed


def test_evpn_needs_ipv4_and_evpn_section() -> None:
    with pytest.raises(InputError) as exc:
        parse_config({"overlay": {"networks": [{"name": "v", "vni": 1, "mode": "evpn", "local": "2001:db8::1"}]}})
    text = str(exc.value)
    assert "overlay.evpn" in text and "IPv4 underlay" in text


def test_attachments_become_ports_and_publication() -> None:
    c = cfg("unicast-flood")
    att = [Attachment("h1.100", "v100", "52:54:00:00:01:01", ("198.19.100.10",)), Attachment("x", "other", "52:54:00:00:00:09")]
    d = plan(c, "s1", att, snapshot())
    assert [p.interface for p in d.ports] == ["ovx100", "h1.100"]
    members, entries = publication(c, "s1", att)
    assert members == [Member(100, LOCAL, "s1")]
    assert entries == [Entry(100, "52:54:00:00:01:01", ("198.19.100.10",), LOCAL, "s1")]


def test_solicited_node_mac() -> None:
    assert solicited_node_mac("2001:db8:fe::13") == "33:33:ff:00:00:13"
    assert solicited_node_mac("2001:db8::12:3456") == "33:33:ff:12:34:56"


def test_duplicate_vni_and_bad_group_rejected() -> None:
    with pytest.raises(InputError) as exc:
        parse_config({"overlay": {"networks": [
            {"name": "a", "vni": 5, "mode": "multicast", "local": "198.19.0.1", "group": "198.19.0.9"},
            {"name": "b", "vni": 5, "mode": "unicast-flood", "local": "198.19.0.1"}]}})
    text = str(exc.value)
    assert "overlay.networks[1].vni" in text and "multicast address" in text


def test_a_mac_published_twice_gets_one_answer_everywhere() -> None:
    # a VM in the middle of a migration: s2 and s3 both publish it
    snap = Snapshot(3, frozenset({Member(100, PEERS[0], "s2"), Member(100, PEERS[1], "s3")}), frozenset({
        Entry(100, "52:54:00:00:07:01", ("198.19.100.70",), PEERS[1], "s3"),
        Entry(100, "52:54:00:00:07:01", ("198.19.100.70",), PEERS[0], "s2"),
        Entry(100, "52:54:00:00:08:01", ("198.19.100.70",), PEERS[1], "s3"),  # same IP, other MAC
    }))
    d = plan(cfg("unicast-static-nd"), "s1", [], snap)
    assert [f.dst for f in d.fdb if f.mac == "52:54:00:00:07:01"] == [PEERS[0]]
    assert [n.mac for n in d.neigh if n.ip == "198.19.100.70"] == ["52:54:00:00:07:01"]
    t = miss_tables(cfg("unicast-dynamic-nd"), "s1", snap)
    assert t.l2["ovx100"]["52:54:00:00:07:01"] == PEERS[0] and t.l3["ovx100"]["198.19.100.70"] == "52:54:00:00:07:01"
    # the same snapshot seen from s3, which hosts the MAC itself: never remote there
    d3 = plan(cfg("unicast-static-nd"), "s3", [], snap)
    assert "52:54:00:00:07:01" not in {f.mac for f in d3.fdb}
