"""`make demo`: the reconciler programming a throwaway hypervisor namespace.

Three VMs on one hypervisor (namespaces joined by veth "taps"); the third
tap only appears once the daemon runs, to show a pending port being
programmed on the link event. Everything is removed at the end.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """
rtproto: 211
tables: {public: 90, private: 20, local-out: 100}
networks:
  - name: public
    table: public
    ipv4: {subnet: 203.0.113.0/24, gateway: 203.0.113.254}
    ipv6: {mode: prefix-per-port, prefix: "2001:db8:cb00:7100::/56"}
"""
VMS = [  # name, mac, ipv4, ipv6 prefix, ipv6 address (SLAAC-style)
    ("vm1", "52:54:00:00:00:01", "203.0.113.1", "2001:db8:cb00:7101::/64", "2001:db8:cb00:7101:5054:ff:fe00:1"),
    ("vm2", "52:54:00:00:00:02", "203.0.113.2", "2001:db8:cb00:7102::/64", "2001:db8:cb00:7102:5054:ff:fe00:2"),
    ("vm3", "52:54:00:00:00:03", "203.0.113.3", "2001:db8:cb00:7103::/64", "2001:db8:cb00:7103:5054:ff:fe00:3"),
]


def run(*args: str, check: bool = True) -> str:
    return subprocess.run(list(args), check=check, capture_output=True, text=True).stdout


def main() -> int:
    prefix = f"hvdemo{secrets.token_hex(2)}"
    hv = f"{prefix}-hv"
    work = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    cfg, state = work / "hvrouter.yaml", work / "state"
    cfg.write_text(CONFIG)
    made: list[str] = []
    daemon: subprocess.Popen[str] | None = None

    def hvrouter(*args: str) -> str:
        return run("ip", "netns", "exec", hv, sys.executable, "-m", "hvrouter",
                   "--config", str(cfg), "--state-dir", str(state), *args)

    def make_vm(name: str, mac: str, v4: str, v6: str) -> None:
        ns = f"{prefix}-{name}"
        run("ip", "netns", "add", ns)
        made.append(ns)
        run("ip", "-n", ns, "link", "add", "eth0", "address", mac, "type", "veth", "peer", "name", name, "netns", hv)
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", "eth0")
        run("ip", "-n", ns, "route", "add", "default", "via", "203.0.113.254")
        run("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", "eth0", "nodad")
        run("ip", "-n", ns, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")
        run("ip", "-n", hv, "link", "set", name, "up")

    try:
        print(f"== hypervisor namespace {hv}; VMs vm1, vm2 now, vm3 later")
        run("ip", "netns", "add", hv)
        made.append(hv)
        run("ip", "-n", hv, "link", "set", "lo", "up")
        for name, mac, v4, _pfx, v6 in VMS[:2]:
            make_vm(name, mac, v4, v6)
        for name, mac, v4, pfx, _v6 in VMS:
            print(hvrouter("port", "add", name, "--mac", mac, "--network", "public", "--ipv4", v4, "--ipv6", pfx), end="")
        print("\n== hvrouter reconcile --once --dry-run (the plan)")
        print(hvrouter("reconcile", "--once", "--dry-run"), end="")
        print("\n== hvrouter reconcile --once")
        print(hvrouter("reconcile", "--once").splitlines()[-1])
        print("\n== hvrouter status")
        print(hvrouter("status"), end="")

        print("\n== starting the daemon, then creating vm3's tap")
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", hv, sys.executable, "-m", "hvrouter", "--config", str(cfg),
             "--state-dir", str(state), "daemon"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        )
        time.sleep(1.0)
        t0 = time.monotonic()
        make_vm(*VMS[2][:3], VMS[2][4])
        while "203.0.113.3 dev vm3" not in run("ip", "-n", hv, "route", "show", "table", "90"):
            if time.monotonic() - t0 > 10:
                raise RuntimeError("vm3 was not programmed within 10 s")
            time.sleep(0.02)
        print(f"vm3 programmed {1000 * (time.monotonic() - t0):.0f} ms after its tap appeared")
        print(hvrouter("status"), end="")

        print("\n== ping matrix (src -> dst, IPv4 and IPv6)")
        ok_all = True
        for src, *_ in VMS:
            cells = []
            for dst, _mac, v4, _pfx, v6 in VMS:
                if dst == src:
                    continue
                for fam, addr in (("v4", v4), ("v6", v6)):
                    ok = subprocess.run(["ip", "netns", "exec", f"{prefix}-{src}", "ping", "-c1", "-W2", addr],
                                        capture_output=True).returncode == 0
                    ok_all &= ok
                    cells.append(f"{dst}/{fam} {'ok' if ok else 'FAIL'}")
            print(f"  {src}: " + "  ".join(cells))

        print("\n== kernel state in the hypervisor namespace")
        print("$ ip rule\n" + run("ip", "-n", hv, "rule"), end="")
        print("$ ip route show table 90\n" + run("ip", "-n", hv, "route", "show", "table", "90"), end="")
        print("$ ip -6 route show table 90\n" + run("ip", "-n", hv, "-6", "route", "show", "table", "90"), end="")
        print("$ ip -6 neigh show proxy\n" + run("ip", "-n", hv, "-6", "neigh", "show", "proxy"), end="")
        print(f"\n== demo {'OK' if ok_all else 'FAILED'}; removing namespaces")
        return 0 if ok_all else 1
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(10)
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    sys.exit(main())
