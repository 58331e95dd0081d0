"""Agent death in the VXLAN lab with the etcd registry: S3's agent is killed
with SIGKILL; once its lease (10 s) has run out, S1 and S2 have dropped
every entry pointing at S3, in both a static and a dynamic mode; a new
agent on S3 brings them back."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hvrouter.lab import vxlan

pytestmark = pytest.mark.lab
LEASE = 10.0


def _remote(ns: str, dev: str) -> set[tuple[str, str]]:
    out = subprocess.run(["bridge", "-n", ns, "-j", "fdb", "show", "dev", dev], capture_output=True, text=True)
    if out.returncode != 0:
        return set()
    return {(e["mac"], e["dst"]) for e in json.loads(out.stdout or "[]") if e.get("dst")}


def _wait(cond, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return bool(cond())


@pytest.mark.parametrize("mode", ["unicast-static-l2", "unicast-dynamic-nd"])
def test_killed_vtep_is_withdrawn_everywhere(mode: str) -> None:
    name = f"hvx{secrets.token_hex(3)}"
    try:
        up = vxlan.up(name, mode, "ipv6", "etcd")
        assert up["ok"], vxlan.render_check(up)
        lab = vxlan.VxlanLab(name).lab
        s3 = vxlan.loopback("s3", "ipv6")
        # traffic to S3's hosts first, so the dynamic mode has entries for them
        assert vxlan.check(name)["ok"]
        points_at_s3 = lambda ns: {e for e in _remote(ns, "ovx100") if e[1] == s3}  # noqa: E731
        assert points_at_s3(lab.ns("s1")), "S1 has nothing for S3's host before the kill"
        pid = int((Path(lab.files("s3").state) / "hvrouter.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        for vtep in ("s1", "s2"):
            assert _wait(lambda v=vtep: not points_at_s3(lab.ns(v)), LEASE + 15), f"{vtep} kept entries for S3"
        assert time.monotonic() - killed > LEASE * 0.5  # it was the lease, not something faster
        lab.start_daemon("s3")
        assert _wait(lambda: vxlan.check(name)["ok"], 30)
        assert points_at_s3(lab.ns("s1"))
    finally:
        vxlan.down(name)
