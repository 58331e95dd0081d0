"""overlay/apply.py on a real kernel: the planner's desired state for a mode
becomes devices, bridge ports and static entries; later snapshots add and
remove exactly what changed; controller (extern_learn) entries and learnt
ones are left alone; detached ports leave the bridge; a mode change
recreates the device; networks gone from the config are deleted."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator

import pytest
from conftest import sh
from test_kernel_vxlan import NS

from hvrouter.config import parse_config
from hvrouter.overlay.apply import apply
from hvrouter.overlay.plan import plan
from hvrouter.overlay.types import Attachment, Entry, Member, Snapshot

pytestmark = pytest.mark.netns

LOCAL, P2, P3 = "2001:db8:ff00::1", "2001:db8:ff00::2", "2001:db8:ff00::3"
H2 = Entry(100, "52:54:00:00:02:01", ("198.19.100.11", "2001:db8:ff::11"), P2, "s2")
H3 = Entry(100, "52:54:00:00:03:01", ("198.19.100.12",), P3, "s3")
MEMBERS = frozenset({Member(100, LOCAL, "s1"), Member(100, P2, "s2"), Member(100, P3, "s3")})
H1 = Attachment("h1", "v100", "52:54:00:00:01:01", ("198.19.100.10",))


def overlay(mode: str):  # type: ignore[no-untyped-def]
    net = {"name": "v100", "vni": 100, "mode": mode, "local": LOCAL, "mtu": 1500}
    return parse_config({"overlay": {"vtep_id": "s1", "networks": [net]}}).overlay


@pytest.fixture
def ns() -> Iterator[NS]:
    name = f"hvoa{secrets.token_hex(3)}"
    sh("ip", "netns", "add", name)
    try:
        n = NS(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "addr", "add", f"{LOCAL}/128", "dev", "lo")
        n.veth("h1", "h1-peer")
        try:
            yield n
        finally:
            for obj in n.closing:
                obj.close()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def remote(n: NS) -> set[tuple[str, str]]:
    return {(mac, dst) for mac, dst, _flags in n.fdb("ovx100")}


def test_static_nd_programs_and_follows_the_registry(ns: NS) -> None:
    ov = overlay("unicast-static-nd")
    res = apply(ns.nl, plan(ov, "s1", [H1], Snapshot(1, MEMBERS, frozenset({H2, H3}))))
    assert not res.failures and not res.pending
    link = ns.link("ovx100")
    data = link["linkinfo"]["info_data"]
    assert data["id"] == 100 and data["proxy"] and not data["learning"] and data.get("local6", data.get("local")) == LOCAL
    assert ns.link("h1")["master"] == "ovb100" and link["master"] == "ovb100"
    assert remote(ns) == {(H2.mac, P2), (H3.mac, P3)}
    assert {(ip, mac) for ip, mac, _s in ns.neigh("ovx100")} == {
        ("198.19.100.11", H2.mac), ("2001:db8:ff::11", H2.mac), ("198.19.100.12", H3.mac)}
    # a controller entry and a stray static one appear; the registry drops H3
    sh("bridge", "-n", ns.name, "fdb", "add", "52:54:00:00:09:09", "dev", "ovx100", "dst", P2, "extern_learn")
    sh("bridge", "-n", ns.name, "fdb", "append", "52:54:00:00:08:08", "dev", "ovx100", "dst", P3)
    again = apply(ns.nl, plan(ov, "s1", [H1], Snapshot(2, MEMBERS, frozenset({H2}))))
    assert not again.failures
    assert remote(ns) == {(H2.mac, P2), ("52:54:00:00:09:09", P2)}
    assert {(ip, mac) for ip, mac, _s in ns.neigh("ovx100")} == {("198.19.100.11", H2.mac), ("2001:db8:ff::11", H2.mac)}
    # nothing to do the third time
    assert apply(ns.nl, plan(ov, "s1", [H1], Snapshot(2, MEMBERS, frozenset({H2})))).changes == []


def test_detach_mode_change_and_removal(ns: NS) -> None:
    snap = Snapshot(1, MEMBERS, frozenset({H2, H3}))
    apply(ns.nl, plan(overlay("unicast-static-l2"), "s1", [H1], snap))
    assert remote(ns) == {("00:00:00:00:00:00", P2), ("00:00:00:00:00:00", P3), (H2.mac, P2), (H3.mac, P3)}
    res = apply(ns.nl, plan(overlay("unicast-static-l2"), "s1", [], snap))
    assert "port h1 out of ovb100" in res.changes and "master" not in ns.link("h1")
    res = apply(ns.nl, plan(overlay("unicast-dynamic-l2"), "s1", [H1], snap))
    data = ns.link("ovx100")["linkinfo"]["info_data"]
    assert data["l2miss"] and not data.get("l3miss") and ns.link("ovx100")["master"] == "ovb100"
    assert ("00:00:00:00:00:00", P2) not in remote(ns) and ("ff:ff:ff:ff:ff:ff", P2) in remote(ns)
    assert ("33:33:ff:00:00:11", P2) in remote(ns) and (H2.mac, P2) not in remote(ns)  # unicast: on miss only
    res = apply(ns.nl, plan(parse_config({}).overlay, "s1", [], snap), stale_devices=["ovx100", "ovb100"])
    assert {"removed device ovx100", "removed device ovb100"} <= set(res.changes)
    assert subprocess.run(["ip", "-n", ns.name, "link", "show", "ovx100"], capture_output=True).returncode != 0


def test_no_entries_before_the_first_snapshot(ns: NS) -> None:
    snap = Snapshot(1, MEMBERS, frozenset({H2, H3}))
    apply(ns.nl, plan(overlay("unicast-static-l2"), "s1", [H1], snap))
    before = remote(ns)
    res = apply(ns.nl, plan(overlay("unicast-static-l2"), "s1", [H1], Snapshot(-1)), entries=False)
    assert not res.failures and remote(ns) == before
