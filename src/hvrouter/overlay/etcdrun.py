"""Start a single-member etcd inside a network namespace (tests and the lab).

etcd is started as `ip netns exec NS etcd ...`; `ip netns exec` execs etcd,
so the PID we hold is etcd's own and stop() signals exactly that process.
The caller's process usually sits in another namespace and cannot reach the
listen address, so readiness is checked by a short probe run inside the
namespace (`ip netns exec NS python -c ...`, one process polling /health).

Limits chosen for the overlay registry: a publish of one owner is one etcd
transaction (atomic for watchers), so 10k entries need more than etcd 3.4's
defaults of 128 operations and 1.5 MiB per request. We start etcd with
`--max-txn-ops 65536 --max-request-bytes 8 MiB` (MAX_TXN_OPS,
MAX_REQUEST_BYTES); the registry still works against an etcd with the
defaults, by splitting a large publish into several transactions.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HvrouterError

MAX_TXN_OPS = 65536
MAX_REQUEST_BYTES = 8 * 1024 * 1024
ETCD_BINARY = "etcd"

_PROBE = """
import sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
last = "no answer"
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            body = r.read().decode()
            if '"health":"true"' in body.replace(" ", ""):
                sys.exit(0)
            last = body
    except Exception as exc:
        last = repr(exc)
    time.sleep(0.05)
print(last)
sys.exit(1)
"""


class EtcdStartError(HvrouterError):
    """etcd did not start or did not become healthy in time."""


@dataclass
class EtcdProcess:
    """A running etcd; `endpoint` is its client URL (reachable inside `ns`)."""

    ns: str | None
    endpoint: str
    peer: str
    datadir: Path
    log: Path
    proc: subprocess.Popen[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; idempotent."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL (crash tests); idempotent."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> EtcdProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def start_etcd(
    ns: str | None,
    listen: str,
    port: int,
    datadir: Path,
    *,
    peer_port: int | None = None,
    name: str = "hvrouter",
    timeout: float = 30.0,
    log: Path | None = None,
    max_txn_ops: int | None = MAX_TXN_OPS,
    max_request_bytes: int | None = MAX_REQUEST_BYTES,
) -> EtcdProcess:
    """Start etcd in namespace `ns` (None: the caller's own namespace, for a
    caller already inside a lab namespace) listening for clients on
    `listen:port` and for peers on `listen:peer_port` (default port + 1);
    returns once /health answers true, or raises EtcdStartError with the log.
    `max_txn_ops` / `max_request_bytes` None keep etcd's own defaults."""
    datadir = Path(datadir)
    datadir.mkdir(parents=True, exist_ok=True)
    log = log or datadir.parent / f"{datadir.name}.etcd.log"
    client = _url(listen, port)
    peer = _url(listen, peer_port if peer_port is not None else port + 1)
    prefix = ["ip", "netns", "exec", ns] if ns else []
    cmd = [
        *prefix, ETCD_BINARY,
        "--name", name,
        "--data-dir", str(datadir),
        "--listen-client-urls", client,
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"{name}={peer}",
        "--initial-cluster-state", "new",
        "--logger", "zap",
        "--log-outputs", "stderr",
    ]
    if max_txn_ops is not None:
        cmd += ["--max-txn-ops", str(max_txn_ops)]
    if max_request_bytes is not None:
        cmd += ["--max-request-bytes", str(max_request_bytes)]
    with open(log, "ab") as out:
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise EtcdStartError(f"etcd in namespace {ns or '(current)'}: cannot run {ETCD_BINARY!r}: {exc}") from exc
    etcd = EtcdProcess(ns=ns, endpoint=client, peer=peer, datadir=datadir, log=log, proc=proc)
    try:
        _wait_healthy(etcd, timeout)
    except BaseException:
        etcd.kill()
        raise
    return etcd


def _wait_healthy(etcd: EtcdProcess, timeout: float) -> None:
    prefix = ["ip", "netns", "exec", etcd.ns] if etcd.ns else []
    probe = subprocess.Popen(
        [*prefix, sys.executable, "-c", _PROBE, f"{etcd.endpoint}/health", str(timeout)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    # Watch etcd while the probe polls: a crash at start-up fails fast.
    deadline = time.monotonic() + timeout + 5
    while probe.poll() is None:
        if not etcd.alive() or time.monotonic() > deadline:
            probe.kill()
            probe.wait()
            break
        time.sleep(0.05)
    out = probe.stdout.read().decode(errors="replace").strip() if probe.stdout else ""
    if probe.stdout:
        probe.stdout.close()
    if probe.returncode == 0 and etcd.alive():
        return
    state = f"exited with {etcd.proc.returncode}" if not etcd.alive() else f"not healthy after {timeout:g}s"
    raise EtcdStartError(
        f"etcd {etcd.endpoint} in namespace {etcd.ns or '(current)'} {state} "
        f"(last probe: {out or 'none'}); log {etcd.log}:\n{etcd.log_tail()}"
    )
