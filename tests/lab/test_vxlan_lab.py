"""The seed-002 VXLAN lab end to end, one lab per case: real namespaces, the
real hvrouter agent on each VTEP, smcroute / etcd / FRR where the case needs
them. Each case: up -> every pair pings both ways in both families -> a
second check -> BUM amplification and FDB sizes as the mode implies -> down
leaves no namespace, no process and no lab directory.

Each lab has a random `hvx` name and is removed in `finally`, even on failure.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from hvrouter.config import parse_config
from hvrouter.lab import vxlan
from hvrouter.overlay.types import MODES

pytestmark = pytest.mark.lab

# mode, underlay, registry. Every mode once; IPv4 underlay for flood and both
# dynamic modes (evpn is IPv4 only); etcd for a static and a dynamic mode.
CASES = [
    ("multicast", "ipv6", "sqlite"),
    ("unicast-flood", "ipv6", "sqlite"),
    ("unicast-static-l2", "ipv6", "sqlite"),
    ("unicast-static-nd", "ipv6", "etcd"),
    ("unicast-rsc", "ipv6", "sqlite"),
    ("unicast-dynamic-l2", "ipv6", "sqlite"),
    ("unicast-dynamic-nd", "ipv6", "sqlite"),
    ("evpn", "ipv4", "sqlite"),
    ("unicast-flood", "ipv4", "sqlite"),
    ("unicast-dynamic-l2", "ipv4", "etcd"),
    ("unicast-dynamic-nd", "ipv4", "sqlite"),
]

# Per broadcast frame of H1 (VNI 100, peers S2 and S3): underlay packets S1
# sends, and underlay packets all VTEPs receive.
AMPLIFICATION = {
    "multicast": (1.0, 2.0),  # one packet to the group, the core replicates
    "unicast-flood": (2.0, 2.0),  # head-end replication to each peer
    "unicast-static-l2": (2.0, 2.0),
    "unicast-static-nd": (0.0, 0.0),  # no flood entries: BUM goes nowhere
    "unicast-rsc": (0.0, 0.0),
    "unicast-dynamic-l2": (2.0, 2.0),  # the broadcast entry per peer (ARP)
    "unicast-dynamic-nd": (0.0, 0.0),
    "evpn": (2.0, 2.0),  # ingress replication from type-3 routes
}


def _namespaces(name: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{name}-")]


def _pids(record: dict[str, Any]) -> list[int]:
    return [int(d.rsplit(":", 1)[1]) for d in record.get("daemons", []) if d.rsplit(":", 1)[1].isdigit()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (its parent, this test, has not reaped it).
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def _failed(result: dict[str, Any]) -> list[str]:
    return [f"{p['src']}->{p['dst']} {p['family']} {p['address']}" for p in result["pairs"] if not p["ok"]]


def _check_fdb(mode: str, fdb: dict[str, dict[str, dict[str, int]]]) -> None:
    s1 = fdb["s1"]["ovx100"]
    # multicast: the kernel's own all-zero entry towards the group.
    zero = {"multicast": 1, "unicast-flood": 2, "unicast-static-l2": 2, "evpn": 2}.get(mode, 0)
    assert s1["fdb_zero"] == zero, (mode, s1)
    assert s1["fdb_router"] == (1 if mode == "unicast-rsc" else 0), (mode, s1)
    if mode == "unicast-static-l2":
        assert s1["fdb_remote"] == 2 + 2, s1  # flood entries + H2's and H3's MACs
    if mode == "unicast-static-nd":
        # H2 and H3: one MAC each, an IPv4 and an IPv6 entry each.
        assert (s1["fdb_remote"], s1["neigh"]) == (2, 4), s1
    if mode == "unicast-rsc":
        # One VNI for both VLANs: H2 (twice), H3, H4, plus the router entry.
        assert "ovx200" not in fdb["s1"]
        assert (s1["fdb_remote"], s1["neigh"]) == (4 + 1, 8), s1
    if mode == "unicast-dynamic-nd":
        # Resolved on miss by the pings of the check: no static entries.
        assert s1["neigh"] >= 4 and s1["fdb_remote"] >= 2, s1
    if mode == "evpn":
        assert s1["fdb_extern"] >= 2, s1  # H2's and H3's MACs from type-2 routes
    if mode in ("multicast", "unicast-flood", "unicast-static-l2", "unicast-dynamic-l2", "evpn"):
        assert s1["neigh"] == 0, s1


@pytest.mark.parametrize(("mode", "underlay", "registry"), CASES, ids=["-".join(c) for c in CASES])
def test_mode(mode: str, underlay: str, registry: str) -> None:
    name = f"hvx{secrets.token_hex(3)}"
    pids: list[int] = []
    try:
        result = vxlan.up(name, mode, underlay, registry, timeout=30)
        assert result["ok"], (result["timings"], _failed(result))
        expected_pairs = 2 * 2 * 4 + (4 if mode == "unicast-rsc" else 0)  # 4 pairs, both ways, both families
        assert len(result["pairs"]) == expected_pairs
        assert {p["family"] for p in result["pairs"]} == {"ipv4", "ipv6"}
        record = vxlan.VxlanLab(name).record()
        assert (record["mode"], record["underlay"], record["registry"]) == (mode, underlay, registry)
        pids = _pids(record)
        assert len(pids) >= 3  # the three agents, plus etcd / smcroute / FRR

        again = vxlan.check(name)
        assert again["ok"], _failed(again)

        m = vxlan.measure(name, frames=50)
        sent, received = AMPLIFICATION[mode]
        assert (m["bum_amplification"], m["received_per_frame"]) == (sent, received), m["per_vtep"]
        _check_fdb(mode, m["fdb"])
    finally:
        vxlan.down(name)
        assert _namespaces(name) == []
        assert not (vxlan.Lab(name).dir).exists()
        assert [p for p in pids if _alive(p)] == []


def test_every_mode_is_covered() -> None:
    assert {c[0] for c in CASES} == set(MODES)
    assert {c[0] for c in CASES if c[1] == "ipv4"} >= {"unicast-flood", "unicast-dynamic-l2", "unicast-dynamic-nd"}


@pytest.mark.parametrize("mode", MODES)
def test_vtep_configs_are_valid(mode: str, tmp_path: Path) -> None:
    """What the lab writes for each VTEP passes hvrouter's own validation."""
    for family in ("ipv4",) if mode == "evpn" else ("ipv6", "ipv4"):
        for registry in ("sqlite", "etcd"):
            for vtep in vxlan.VTEPS:
                data = vxlan.vtep_config(str(tmp_path), vtep, mode, family, registry)
                cfg = parse_config(yaml.safe_load(yaml.safe_dump(data)), f"{vtep}.yaml")
                nets = {n.name: n for n in cfg.overlay.networks}
                assert set(nets) == ({"rsc"} if mode == "unicast-rsc" else {"v100", "v200"})
                assert {str(n.local) for n in nets.values()} == {vxlan.loopback(vtep, family)}
                assert all(n.mtu == 1500 for n in nets.values())


def test_bad_options_are_all_reported() -> None:
    with pytest.raises(vxlan.InputError) as exc:
        vxlan.validate("nope", "ipx", "zk")
    assert len(exc.value.problems) == 3
    with pytest.raises(vxlan.InputError):
        vxlan.validate("evpn", "ipv6", "sqlite")
    assert vxlan.validate("evpn", None, "sqlite") == "ipv4"
    assert vxlan.validate("multicast", None, "etcd") == "ipv6"
