"""Fabric resilience in the lab: each scenario's end state (reachable again,
no stale route, nothing withdrawn by an agent restart...), and the safety
firewall with real packets. The timings are benchmarks (`hvrouter lab
scenario NAME --json`), not asserted here."""

from __future__ import annotations

import subprocess
import sys
import time

from hvrouter.lab import topology as T
from hvrouter.lab.manage import Lab
from hvrouter.lab.scenarios import run_scenario, wait_sessions


def converged(lab: Lab) -> bool:
    result = lab.wait_converged(60)
    return bool(result["ok"])


def kernel_routes(lab: Lab, node: str, family: str = "-4") -> str:
    return subprocess.run(["ip", "-n", lab.ns(node), family, "route", "show", "table", "90"],
                          capture_output=True, text=True, check=True).stdout


def test_fabric_down_then_restored(lab: Lab) -> None:
    result = run_scenario(lab, "fabric-down")
    assert result["lost"] < 400 * 4  # the stream ran; most of it got through
    assert converged(lab)


def test_rr_down_loses_nothing_and_sessions_come_back(lab: Lab) -> None:
    result = run_scenario(lab, "rr-down")
    assert result["lost"] == 0, result["streams"]
    assert converged(lab)


def test_hv_down_is_withdrawn_everywhere_then_restored(lab: Lab) -> None:
    result = run_scenario(lab, "hv-down")
    per_node = result["per_node_ms"]
    assert all(v != float("inf") for v in per_node.values()), per_node  # type: ignore[union-attr]
    assert result["unaffected_streams_lost"] == 0
    assert converged(lab)


def test_agent_restart_withdraws_nothing(lab: Lab) -> None:
    result = run_scenario(lab, "agent-restart")
    assert result["withdrawals"] == 0
    assert result["lost"] == 0, result["streams"]
    assert converged(lab)


def test_bird_restart_recovers(lab: Lab) -> None:
    result = run_scenario(lab, "bird-restart")
    assert result["lost"] < 2000 * 4  # traffic came back before the end of the stream
    assert converged(lab)


def test_migration_leaves_no_stale_route(lab: Lab) -> None:
    result = run_scenario(lab, "migrate")
    assert result["stale_route_anywhere"] is False, result
    assert result["migration"]["to"] == "hv2"  # type: ignore[index]
    # and it was moved back: hv1 holds vm2 again, hv2 does not
    assert "203.0.113.2 dev vm2" in kernel_routes(lab, "hv1")
    assert "203.0.113.2 dev vm2" not in kernel_routes(lab, "hv2")
    assert converged(lab)


def test_anycast_is_ecmp_and_survives_one_vm(lab: Lab) -> None:
    hv1 = next(n for n in T.HYPERVISORS if n.name == "hv1")
    hv2 = next(n for n in T.HYPERVISORS if n.name == "hv2")
    table = kernel_routes(lab, "hv3")
    block = table.split(f"{T.ANYCAST4} ")[1].split("\n203.")[0]
    # Both hypervisors, over both fabrics: add-path at the RRs, merged at hv3.
    for addr in (hv1.addr4(("a", "pub")), hv2.addr4(("a", "pub")), hv1.addr4(("b", "pub")), hv2.addr4(("b", "pub"))):
        assert f"via {addr} " in block, table
    assert "2001:db8:cb00:710a::/64" in kernel_routes(lab, "hv3", "-6")
    # On hv1 the local VM wins (its own route, not the BGP copy).
    assert f"{T.ANYCAST4} via 203.0.113.1 dev vm1" in kernel_routes(lab, "hv1")
    result = run_scenario(lab, "anycast")
    assert result["vm3_rx_packets_in_2s_after_stop"] >= 600
    assert converged(lab)


def test_nat_address_reaches_its_vm(lab: Lab) -> None:
    ping = subprocess.run(["ip", "netns", "exec", lab.ns("edge"), "ping", "-n", "-c", "2", "-W", "1",
                           "-I", T.INTERNET4, T.NAT4], capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout
    # The reply comes back from the public address (conntrack un-NATs it).
    assert f"from {T.NAT4}" in ping.stdout
    for rr in ("rr1", "rr2"):
        out = subprocess.run(["ip", "netns", "exec", lab.ns(rr), "birdc", "-s", lab.files(rr).bird_sock, "show",
                              "route", f"{T.NAT4}/32", "table", "t_public4"], capture_output=True, text=True).stdout
        assert f"{T.NAT4}/32" in out


CONNECT = """
import socket, sys
s = socket.socket()
s.settimeout(1.5)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("connected")
except ConnectionRefusedError:
    print("refused")
except OSError:
    print("timeout")
"""


def connect(lab: Lab, node: str, addr: str, port: int) -> str:
    return subprocess.run(["ip", "netns", "exec", lab.ns(node), sys.executable, "-c", CONNECT, addr, str(port)],
                          capture_output=True, text=True, timeout=30).stdout.strip()


def nft_counter(lab: Lab, node: str, needle: str) -> int:
    out = subprocess.run(["ip", "netns", "exec", lab.ns(node), "nft", "list", "chain", "inet", "hvrouter", "input"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if needle in line and "packets" in line:
            return int(line.split("packets")[1].split()[0])
    raise AssertionError(f"no counter with {needle!r} in:\n{out}")


def test_firewall_keeps_vms_off_bgp_and_bfd(lab: Lab) -> None:
    hv1_fabric = next(n for n in T.HYPERVISORS if n.name == "hv1").addr4(("a", "pub"))
    rr1 = T.RRS[0].addr4(("a", "pub"))
    # hv1's BIRD listens on 179; the VM's SYN is dropped (no RST: a timeout).
    assert connect(lab, "vm1", hv1_fabric, 179) == "timeout"
    assert connect(lab, "vm1", T.VM_GATEWAY, 179) == "timeout"
    # Another port of the same host answers (RST): the host is reachable.
    assert connect(lab, "vm1", hv1_fabric, 180) == "refused"
    # Through the hypervisor, the route reflector's BGP port is out of reach too.
    assert connect(lab, "vm1", rr1, 179) == "timeout"
    # BFD from a VM never reaches the hypervisor's BFD.
    before = nft_counter(lab, "hv1", "3784")
    send = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"[s.sendto(b'x' * 24, ('{hv1_fabric}', 3784)) for _ in range(5)]")
    subprocess.run(["ip", "netns", "exec", lab.ns("vm1"), sys.executable, "-c", send], check=True)
    time.sleep(0.2)
    assert nft_counter(lab, "hv1", "3784") >= before + 5
    # The BGP sessions themselves are untouched by all this.
    wait_sessions(lab, 10)

