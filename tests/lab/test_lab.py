"""The seed lab end to end: real namespaces, real BIRD, real hvrouter daemons.

One lab per module (bringing it up takes a while), with a random name, and
always torn down.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hvrouter.lab import topology as T
from hvrouter.lab.manage import Lab


def wait_for(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def hvrouter(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hvrouter", *args], capture_output=True, text=True, timeout=300)


def birdc(lab: Lab, node: str, *cmd: str) -> str:
    sock = lab.files(node).bird_sock
    return subprocess.run(["ip", "netns", "exec", lab.ns(node), "birdc", "-s", sock, *cmd],
                          capture_output=True, text=True, timeout=30).stdout


def test_every_pair_reachable_and_four_sessions_per_hv(lab: Lab) -> None:
    out = hvrouter("lab", "check", "--name", lab.name, "--json")
    result = json.loads(out.stdout)
    failed = [p for p in result["pairs"] if not p["ok"]]
    assert failed == []
    assert {(p["family"]) for p in result["pairs"]} == {"ipv4", "ipv6"}
    assert len(result["pairs"]) == (4 * 3 + 4) * 2  # VM to VM, and the internet host to every VM
    for hv in ("hv1", "hv2", "hv3"):
        assert result["bgp"][hv] == {"sessions": 4, "sessions_up": 4}, result["bgp"]
    assert result["ok"] is True


def test_port_on_hv2_is_distributed_then_withdrawn(lab: Lab) -> None:
    lab.attach_vm("vm5", "hv2", "52:54:00:00:00:05", "203.0.113.5", "2001:db8:cb00:7105:5054:ff:fe00:5")
    out = lab.hvrouter("hv2", "port", "add", "vm5", "--mac", "52:54:00:00:00:05", "--network", "public",
                       "--ipv4", "203.0.113.5", "--ipv6", "2001:db8:cb00:7105::/64")
    assert out.returncode == 0
    ping = ["ping", "-n", "-q", "-c", "1", "-W", "1"]

    def reachable(src: str, dst: str, *extra: str) -> bool:
        return subprocess.run(["ip", "netns", "exec", lab.ns(src), *ping, *extra, dst],
                              capture_output=True).returncode == 0

    wait_for(lambda: reachable("vm1", "203.0.113.5"), what="vm1 -> vm5 over IPv4")
    wait_for(lambda: reachable("vm2", "2001:db8:cb00:7105:5054:ff:fe00:5"), what="vm2 -> vm5 over IPv6")
    assert reachable("edge", "203.0.113.5", "-I", T.INTERNET4)
    assert reachable("edge", "2001:db8:cb00:7105:5054:ff:fe00:5", "-I", T.INTERNET6)
    for rr in ("rr1", "rr2"):
        assert "203.0.113.5/32" in birdc(lab, rr, "show", "route", "203.0.113.5/32", "table", "t_public4")
        assert "2001:db8:cb00:7105::/64" in birdc(lab, rr, "show", "route", "2001:db8:cb00:7105::/64",
                                                    "table", "t_public6")

    out = lab.hvrouter("hv2", "port", "del", "vm5")
    assert out.returncode == 0

    def withdrawn() -> bool:
        return all("203.0.113.5/32" not in birdc(lab, rr, "show", "route", "203.0.113.5/32", "table", "t_public4")
                   and "7105::/64" not in birdc(lab, rr, "show", "route", "2001:db8:cb00:7105::/64", "table", "t_public6")
                   for rr in ("rr1", "rr2"))

    wait_for(withdrawn, what="withdrawal at both RRs")
    wait_for(lambda: "203.0.113.5" not in subprocess.run(
        ["ip", "-n", lab.ns("hv1"), "route", "show", "table", "90"], capture_output=True, text=True).stdout,
        what="route gone from hv1")
    assert not reachable("vm1", "203.0.113.5")
    subprocess.run(["ip", "netns", "del", lab.ns("vm5")], check=True)


def test_bird_config_identical_with_1_and_1000_ports(lab: Lab) -> None:
    conf = Path(lab.files("hv1").bird_conf)
    before = conf.read_bytes()
    lines = [json.dumps({"name": f"p{i}", "mac": f"52:54:00:03:{i >> 8:02x}:{i & 255:02x}", "network": "public",
                         "ipv4": [], "ipv6": []}) for i in range(999)]
    path = Path(lab.dir) / "many.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert lab.hvrouter("hv1", "port", "import", str(path)).returncode == 0
    # The daemon's next pass sees 1001 ports (2 real, 999 pending); its BIRD
    # config must not change, and neither does the rendered text.
    wait_for(lambda: "p998" in lab.hvrouter("hv1", "status").stdout, what="status listing the new ports")
    rendered = lab.hvrouter("hv1", "bird-config").stdout.encode()
    assert conf.read_bytes() == before
    assert rendered == before
    assert lab.hvrouter("hv1", "port", "del", *(f"p{i}" for i in range(999))).returncode == 0


def test_lab_up_on_existing_lab_refuses_and_keeps_it(lab: Lab) -> None:
    out = hvrouter("lab", "up", "--name", lab.name)
    assert out.returncode != 0
    assert "already exists" in out.stderr
    again = json.loads(hvrouter("lab", "check", "--name", lab.name, "--json").stdout)
    assert again["ok"] is True


def test_lab_down_cleans_up_after_a_crash(tmp_path: Path) -> None:
    name = f"c{secrets.token_hex(3)}"
    crashed = Lab(name)
    # What a `lab up` killed half-way leaves: namespaces, a process inside one, no record.
    for node in ("fabric-a", "hv1", "vm1"):
        subprocess.run(["ip", "netns", "add", crashed.ns(node)], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", crashed.ns("hv1"), "sleep", "300"])
    try:
        out = hvrouter("lab", "down", "--name", name)
        assert out.returncode == 0, out.stderr
        remaining = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert name + "-" not in remaining
        sleeper.wait(10)
        assert sleeper.returncode is not None
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
        for node in ("fabric-a", "hv1", "vm1"):
            subprocess.run(["ip", "netns", "del", crashed.ns(node)], capture_output=True)
