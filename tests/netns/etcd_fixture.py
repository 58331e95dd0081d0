"""A namespace with an etcd in it, for any netns test that needs one.

    from etcd_fixture import EtcdNs, etcd_ns  # noqa: F401  (the fixture)

    def test_x(etcd_ns: EtcdNs) -> None:
        etcd_ns.python("-c", "...")   # client code runs inside the namespace

`etcd_ns` is module-scoped (one etcd per test module, ~1 s to start); use
`etcd_namespace()` directly for a private one, or
hvrouter.overlay.etcdrun.start_etcd for an etcd in a namespace you made.
Teardown stops etcd by PID, kills whatever else runs in the namespace by
PID, and deletes the namespace, even on failure.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hvrouter.overlay.etcdrun import EtcdProcess, start_etcd

PREFIX = "hvrg"
LISTEN = "127.0.0.1"


@dataclass
class EtcdNs:
    ns: str
    etcd: EtcdProcess
    workdir: Path

    @property
    def endpoint(self) -> str:
        return self.etcd.endpoint

    def python(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
        """This interpreter, run inside the namespace."""
        return subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, *args], capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, **(env or {})})


def _del_ns(ns: str) -> None:
    if not Path("/run/netns", ns).exists():
        return
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@contextmanager
def etcd_namespace(workdir: Path, port: int | None = None, **start_args: Any) -> Iterator[EtcdNs]:
    """A fresh namespace (lo up) running etcd on 127.0.0.1:`port` (random by
    default: every port is free in a fresh namespace)."""
    ns = f"{PREFIX}{secrets.token_hex(3)}"
    port = port or 20000 + secrets.randbelow(20000)
    etcd = None
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, capture_output=True)
        etcd = start_etcd(ns, LISTEN, port, workdir / f"etcd-{port}", **start_args)
        yield EtcdNs(ns, etcd, workdir)
    finally:
        if etcd is not None:
            etcd.stop()
        _del_ns(ns)


@pytest.fixture(scope="module")
def etcd_ns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdNs]:
    with etcd_namespace(tmp_path_factory.mktemp("etcd")) as env:
        yield env
