"""The reconciler against a real kernel, one fresh namespace per test."""

from __future__ import annotations

import json

from conftest import Host, ping, wait_for

MAC1, MAC2 = "52:54:00:00:00:01", "52:54:00:00:00:02"
LL1 = "fe80::5054:ff:fe00:1"


def routes(h: Host, family: str = "-4") -> str:
    return h.ip(family, "route", "show", "table", "90")


def add_port(h: Host, name: str, mac: str, v4: str, v6: str) -> None:
    h.hvrouter("port", "add", name, "--mac", mac, "--network", "public", "--ipv4", v4, "--ipv6", v6)


def test_program_two_vms_and_route_between_them(host: Host) -> None:
    vm1 = host.add_vm("vm1", MAC1, "203.0.113.1", "2001:db8:cb00:7101:5054:ff:fe00:1")
    host.add_vm("vm2", MAC2, "203.0.113.2", "2001:db8:cb00:7102:5054:ff:fe00:2")
    add_port(host, "vm1", MAC1, "203.0.113.1", "2001:db8:cb00:7101::/64")
    add_port(host, "vm2", MAC2, "203.0.113.2", "2001:db8:cb00:7102::/64")
    host.hvrouter("reconcile", "--once")

    assert "203.0.113.1 dev vm1 proto 211 scope link" in routes(host)
    assert f"2001:db8:cb00:7101::/64 via {LL1} dev vm1 proto 211" in routes(host, "-6")
    assert "inet 203.0.113.254/32 scope link" in host.ip("-4", "addr", "show", "dev", "vm1")
    assert "fe80::1 dev vm1 router proxy proto 211" in host.ip("-6", "neigh", "show", "proxy")
    assert "unreachable default proto 211 metric 4294967295" in routes(host)
    for key, want in (("ipv4/conf/vm1/proxy_arp", "1"), ("ipv4/conf/vm1/rp_filter", "1"),
                      ("ipv4/neigh/vm1/proxy_delay", "0"), ("ipv6/neigh/vm1/proxy_delay", "0"),
                      ("ipv4/conf/vm1/send_redirects", "0"), ("ipv6/conf/all/forwarding", "1")):
        assert open_sysctl(host, key) == want, key
    # VMs believe they share 203.0.113.0/24: proxy ARP and routing do the rest.
    assert ping(vm1, "203.0.113.254")
    assert ping(vm1, "203.0.113.2")
    assert ping(vm1, "2001:db8:cb00:7102:5054:ff:fe00:2")
    # An address nobody owns is not answered (no proxy ARP without a route).
    assert not ping(vm1, "203.0.113.77", timeout=1)

    again = host.hvrouter("reconcile", "--once", "--json")
    assert json.loads(again.stdout)["changes"] == 0


