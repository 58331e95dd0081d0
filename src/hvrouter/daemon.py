"""The agent: reconcile on link events and store changes, resync periodically.

Events only say *when* to look; every pass is a full observe/plan/diff, so a
lost event (netlink ENOBUFS) costs at most a delay, never a wrong state.
Objects that fail are logged by name and retried with exponential backoff
without holding back the others (they are re-planned on every pass).
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import time
from pathlib import Path

from .config import Config
from .errors import HvrouterError
from .kernel import NetlinkSocket
from .kernel.netlink import RTMGRP_LINK
from .model import Link, Port
from .reconcile import Reconciler, describe_op
from .services.responder import Responder
from .store import Store

log = logging.getLogger("hvrouter.daemon")
SOCKET_NAME = "hvrouter.sock"
STATS_NAME = "responder-stats.json"
BACKOFF_MIN, BACKOFF_MAX = 0.5, 60.0


def kick(state_dir: Path) -> None:
    """Tell a running daemon that the store changed (best effort)."""
    path = state_dir / SOCKET_NAME
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"kick", str(path))
    except OSError:
        pass  # no daemon: it will read the store when it starts


def ensure_bird(cfg: Config) -> str:
    """Render, check and atomically install BIRD's config; reload BIRD only
    when the content changed; start BIRD when we supervise it and it is not
    running. Returns what was done, for the log."""
    from .bird import Birdc, check, install, render

    if cfg.bgp is None:
        return "no bgp section"
    text = render(cfg)
    check(text)
    changed = install(cfg.bird.config_path, text)
    client = Birdc(cfg.bird.socket)
    if client.alive():
        if changed:
            client.configure()
            return "bird reconfigured"
        return "bird config unchanged"
    if not cfg.bird.run:
        return "bird not running (expected the bird2 service)"
    args = ["bird", "-c", str(cfg.bird.config_path), "-s", str(cfg.bird.socket)]
    if cfg.bird.pidfile is not None:
        args += ["-P", str(cfg.bird.pidfile)]
    # bird daemonizes: it outlives us, so a crash of the agent never takes
    # the BGP sessions (and the announced routes) down with it.
    subprocess.run(args, check=True, capture_output=True, timeout=30)
    return "bird started"


class Daemon:
    def __init__(self, cfg: Config, state_dir: Path, resync_interval: float = 30.0) -> None:
        self.cfg = cfg
        self.state_dir = state_dir
        self.store = Store(state_dir)
        self.resync_interval = resync_interval
        self.reconciler = Reconciler(cfg)
        self.events = NetlinkSocket(groups=RTMGRP_LINK)
        self.events.sock.setblocking(False)
        sock_path = state_dir / SOCKET_NAME
        sock_path.unlink(missing_ok=True)
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.control.bind(str(sock_path))
        self.control.setblocking(False)
        self._stop = False
        self.passes = 0
        self._ports: list[Port] = []
        self._ports_version = -1
        # tap name -> ifindex it was announced on (a re-created tap is new)
        self._announced: dict[str, int] = {}
        self.responder = self._make_responder()
        self._stats_written = 0.0
        self.overlay = self._make_overlay()

    def _make_overlay(self):  # type: ignore[no-untyped-def]
        """The VXLAN overlay agent, when the config has overlay networks."""
        if not self.cfg.overlay.networks:
            return None
        from .overlay.agent import OverlayAgent

        return OverlayAgent(self.cfg, self.state_dir)

    def _make_responder(self) -> Responder | None:
        """DHCPv4 / RA / DHCPv6 for the ports, when a network asks for it."""
        if not any(n.services.enabled for n in self.cfg.networks):
            return None
        return Responder()

    def write_stats(self, force: bool = False) -> None:
        """Responder counters for `hvrouter status` (another process)."""
        now = time.monotonic()
        if not force and now - self._stats_written < 1.0:
            return
        self._stats_written = now
        if self.overlay is not None:
            self.overlay.write_status_if_due()
        if self.responder is None:
            return
        path = self.state_dir / STATS_NAME
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.responder.stats(), sort_keys=True))
        tmp.replace(path)

    def stop(self, *_: object) -> None:
        self._stop = True

    def supervise_bird(self) -> None:
        try:
            what = ensure_bird(self.cfg)
        except (HvrouterError, OSError, subprocess.SubprocessError) as exc:
            log.error("bird: %s", exc)
            return
        if what not in ("bird config unchanged", "no bgp section"):
            log.info("%s", what)

    def reconcile(self) -> bool:
        """One pass; True when everything applied."""
        version = self.store.data_version()
        if version != self._ports_version:
            self._ports = self.store.list_ports()
            self._ports_version = version
        ports = self._ports
        report = self.reconciler.run(ports)
        self.passes += 1
        names = {link.index: name for name, link in report.links.items()}
        failed = {id(f.op) for f in report.failures}
        for op in report.ops:
            if id(op) not in failed:
                log.info("applied %s", describe_op(op, names))
        for f in report.failures:
            log.warning("failed %s: %s", describe_op(f.op, names), f.reason)
        if report.ops:
            log.info(
                "pass %d: %d change(s), %d failure(s) in %.3f s",
                self.passes, len(report.ops), len(report.failures), report.timings["total_s"],
            )
        if report.firewall_error:
            log.warning("firewall: %s", report.firewall_error)
        if self.responder is not None:
            self.responder.update(self.cfg, ports, report.links)
        if self.overlay is not None:
            self.overlay.update(self.store.list_attachments())
        self.announce(ports, report.links, report.port_state, {f.op.owner for f in report.failures})
        return not report.failures and not report.firewall_error

    def announce(self, ports: list[Port], links: dict[str, Link], state: dict[str, str], failed: set[str]) -> None:
        """Gratuitous ARP / unsolicited NA into taps that just became active."""
        from .services.announce import announce

        current = {p.name for p in ports}
        for name in list(self._announced):
            if name not in current or state.get(name) != "ready":
                del self._announced[name]
        for port in ports:
            link = links.get(port.name)
            if state.get(port.name) != "ready" or link is None or port.name in failed:
                continue
            if self._announced.get(port.name) == link.index:
                continue
            net = self.cfg.network_by_name[port.network]
            try:
                n = announce(port.name, str(net.ipv4.gateway) if net.ipv4 else None,
                             str(net.ipv6.gateway) if net.ipv6 else None)
            except OSError as exc:
                log.warning("port %s: announcement failed: %s", port.name, exc)
                continue
            self._announced[port.name] = link.index
            log.info("port %s: active, sent %d announcement(s)", port.name, n)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        sel = selectors.DefaultSelector()
        sel.register(self.events.sock, selectors.EVENT_READ, "netlink")
        sel.register(self.control, selectors.EVENT_READ, "control")
        (self.state_dir / "hvrouter.pid").write_text(f"{os.getpid()}\n")
        if self.responder is not None:
            self.responder.start()
        if self.overlay is not None:
            self.overlay.start()
        log.info("hvrouter daemon started (pid %d)", os.getpid())
        version = self.store.data_version()
        dirty = True
        backoff = BACKOFF_MIN
        next_resync = 0.0
        retry_at: float | None = None
        while not self._stop:
            now = time.monotonic()
            if now >= next_resync or (retry_at is not None and now >= retry_at):
                dirty = True
            if dirty:
                if now >= next_resync:
                    self.supervise_bird()
                dirty = False
                next_resync = now + self.resync_interval
                if self.reconcile():
                    retry_at, backoff = None, BACKOFF_MIN
                else:
                    retry_at = time.monotonic() + backoff
                    backoff = min(backoff * 2, BACKOFF_MAX)
            deadline = min(next_resync, retry_at or next_resync)
            # Also poll the store: a writer without access to our socket
            # (another user, a crashed CLI) is still noticed within 1 s.
            timeout = max(0.0, min(deadline - time.monotonic(), 1.0))
            for key, _ in sel.select(timeout):
                if key.data == "netlink":
                    try:
                        self.events.read_events(lambda t, m: None)
                    except OSError:
                        pass  # ENOBUFS: events lost, the full pass below covers it
                    dirty = True
                else:
                    try:
                        while self.control.recv(64):
                            pass
                    except BlockingIOError:
                        pass
                    dirty = True
            current = self.store.data_version()
            if current != version:
                version = current
                dirty = True
            self.write_stats()
        log.info("hvrouter daemon stopping")
        if self.responder is not None:
            self.write_stats(force=True)
            self.responder.stop()
        if self.overlay is not None:
            self.overlay.stop()
        (self.state_dir / SOCKET_NAME).unlink(missing_ok=True)
        (self.state_dir / "hvrouter.pid").unlink(missing_ok=True)
