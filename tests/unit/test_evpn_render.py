"""EVPN (FRR) configuration: both roles render byte-stable text that FRR's own
parser accepts (`vtysh -C`), with what a VTEP and a reflector need; bad
input is reported all at once; vtysh's JSON answers parse into status."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hvrouter.config import EvpnConfig
from hvrouter.errors import InputError
from hvrouter.overlay.evpn import (
    CLIENTS_GROUP,
    Frr,
    FrrConfigError,
    FrrError,
    check,
    parse_routes,
    parse_summary,
    parse_vnis,
    render,
    zebra_part,
)

needs_frr = pytest.mark.skipif(
    shutil.which("vtysh") is None and not os.environ.get("CI"), reason="vtysh (frr) is not installed"
)

VTEP = EvpnConfig(asn=65000, router_id="198.19.0.1", peers=("198.19.0.10",))
RR = EvpnConfig(asn=65000, router_id="198.19.0.10")

VTEP_TEXT = """\
! hvrouter: FRR configuration of EVPN VTEP vt1 (generated, do not edit)
!
! Global lines come first: zebra is started with only the lines before the
! first `router` (it knows no BGP command), bgpd with the whole file.
! `frr defaults datacenter` (read at start only) means keepalive 3 s, hold 9 s,
! no MRAI delay and no eBGP policy requirement: timers for a fabric, not the
! internet.
frr defaults datacenter
hostname vt1
!
router bgp 65000
 bgp router-id 198.19.0.1
 no bgp default ipv4-unicast
 coalesce-time 100
 neighbor RR peer-group
 neighbor RR remote-as internal
 neighbor RR update-source 198.19.0.1
 neighbor RR timers connect 1
 neighbor 198.19.0.10 peer-group RR
 !
 address-family l2vpn evpn
  neighbor RR activate
  advertise-all-vni
 exit-address-family
