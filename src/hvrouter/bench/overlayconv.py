"""`hvrouter bench overlay`: from `overlay attach` on one VTEP to the FDB
entry on the others, through the registry (SQLite, then etcd).

In seed 002's lab (mode unicast-static-l2, IPv6 underlay), K new
interfaces are attached on S3 one after the other, exactly as `hvrouter
overlay attach` does it after parsing (validate, commit to the store, kick
the daemon); the clock runs until both S1 and S2 hold a static FDB entry for
the new MAC pointing at S3. The path: S3's agent publishes (under its
lease) -> the registry -> S1's and S2's agents see the new snapshot ->
plan -> netlink.
"""

from __future__ import annotations

import json
import secrets
import statistics
import subprocess
import time
from pathlib import Path

from ..config import load_config
from ..daemon import kick
from ..lab import vxlan
from ..overlay.attach import check_attachment, parse_attachment
from ..store import Store


def _has(ns: str, mac: str, dst: str) -> bool:
    out = subprocess.run(["bridge", "-n", ns, "-j", "fdb", "show", "dev", "ovx100"], capture_output=True, text=True)
    return any(e.get("mac") == mac and e.get("dst") == dst for e in json.loads(out.stdout or "[]"))


def _one_registry(registry: str, count: int) -> dict[str, object]:
    name = f"hvbo{secrets.token_hex(3)}"
    try:
        up = vxlan.up(name, "unicast-static-l2", "ipv6", registry)
        if not up["ok"]:
            raise RuntimeError(f"VXLAN lab {name} did not come up: {vxlan.render_check(up)}")
        lab = vxlan.VxlanLab(name).lab
        files = lab.files("s3")
        cfg = load_config(Path(files.config))
        state = Path(files.state)
        s3 = vxlan.loopback("s3", "ipv6")
        times: list[float] = []
        failed = 0
        for i in range(count):
            iface, mac = f"t{i}", f"52:54:00:aa:00:{i:02x}"
            subprocess.run(["ip", "-n", lab.ns("s3"), "link", "add", iface, "type", "veth", "peer", "name", f"{iface}p"],
                           check=True)
            att, problems = parse_attachment(cfg, iface, "v100", mac, [f"198.19.100.{100 + i}"])
            assert att is not None, problems
            t0 = time.monotonic()
            Store(state).add_attachments([att], lambda a: check_attachment(cfg, a))
            kick(state)
            deadline = t0 + 15
            done = False
            while time.monotonic() < deadline:
                if _has(lab.ns("s1"), mac, s3) and _has(lab.ns("s2"), mac, s3):
                    done = True
                    break
                time.sleep(0.002)
            if done:
                times.append((time.monotonic() - t0) * 1000)
            else:
                failed += 1
        ordered = sorted(times)
        return {
            "attachments": count,
            "failed": failed,
            "p50_ms": round(statistics.median(ordered), 1) if ordered else None,
            "p90_ms": round(ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))], 1) if ordered else None,
            "max_ms": round(max(ordered), 1) if ordered else None,
        }
    finally:
        vxlan.down(name)


def run_overlay_bench(count: int = 20) -> dict[str, object]:
    return {"mode": "unicast-static-l2", "sqlite": _one_registry("sqlite", count), "etcd": _one_registry("etcd", count)}
