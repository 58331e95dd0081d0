"""The miss controller under the real agent, in a namespace: misses for
registry entries are answered; a storm of 100k misses for unknown MACs
within 10 s leaves it answering real misses; registry withdrawals remove
the entries it wrote."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from hvrouter.bench.miss import DEV, HvrouterSide, _del_ns, _ns, _work, dataset, publish_peer
from hvrouter.config import RegistryConfig
from hvrouter.overlay.registry import open_registry
from hvrouter.overlay.types import Entry, Member

pytestmark = pytest.mark.netns


@pytest.fixture
def side(tmp_path: Path):  # type: ignore[no-untyped-def]
    ns = f"hvmc{secrets.token_hex(3)}"
    rows = dataset(200)
    hv = None
    try:
        _ns(ns)
        hv = HvrouterSide(ns, tmp_path, rows)
        yield ns, tmp_path, rows, hv
    finally:
        if hv is not None:
            hv.stop()
        _del_ns(ns)


def _fdb(ns: str) -> dict[str, str]:
    out = subprocess.run(["bridge", "-n", ns, "-j", "fdb", "show", "dev", DEV], capture_output=True, text=True, check=True)
    return {e["mac"]: e.get("dst", "") for e in json.loads(out.stdout or "[]")}


def test_misses_resolved_and_storm_survived(side) -> None:  # type: ignore[no-untyped-def]
    ns, tmp, rows, hv = side
    data = tmp / "data.txt"
    data.write_text("".join(f"{m} {i} {v}\n" for m, i, v in rows))
    # 100 real L2 misses interleaved with 100k misses for unknown MACs
    res = _work(ns, data, 100, 10.0, unknown=100_000)
    assert res["storm_sent"] == 100_000 and res["storm_s"] < 10
    assert res["latency_lost"] == 0, res
    assert res["latency_samples"] == 100
    assert hv.alive()
    fdb = _fdb(ns)
    assert all(fdb.get(m) == v for m, _i, v in rows[:100])
    assert not any(m.startswith("52:54:02:") for m in fdb)  # nothing invented for unknown MACs
    st = json.loads((hv.state / "overlay-status.json").read_text())
    c = st["controller"]
    assert c["unknown"] + c["negative_hits"] >= 1000  # the storm reached the controller and was absorbed
    # after the storm, a real L3 miss is still answered (burst phase, 200 IPs)
    res = _work(ns, data, 0, 10.0)
    assert res["resolved"] == len(rows)


def test_withdrawal_removes_controller_entries(side) -> None:  # type: ignore[no-untyped-def]
    ns, tmp, rows, hv = side
    data = tmp / "data.txt"
    data.write_text("".join(f"{m} {i} {v}\n" for m, i, v in rows[:5]))
    assert _work(ns, data, 5, 5.0)["latency_lost"] == 0
    assert rows[0][0] in _fdb(ns)
    reg = open_registry(RegistryConfig(backend="sqlite", path=tmp / "registry.sqlite", lease=3600))
    try:
        # the peer keeps all but the first MAC; the first moves nowhere (gone)
        reg.publish("peer", [Member(100, rows[0][2], "peer")], [Entry(100, m, (i,), v, "peer") for m, i, v in rows[1:]])
    finally:
        reg.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and rows[0][0] in _fdb(ns):
        time.sleep(0.05)
    fdb = _fdb(ns)
    assert rows[0][0] not in fdb and rows[1][0] in fdb


def test_restart_keeps_entries_and_sweeps_what_the_registry_dropped(side) -> None:  # type: ignore[no-untyped-def]
    ns, tmp, rows, hv = side
    data = tmp / "data.txt"
    data.write_text("".join(f"{m} {i} {v}\n" for m, i, v in rows[:5]))
    assert _work(ns, data, 5, 5.0)["latency_lost"] == 0
    hv.proc.kill()  # SIGKILL: no clean shutdown
    hv.proc.wait()
    monitor = subprocess.Popen(["bridge", "-n", ns, "monitor", "fdb"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        publish_peer(tmp, rows[1:])  # while no agent runs, the registry drops the first MAC
        hv2 = HvrouterSide(ns, tmp, rows[1:], publish=False)
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and rows[0][0] in _fdb(ns):
                time.sleep(0.05)
            fdb = _fdb(ns)
            assert rows[0][0] not in fdb  # swept by the new agent
            assert all(fdb.get(m) == v for m, _i, v in rows[1:5])
        finally:
            hv2.stop()
    finally:
        monitor.terminate()
        out, _ = monitor.communicate(timeout=5)
    deleted = [line for line in out.splitlines() if line.startswith("Deleted")]
    assert all(rows[0][0] in line for line in deleted), deleted  # nothing else was flushed on restart
    assert deleted