exit
!
"""


def bgp_lines(text: str) -> list[str]:
    """The `router bgp` block, comments and blank lines dropped."""
    body = text[text.index("router bgp") :]
    return [ln.rstrip() for ln in body.splitlines() if ln.strip() and ln.strip() != "!"]


# -- VTEP ------------------------------------------------------------------------


def test_vtep_renders_exactly_and_stably() -> None:
    text = render("vtep", VTEP, "vt1", local="198.19.0.1")
    assert text == VTEP_TEXT
    assert render("vtep", VTEP, "vt1", local="198.19.0.1") == text


def test_vtep_sessions_to_every_reflector_without_source_when_no_local() -> None:
    cfg = EvpnConfig(asn=4200000001, router_id="198.19.0.1", peers=("198.19.0.10", "198.19.0.11"))
    lines = bgp_lines(render("vtep", cfg, "vt1"))
    assert lines[0] == "router bgp 4200000001"
    assert " neighbor 198.19.0.10 peer-group RR" in lines and " neighbor 198.19.0.11 peer-group RR" in lines
    assert not any("update-source" in ln for ln in lines)
    assert "  advertise-all-vni" in lines and "  neighbor RR activate" in lines
    # No IPv4 unicast session: the underlay is not ours to route.
    assert " no bgp default ipv4-unicast" in lines


def test_vtep_over_ipv6_sessions() -> None:
    cfg = EvpnConfig(router_id="198.19.0.1", peers=("2001:db8:19::10",))
    lines = bgp_lines(render("vtep", cfg, "vt1", local="2001:db8:19::1"))
    assert " neighbor RR update-source 2001:db8:19::1" in lines
    assert " neighbor 2001:db8:19::10 peer-group RR" in lines


# -- route reflector -------------------------------------------------------------


def test_rr_listen_ranges_explicit_clients_and_fellow_reflectors() -> None:
    cfg = EvpnConfig(router_id="198.19.0.10", peers=("198.19.0.11",))
    text = render("route-reflector", cfg, "rr1", local="198.19.0.10",
                  clients=["198.19.0.0/24", "198.19.4.0/22", "198.19.9.9"])
    lines = bgp_lines(text)
    g = CLIENTS_GROUP
    for want in (
        f" bgp listen range 198.19.0.0/24 peer-group {g}",
        f" bgp listen range 198.19.4.0/22 peer-group {g}",
        " bgp listen limit 5000",
        f" neighbor 198.19.9.9 peer-group {g}",
        " neighbor 198.19.0.11 peer-group RR",
        f"  neighbor {g} activate",
        f"  neighbor {g} route-reflector-client",
        "  neighbor RR activate",
    ):
        assert want in lines, (want, text)
    # Fellow reflectors are not clients; the RR has no VNI of its own.
    assert "  neighbor RR route-reflector-client" not in lines
    assert "advertise-all-vni" not in text
    # Groups are declared before their members (FRR requires it).
    assert lines.index(f" neighbor {g} peer-group") < lines.index(f" neighbor 198.19.9.9 peer-group {g}")
    assert lines.index(" neighbor RR peer-group") < lines.index(" neighbor 198.19.0.11 peer-group RR")


def test_rr_without_peers_has_no_rr_group() -> None:
    lines = bgp_lines(render("route-reflector", RR, "rr1", clients=["198.19.0.0/24"]))
    assert not any(" RR " in ln for ln in lines)
    assert not any("update-source" in ln for ln in lines)


# -- FRR's own parser ------------------------------------------------------------


@needs_frr
@pytest.mark.parametrize(
    ("role", "evpn", "kwargs"),
    [
        ("vtep", VTEP, {"local": "198.19.0.1"}),
        ("vtep", EvpnConfig(router_id="198.19.0.1", peers=("2001:db8:19::10", "2001:db8:19::11")), {}),
        ("route-reflector", EvpnConfig(router_id="198.19.0.10", peers=("198.19.0.11",)),
         {"local": "198.19.0.10", "clients": ["198.19.0.0/24", "2001:db8:19::/64", "198.19.9.9"]}),
    ],
)
def test_rendered_configs_pass_vtysh_dry_run(role: str, evpn: EvpnConfig, kwargs: dict[str, object]) -> None:
    check(render(role, evpn, "node-1", **kwargs))  # type: ignore[arg-type]


@needs_frr
def test_check_reports_frr_words() -> None:
    bad = VTEP_TEXT.replace(" advertise-all-vni", " advertise-every-vni")
    with pytest.raises(FrrConfigError) as err:
        check(bad)
    assert "advertise-every-vni" in err.value.message
    assert err.value.text == bad
    with pytest.raises(FrrConfigError):
        check(VTEP_TEXT.replace("timers connect 1", "timers connect 0"))


# -- validation ------------------------------------------------------------------


def test_every_problem_reported_at_once() -> None:
    cfg = EvpnConfig(router_id="198.19.0.10", peers=("2001:db8::11", "2001:db8::11"))
    with pytest.raises(InputError) as err:
        render("route-reflector", cfg, "bad name", local="198.19.0.10",
               clients=["198.19.0.1/24", "nonsense", "198.19.0.0/24", "198.19.0.0/24"])
    wheres = [p.where for p in err.value.problems]
    assert wheres == ["hostname", "evpn.peers[1]", "clients[0]", "clients[1]", "clients",
                      "evpn.peers", "evpn.peers"], err.value.render()
    text = err.value.render()
    assert "198.19.0.0/24" in text  # the fix for the host-bits mistake is named
    assert "an IPv4 address like local 198.19.0.10" in text


def test_role_needs() -> None:
    with pytest.raises(InputError, match="at least one route reflector"):
        render("vtep", EvpnConfig(router_id="198.19.0.1"), "vt1")
    with pytest.raises(InputError, match="only a route reflector has clients"):
        render("vtep", VTEP, "vt1", clients=["198.19.0.0/24"])
    with pytest.raises(InputError, match="at least one client"):
        render("route-reflector", RR, "rr1")
    with pytest.raises(InputError, match="one of vtep, route-reflector"):
        render("spine", RR, "rr1")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="an address not already a client or a peer"):
        render("route-reflector", EvpnConfig(router_id="198.19.0.10", peers=("198.19.0.11",)), "rr1",
               clients=["198.19.0.11"])


def test_zebra_part_is_the_global_lines() -> None:
    part = zebra_part(VTEP_TEXT)
    assert part.endswith("frr defaults datacenter\nhostname vt1\n!\n")
    assert "router bgp" not in part and "neighbor" not in part
    assert VTEP_TEXT.startswith(part)


def test_instance_paths_and_socket_length(tmp_path: Path) -> None:
    frr = Frr(tmp_path, "vt1")
    assert frr.path == tmp_path / "vt1"
    assert frr.config_path.parent == frr.pidfile("bgpd").parent == frr.zserv.parent == tmp_path / "vt1"
    assert not frr.alive() and frr.pid("zebra") is None
    assert frr.status() == {"name": "vt1", "directory": str(tmp_path / "vt1"), "running": False}
    frr.stop()  # nothing running: a no-op
    with pytest.raises(FrrError, match="longer than 107 bytes"):
        Frr(tmp_path / ("d" * 100), "vt1")


def test_pid_ignores_a_pid_file_naming_someone_else(tmp_path: Path) -> None:
    frr = Frr(tmp_path, "vt1")
    frr.path.mkdir()
    frr.pidfile("zebra").write_text(f"{os.getpid()}\n")  # alive, but not our zebra
    assert frr.pid("zebra") is None
    frr.pidfile("zebra").write_text("garbage")
    assert frr.pid("zebra") is None


# -- vtysh JSON ------------------------------------------------------------------

SUMMARY = {
    "routerId": "198.19.0.10", "as": 65000,
    "peers": {
        "198.19.0.2": {"remoteAs": 65000, "peerUptimeMsec": 12000, "pfxRcd": 2, "state": "Established",
                       "connectionsEstablished": 1},
        "198.19.0.1": {"remoteAs": 65000, "peerUptimeMsec": 0, "state": "Active", "connectionsEstablished": 0},
    },
}
ROUTES = {
    "198.19.0.1:2": {
        "rd": "198.19.0.1:2",
        "[2]:[0]:[48]:[02:00:00:00:01:01]": {"prefix": "[2]:[0]:[48]:[02:00:00:00:01:01]", "paths": [[{}]]},
        "[2]:[0]:[48]:[02:00:00:00:01:01]:[128]:[fe80::ff:fe00:101]": {"prefix": "x", "paths": [[{}]]},
        "[3]:[0]:[32]:[198.19.0.1]": {"prefix": "[3]:[0]:[32]:[198.19.0.1]", "paths": [[{}]]},
    },
    "198.19.0.2:2": {
        "rd": "198.19.0.2:2",
        "[2]:[0]:[48]:[02:00:00:00:01:02]": {"prefix": "[2]:[0]:[48]:[02:00:00:00:01:02]", "paths": [[{}]]},
        "[3]:[0]:[32]:[198.19.0.2]": {"prefix": "[3]:[0]:[32]:[198.19.0.2]", "paths": [[{}]]},
    },
    "numPrefix": 5,
    "numPaths": 5,
}
VNI_SUMMARY = {"100": {"vni": 100, "type": "L2", "vxlanIf": "vx100", "numMacs": 2, "numArpNd": 3,
                       "numRemoteVteps": 1, "tenantVrf": "default", "remoteVteps": ["198.19.0.2"]}}
VNI_DETAIL = [{"vni": 100, "type": "L2", "vxlanInterface": "vx100", "sviInterface": "br100",
               "vtepIp": "198.19.0.1", "numMacs": 2, "numRemoteVteps": ["198.19.0.2"]}]


def test_parse_summary() -> None:
    peers = parse_summary(SUMMARY)
    assert list(peers) == ["198.19.0.1", "198.19.0.2"]
    assert peers["198.19.0.2"].state == "Established" and peers["198.19.0.2"].prefixes_received == 2
    assert peers["198.19.0.1"].prefixes_received == 0 and peers["198.19.0.1"].connections == 0
    assert parse_summary({}) == {}


def test_parse_routes_counts_types_and_names_macs_and_originators() -> None:
    got = parse_routes(ROUTES)
    assert got == {
        "type2": 3,
        "type3": 2,
        "type2_macs": ["02:00:00:00:01:01", "02:00:00:00:01:02"],
        "type3_originators": ["198.19.0.1", "198.19.0.2"],
    }
    assert parse_routes({}) == {"type2": 0, "type3": 0, "type2_macs": [], "type3_originators": []}


def test_parse_vnis_merges_summary_and_detail() -> None:
    assert parse_vnis(VNI_SUMMARY, VNI_DETAIL) == {
        100: {"type": "L2", "vxlan": "vx100", "macs": 2, "neighbours": 3, "remote_vteps": ["198.19.0.2"],
              "bridge": "br100", "local_vtep": "198.19.0.1"},
    }
    assert parse_vnis({}, []) == {}