def open_sysctl(h: Host, key: str) -> str:
    import subprocess

    return subprocess.run(["ip", "netns", "exec", h.ns, "cat", f"/proc/sys/net/{key}"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_pending_until_tap_appears_then_reprogrammed_after_flap(host: Host) -> None:
    add_port(host, "vm1", MAC1, "203.0.113.1", "2001:db8:cb00:7101::/64")
    daemon = host.start_daemon(resync=60)  # long resync: only events may trigger
    wait_for(lambda: "hvrouter daemon started" in host.daemon_log(), what="daemon start")
    status = json.loads(host.hvrouter("status", "--json").stdout)
    assert [(p["name"], p["state"], p["detail"]) for p in status["ports"]] == [("vm1", "pending", "tap missing")]
    assert "203.0.113.1" not in routes(host)

    vm1 = host.add_vm("vm1", MAC1, "203.0.113.1", "2001:db8:cb00:7101:5054:ff:fe00:1")
    wait_for(lambda: "203.0.113.1 dev vm1" in routes(host), what="route after tap creation")
    wait_for(lambda: ping(vm1, "203.0.113.254", timeout=1), what="gateway reachable")

    host.ip("link", "set", "vm1", "down")
    wait_for(lambda: "203.0.113.1 dev vm1" not in routes(host), what="kernel drops route on down")
    host.ip("link", "set", "vm1", "up")
    wait_for(lambda: "203.0.113.1 dev vm1" in routes(host), what="route back after flap")
    wait_for(lambda: f"via {LL1} dev vm1" in routes(host, "-6"), what="v6 route back after flap")

    # Tap deleted and re-created (a VM restart): new ifindex, programmed again.
    host.ip("link", "del", "vm1")
    host.made.remove(vm1)
    __import__("subprocess").run(["ip", "netns", "del", vm1], check=True)
    vm1 = host.add_vm("vm1", MAC1, "203.0.113.1", "2001:db8:cb00:7101:5054:ff:fe00:1")
    wait_for(lambda: ping(vm1, "203.0.113.254", timeout=1), what="re-created tap programmed")
    assert daemon.poll() is None


def test_port_del_removes_everything(host: Host) -> None:
    vm1 = host.add_vm("vm1", MAC1, "203.0.113.1", "2001:db8:cb00:7101:5054:ff:fe00:1")
    add_port(host, "vm1", MAC1, "203.0.113.1", "2001:db8:cb00:7101::/64")
    host.hvrouter("reconcile", "--once")
    assert ping(vm1, "203.0.113.254")
    host.hvrouter("port", "del", "vm1")
    host.hvrouter("reconcile", "--once")
    assert "203.0.113.1" not in routes(host)
    assert "2001:db8:cb00:7101" not in routes(host, "-6")
    assert "203.0.113.254" not in host.ip("-4", "addr", "show", "dev", "vm1")
    assert "vm1" not in host.ip("-6", "neigh", "show", "proxy")
    # Host objects stay: they do not belong to the port.
    assert "unreachable default" in routes(host)


def test_drift_is_reported_then_repaired(host: Host) -> None:
    vm1 = host.add_vm("vm1", MAC1, "203.0.113.1", "2001:db8:cb00:7101:5054:ff:fe00:1")
    add_port(host, "vm1", MAC1, "203.0.113.1", "2001:db8:cb00:7101::/64")
    host.hvrouter("reconcile", "--once")
    host.ip("route", "del", "203.0.113.1", "table", "90")
    host.ip("-6", "neigh", "del", "proxy", "fe80::1", "dev", "vm1")
    host.ip("rule", "del", "pref", "20099")
    status = json.loads(host.hvrouter("status", "--json").stdout)
    assert status["ports"][0]["state"] == "drift"
    assert any("20099" in d for d in status["host_drift"])
    host.hvrouter("reconcile", "--once")
    assert "203.0.113.1 dev vm1" in routes(host)
    assert "fe80::1 dev vm1 router proxy" in host.ip("-6", "neigh", "show", "proxy")
    assert "20099:" in host.ip("rule")
    assert ping(vm1, "203.0.113.254")
    status = json.loads(host.hvrouter("status", "--json").stdout)
    assert status["ports"][0]["state"] == "programmed" and status["host_drift"] == []


def test_foreign_objects_are_never_touched(host: Host) -> None:
    host.add_vm("vm1", MAC1, "203.0.113.1")
    host.ip("route", "add", "198.51.100.0/24", "dev", "vm1", "table", "90", "proto", "static")
    host.ip("rule", "add", "pref", "20050", "to", "198.51.100.0/24", "lookup", "90")
    host.ip("addr", "add", "198.51.100.1/32", "dev", "vm1")
    host.ip("-6", "neigh", "add", "proxy", "2001:db8::99", "dev", "vm1")
    # A stale object of ours (our proto) for a port that no longer exists.
    host.ip("route", "add", "203.0.113.99", "dev", "vm1", "table", "90", "proto", "211")
    add_port(host, "vm1", MAC1, "203.0.113.1", "2001:db8:cb00:7101::/64")
    host.hvrouter("reconcile", "--once")
    table = routes(host)
    assert "198.51.100.0/24 dev vm1 proto static" in table
    assert "20050:" in host.ip("rule")
    assert "198.51.100.1/32" in host.ip("addr", "show", "dev", "vm1")
    assert "2001:db8::99 dev vm1 proxy" in host.ip("-6", "neigh", "show", "proxy")
    assert "203.0.113.99" not in table  # ours and not desired: removed
    assert "203.0.113.1 dev vm1" in table


def test_shared_prefix_gets_host_routes_and_uplink_proxies(host: Host) -> None:
    host.add_vm("vm5", "52:54:00:00:00:05", ipv6="2001:db8:5a::5")
    host.hvrouter("port", "add", "vm5", "--mac", "52:54:00:00:00:05", "--network", "shared",
                  "--ipv6", "2001:db8:5a::5")
    host.hvrouter("reconcile", "--once")
    assert "2001:db8:5a::5 dev vm5 proto 211" in routes(host, "-6")
    assert "2001:db8:5a::5 dev up0 proxy proto 211" in host.ip("-6", "neigh", "show", "proxy")


def test_rule_count_does_not_depend_on_ports(host: Host) -> None:
    def rule_count() -> int:
        return len(host.ip("-4", "rule").splitlines()) + len(host.ip("-6", "rule").splitlines())

    host.add_vm("vm1", MAC1, "203.0.113.1")
    add_port(host, "vm1", MAC1, "203.0.113.1", "2001:db8:cb00:7101::/64")
    host.hvrouter("reconcile", "--once")
    one = rule_count()
    batch = "\n".join(f"link add t{i} up type veth peer name p{i}" for i in range(999))
    (host.workdir / "links").write_text(batch + "\n")
    host.ip("-batch", str(host.workdir / "links"))
    lines = []
    for i in range(999):
        lines.append(json.dumps({"name": f"t{i}", "mac": f"52:54:00:01:{i >> 8:02x}:{i & 255:02x}",
                                 "network": "public", "ipv4": [], "ipv6": []}))
    # 999 more ports do not fit a /24 or a /56 of /64s: they get the gateway
    # and tap settings only, which is all the rule count could depend on.
    (host.workdir / "ports.jsonl").write_text("\n".join(lines) + "\n")
    host.hvrouter("port", "import", str(host.workdir / "ports.jsonl"))
    out = json.loads(host.hvrouter("reconcile", "--once", "--json").stdout)
    assert out["failures"] == []
    assert sum(1 for p in out["ports"].values() if p["state"] == "programmed") == 1000
    assert rule_count() == one


def test_activation_announces_the_gateways_to_the_vm(host: Host) -> None:
    vm1 = host.add_vm("vm1", MAC1, "203.0.113.1", "2001:db8:cb00:7101:5054:ff:fe00:1", up=False)
    # What a VM that just moved here still believes: its gateway at another
    # hypervisor's MAC.
    for addr in ("203.0.113.254", "fe80::1"):
        host.ip("netns", "exec", vm1, "ip", "neigh", "replace", addr, "lladdr", "02:00:00:00:00:99",
                "dev", "eth0", "nud", "stale")
    tap_mac = host.ip("link", "show", "vm1").split("link/ether ")[1].split()[0]
    add_port(host, "vm1", MAC1, "203.0.113.1", "2001:db8:cb00:7101::/64")
    host.start_daemon(resync=60)
    wait_for(lambda: "hvrouter daemon started" in host.daemon_log(), what="daemon start")
    host.ip("link", "set", "vm1", "up")

    def vm_sees_tap(addr: str) -> bool:
        return tap_mac in host.ip("netns", "exec", vm1, "ip", "neigh", "show", addr)

    wait_for(lambda: vm_sees_tap("203.0.113.254"), what="gratuitous ARP updating the VM's gateway entry")
    wait_for(lambda: vm_sees_tap("fe80::1"), what="unsolicited NA updating the VM's fe80::1 entry")
    wait_for(lambda: "vm1: active, sent 2 announcement(s)" in host.daemon_log(), what="announcement logged")


def test_firewall_table_is_installed_and_repaired_by_the_reconciler(host: Host) -> None:
    vm1 = host.add_vm("vm1", MAC1, "203.0.113.1")
    add_port(host, "vm1", MAC1, "203.0.113.1", "2001:db8:cb00:7101::/64")
    host.hvrouter("reconcile", "--once")
    listing = host.ip("netns", "exec", host.ns, "nft", "list", "table", "inet", "hvrouter")
    assert '"vm1"' in listing and "hook forward" in listing
    host.ip("netns", "exec", host.ns, "nft", "delete", "table", "inet", "hvrouter")
    assert json.loads(host.hvrouter("status", "--json").stdout)["firewall"] == "differs"
    out = json.loads(host.hvrouter("reconcile", "--once", "--json").stdout)
    assert out["firewall"]["changed"] is True
    assert json.loads(host.hvrouter("status", "--json").stdout)["firewall"] == "in sync"
    assert ping(vm1, "203.0.113.254")
