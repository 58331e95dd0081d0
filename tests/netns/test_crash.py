"""SIGKILL in the middle of an apply, then a restart: converges without
deleting (and re-adding) anything that was already right."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from conftest import Host

N = 3000


def our_routes(h: Host) -> int:
    return sum(len(h.ip(f, "route", "show", "table", "90", "proto", "211", check=False).splitlines())
               for f in ("-4", "-6"))


def test_sigkill_mid_apply_then_restart_changes_only_the_rest(host: Host) -> None:
    (host.workdir / "links").write_text(
        "".join(f"link add t{i} up type veth peer name p{i}\n" for i in range(N)))
    host.ip("-batch", str(host.workdir / "links"))
    # Wide networks so every port gets an IPv4 and an IPv6 route.
    host.config.write_text(host.config.read_text().replace("203.0.113.0/24", "198.18.0.0/16")
                           .replace("203.0.113.254", "198.18.255.254")
                           .replace("2001:db8:cb00:7100::/56", "2001:db8:c000::/48"))
    lines = [json.dumps({"name": f"t{i}", "mac": f"52:54:00:02:{i >> 8:02x}:{i & 255:02x}", "network": "public",
                         "ipv4": [f"198.18.{i >> 8}.{(i & 255) or 1}" if i & 255 else f"198.18.{200 + (i >> 8)}.1"],
                         "ipv6": [f"2001:db8:c000:{i:x}::/64"]}) for i in range(N)]
    (host.workdir / "ports.jsonl").write_text("\n".join(lines) + "\n")
    host.hvrouter("port", "import", str(host.workdir / "ports.jsonl"))

    killed_at = None
    for _attempt in range(5):
        proc = subprocess.Popen(host.hvrouter_cmd("reconcile", "--once"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={**os.environ, "HVROUTER_BATCH_PAUSE": "0.5"})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            n = our_routes(host)
            if n > 0:
                # Every process of the namespace, not only our child: the
                # reconcile must die wherever `ip netns exec` put it.
                for pid in subprocess.run(["ip", "netns", "pids", host.ns], capture_output=True,
                                          text=True).stdout.split():
                    os.kill(int(pid), signal.SIGKILL)
                proc.send_signal(signal.SIGKILL)
                killed_at = n
                break
        proc.wait(30)
        if killed_at is not None and killed_at < 2 * N:
            break
        # Finished before we could kill it: start from nothing and try again.
        host.ip("-4", "route", "flush", "table", "90", "proto", "211")
        host.ip("-6", "route", "flush", "table", "90", "proto", "211")
        killed_at = None
    assert killed_at is not None, "could not interrupt an apply in 5 attempts"
    time.sleep(1.0)  # nothing may still be applying
    partial = our_routes(host)
    assert 0 < partial < 2 * N + 2, partial

    monitor = subprocess.Popen(["ip", "-n", host.ns, "monitor", "route", "address", "rule"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(0.3)  # let the monitor subscribe before the restart
        out = json.loads(host.hvrouter("reconcile", "--once", "--json").stdout)
        time.sleep(0.5)
    finally:
        monitor.send_signal(signal.SIGTERM)
        events, _ = monitor.communicate(timeout=10)
    assert out["failures"] == []
    assert out["changes"] > 0
    deleted = [line for line in events.splitlines() if line.startswith("Deleted")]
    assert deleted == [], deleted[:5]
    assert our_routes(host) == 2 * N + 2  # + the two unreachable defaults of table 90
    again = json.loads(host.hvrouter("reconcile", "--once", "--json").stdout)
    assert again["changes"] == 0
