"""Fixtures for tests that need root and network namespaces.

Every namespace gets a random per-test prefix and is removed in teardown,
even on failure; every process a test starts is stopped by PID. Nothing runs
in the machine's root namespace.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

if os.geteuid() != 0:  # pragma: no cover - CI runs as root
    if os.environ.get("CI"):
        raise RuntimeError("tests/netns needs root; CI must not skip them")
    pytest.skip("needs root for network namespaces", allow_module_level=True)

CONFIG = """
rtproto: 211
tables: {{public: 90, private: 20, local-out: 100}}
rules:
  priority: 20000
  prefixes: [{{prefix: 198.18.15.0/24, table: private}}]
networks:
  - name: public
    table: public
    ipv4: {{subnet: 203.0.113.0/24, gateway: 203.0.113.254}}
    ipv6: {{mode: prefix-per-port, prefix: "2001:db8:cb00:7100::/56"}}
  - name: shared
    table: public
    ipv6: {{mode: shared-prefix, prefix: "2001:db8:5a::/64"}}
fabric:
  uplinks:
    - {{interface: {uplink}, table: public}}
"""


def sh(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=timeout)


@dataclass
class Host:
    """A hypervisor namespace with its own hvrouter config and state dir."""

    ns: str
    prefix: str
    workdir: Path
    made: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.workdir / "hvrouter.yaml"

    @property
    def state(self) -> Path:
        return self.workdir / "state"

    def hvrouter_cmd(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, sys.executable, "-m", "hvrouter",
                "--config", str(self.config), "--state-dir", str(self.state), *args]

    def hvrouter(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(self.hvrouter_cmd(*args), capture_output=True, text=True, timeout=300)
        if check and out.returncode != 0:
            raise AssertionError(f"hvrouter {' '.join(args)} -> {out.returncode}\n{out.stdout}\n{out.stderr}")
        return out

    def ip(self, *args: str, check: bool = True) -> str:
        return sh("ip", "-n", self.ns, *args, check=check).stdout

    def add_ns(self, name: str) -> str:
        ns = f"{self.prefix}-{name}"
        sh("ip", "netns", "add", ns)
        self.made.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    def add_vm(self, tap: str, mac: str, ipv4: str | None = None, ipv6: str | None = None, up: bool = True) -> str:
        """A VM namespace whose eth0 is the peer of `tap` in the hypervisor."""
        vm = self.add_ns(tap)
        sh("ip", "-n", vm, "link", "add", "eth0", "address", mac, "type", "veth", "peer", "name", tap, "netns", self.ns)
        sh("ip", "-n", vm, "link", "set", "eth0", "up")
        if ipv4:
            sh("ip", "-n", vm, "addr", "add", f"{ipv4}/24", "dev", "eth0")
            sh("ip", "-n", vm, "route", "add", "default", "via", "203.0.113.254")
        if ipv6:
            sh("ip", "-n", vm, "addr", "add", f"{ipv6}/64", "dev", "eth0", "nodad")
            sh("ip", "-n", vm, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")
        if up:
            self.ip("link", "set", tap, "up")
        return vm

    def start_daemon(self, resync: float = 2.0) -> subprocess.Popen[str]:
        log = open(self.workdir / "daemon.log", "a")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            self.hvrouter_cmd("--log-level", "debug", "daemon", "--resync-interval", str(resync)),
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def daemon_log(self) -> str:
        path = self.workdir / "daemon.log"
        return path.read_text() if path.exists() else ""


def wait_for(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll until check() is true; the timeout is a safety net, not a measurement."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def ping(ns: str, dst: str, count: int = 1, timeout: int = 2) -> bool:
    out = subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", str(count), "-W", str(timeout), dst],
                         capture_output=True, text=True)
    return out.returncode == 0


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    prefix = f"hvt{secrets.token_hex(3)}"
    h = Host(ns=f"{prefix}-hv", prefix=prefix, workdir=tmp_path)
    try:
        sh("ip", "netns", "add", h.ns)
        h.made.append(h.ns)
        h.ip("link", "set", "lo", "up")
        # An uplink stand-in, so shared-prefix proxy entries have a home.
        h.ip("link", "add", "up0", "type", "veth", "peer", "name", "up0p")
        h.ip("link", "set", "up0", "up")
        h.config.write_text(CONFIG.format(uplink="up0"))
        yield h
    finally:
        for proc in h.procs:
            h.stop(proc, signal.SIGKILL)
        for ns in reversed(h.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
