"""The seed-001 overlay in the default lab: the VMs' second interfaces share
VNI 1001 (unicast-static-l2, SQLite registry in the lab directory); a killed
agent's entries are withdrawn everywhere once its lease has run out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from hvrouter.lab import topology as T
from hvrouter.lab.manage import Lab

LEASE = 10.0


def _fdb(lab: Lab, hv: str) -> set[tuple[str, str]]:
    out = subprocess.run(["bridge", "-n", lab.ns(hv), "-j", "fdb", "show", "dev", "ovx1001"],
                         capture_output=True, text=True, check=True)
    return {(e["mac"], e.get("dst", "")) for e in json.loads(out.stdout or "[]") if e.get("dst")}


def _addr(hv: str) -> str:
    return next(n for n in T.HYPERVISORS if n.name == hv).addr4(("a", "pub"))


def _ping(lab: Lab, src: str, dst: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", lab.ns(src), "ping", "-c", "1", "-W", "1", dst],
                          capture_output=True).returncode == 0


def _wait(cond, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return bool(cond())


def test_overlay_pairs_and_static_entries(lab: Lab) -> None:
    result = lab.check()
    assert result["overlay"] and all(p["ok"] for p in result["overlay"]), result["overlay"]  # type: ignore[union-attr]
    vm3, vm4 = (next(v for v in T.VMS if v.name == n) for n in ("vm3", "vm4"))
    fdb = _fdb(lab, "hv1")
    # flood list: one all-zero entry per peer VTEP; remote MACs static
    assert {("00:00:00:00:00:00", _addr("hv2")), ("00:00:00:00:00:00", _addr("hv3"))} <= fdb
    assert {(vm3.ov_mac, _addr("hv2")), (vm4.ov_mac, _addr("hv3"))} <= fdb
    assert not any(dst == _addr("hv1") for _m, dst in fdb)
    st = json.loads(lab.hvrouter("hv1", "status", "--json").stdout)
    assert st["overlay"]["peers"] == 2 and st["overlay"]["remote_entries"] == 2 and not st["overlay"]["failures"]


def test_killed_agent_is_withdrawn_after_its_lease(lab: Lab) -> None:
    vm4 = next(v for v in T.VMS if v.name == "vm4")
    pidfile = Path(lab.files("hv3").state) / "hvrouter.pid"
    pid = int(pidfile.read_text())
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    try:
        gone = (vm4.ov_mac, _addr("hv3"))
        # still there right after the kill: the lease has not run out
        assert gone in _fdb(lab, "hv1")
        for hv in ("hv1", "hv2"):
            assert _wait(lambda hv=hv: gone not in _fdb(lab, hv), LEASE + 10), f"{hv} kept {gone}"
        waited = time.monotonic() - killed
        assert waited > LEASE * 0.5, f"withdrawn after {waited:.1f} s, before the lease could expire"
        assert ("00:00:00:00:00:00", _addr("hv3")) not in _fdb(lab, "hv1")
        assert not _ping(lab, "vm1", vm4.ov_ipv4)
    finally:
        lab.start_daemon("hv3")
    assert _wait(lambda: (vm4.ov_mac, _addr("hv3")) in _fdb(lab, "hv1"), 15)
    assert _wait(lambda: _ping(lab, "vm1", vm4.ov_ipv4), 10)


def test_agent_restart_flushes_nothing(lab: Lab) -> None:
    monitor = subprocess.Popen(["bridge", "-n", lab.ns("hv1"), "monitor", "fdb"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        before = _fdb(lab, "hv1")
        state = Path(lab.files("hv1").state)
        pid = int((state / "hvrouter.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        (state / "overlay-status.json").unlink()  # the new agent writes its own

        def applied() -> bool:  # the new agent has read the registry and planned from it
            try:
                st = json.loads((state / "overlay-status.json").read_text())
            except (OSError, ValueError):
                return False
            return st.get("revision", -1) >= 0 and st.get("static_fdb") == len(before)

        lab.start_daemon("hv1")
        assert _wait(applied, 15)
        assert _fdb(lab, "hv1") == before
    finally:
        monitor.terminate()
        out, _ = monitor.communicate(timeout=5)
    assert not [line for line in out.splitlines() if line.startswith("Deleted") and "dst" in line], out


def test_migration_moves_the_overlay_interface_and_its_entries(lab: Lab) -> None:
    from hvrouter.lab.scenarios import migrate

    vm2 = next(v for v in T.VMS if v.name == "vm2")
    migrate(lab, "vm2", "hv2")
    try:
        assert _wait(lambda: (vm2.ov_mac, _addr("hv2")) in _fdb(lab, "hv3")
                     and (vm2.ov_mac, _addr("hv1")) not in _fdb(lab, "hv3"), 10), _fdb(lab, "hv3")
        assert _wait(lambda: _ping(lab, "vm4", vm2.ov_ipv4), 10)
        assert _wait(lambda: _ping(lab, "vm1", vm2.ov_ipv6), 10)  # vm1 stayed on hv1: now remote
    finally:
        migrate(lab, "vm2", "hv1")
    assert _wait(lambda: (vm2.ov_mac, _addr("hv1")) in _fdb(lab, "hv3"), 10)
    assert _wait(lambda: _ping(lab, "vm4", vm2.ov_ipv4), 10)
