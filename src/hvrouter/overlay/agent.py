"""The overlay side of the agent, run by the daemon when the config has
overlay networks.

Two threads:
* registry: publishes this VTEP's members/entries, keeps its lease alive,
  and watches the registry; each new snapshot goes to the worker;
* worker (asyncio): plans and applies the kernel state for every snapshot,
  attachment change and periodic resync, and runs the miss controller on
  the neighbour netlink group.

Stopping the agent does not withdraw anything: a restart re-publishes the
same content under the same owner before the lease runs out (no churn at
the peers); a dead agent's entries vanish when its lease expires.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import HvrouterError
from ..kernel import NetlinkSocket
from ..kernel.vxlan import MissListener
from . import apply as overlay_apply
from .controller import MissCache, fdb_entry, neigh_entry
from .plan import MissTables, miss_tables, plan, publication
from .types import Attachment, Fdb, Miss, Neigh, Snapshot

log = logging.getLogger("hvrouter.overlay")
STATUS_NAME = "overlay-status.json"
DEVICES_NAME = "overlay-devices.json"
RESYNC_S = 30.0


def default_owner() -> str:
    host = socket.gethostname().split(".")[0].lower()
    host = re.sub(r"[^a-z0-9-]", "-", host)
    return host if re.match(r"^[a-z]", host) else f"h-{host}"


class OverlayAgent:
    def __init__(self, cfg: Config, state_dir: Path) -> None:
        self.cfg = cfg
        self.ov = cfg.overlay
        self.state_dir = state_dir
        self.owner = self.ov.vtep_id or default_owner()
        self._attachments: tuple[Attachment, ...] = ()
        self._snapshot = Snapshot(revision=-1)
        self._stop = threading.Event()
        self._dirty = threading.Event()  # attachments changed: publish now
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self.cache = MissCache(self.ov.miss)
        self._status: dict[str, Any] = {"owner": self.owner, "registry": self.ov.registry.backend}
        self._published_at = 0.0
        self._frr: Any = None
        self._index: dict[str, int] = {}

    # -- control from the daemon ----------------------------------------------

    def start(self) -> None:
        for target, name in (
            (self._publisher_thread, "overlay-publish"),
            (self._watcher_thread, "overlay-watch"),
            (self._worker_thread, "overlay-worker"),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def update(self, attachments: list[Attachment]) -> None:
        """Attachments from the store, or links changed: re-plan (and re-publish)."""
        self._attachments = tuple(attachments)
        self._dirty.set()
        self.poke()

    def poke(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._replan)

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        for t in self._threads:
            t.join(timeout=5)
        self._write_status()

    # -- registry threads --------------------------------------------------------
    # Two connections: publishing must not wait for a watch to time out, and
    # a watch must not wait for a publish (the SQLite backend's connections
    # are per thread anyway).

    def _with_registry(self, body: Callable[[Any], None]) -> None:
        """Run `body(registry)`, reconnecting with backoff on registry errors."""
        from .registry import RegistryError, open_registry

        backoff = 0.5
        while not self._stop.is_set():
            try:
                reg = open_registry(self.ov.registry)
            except (RegistryError, OSError) as exc:
                self._status["registry_error"] = str(exc)
                log.error("overlay registry: %s", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            try:
                body(reg)
                return
            except (RegistryError, OSError) as exc:
                self._status["registry_error"] = str(exc)
                log.error("overlay registry: %s", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                reg.close()

    def _publisher_thread(self) -> None:
        self._with_registry(self._publish_loop)

    def _watcher_thread(self) -> None:
        self._with_registry(self._watch_loop)

    def _publish_loop(self, reg: Any) -> None:
        """Publish on every change of what we have, keep the lease alive between."""
        published: tuple[Any, ...] | None = None
        lease = float(self.ov.registry.lease)
        next_keep = 0.0
        while not self._stop.is_set():
            self._dirty.clear()
            members, entries = publication(self.ov, self.owner, self._attachments)
            pub = (tuple(sorted(members, key=repr)), tuple(sorted(entries, key=repr)))
            now = time.monotonic()
            if pub != published:
                reg.publish(self.owner, members, entries)
                published = pub
                next_keep = now + lease / 3
                self._published_at = time.time()
                self._status.update(published_members=len(members), published_entries=len(entries))
                self._status.pop("registry_error", None)
                log.info("overlay: published %d member(s), %d entr(ies) as %s", len(members), len(entries), self.owner)
            elif now >= next_keep:
                if not reg.keepalive(self.owner):
                    log.warning("overlay: lease of %s was lost; publishing again", self.owner)
                    published = None
                    continue
                next_keep = now + lease / 3
            self._dirty.wait(max(0.0, next_keep - time.monotonic()))

    def _watch_loop(self, reg: Any) -> None:
        while not self._stop.is_set():
            snap = reg.wait(self._snapshot.revision, timeout=1.0)
            if snap is not None:
                self._snapshot = snap
                self._status.pop("registry_error", None)
                self.poke()

    # -- worker thread ---------------------------------------------------------

    def _worker_thread(self) -> None:
        loop = asyncio.new_event_loop()
        self._nl = NetlinkSocket()
        self._listener = MissListener(misses_only=True)
        loop.add_reader(self._listener.fileno(), self._on_miss)
        self._loop = loop
        loop.call_soon(self._replan)
        loop.call_later(RESYNC_S, self._resync)
        try:
            loop.run_forever()
        finally:
            loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._nl.close()
            loop.close()

    def _resync(self) -> None:
        self._replan()
        if self._loop is not None:
            self._loop.call_later(RESYNC_S, self._resync)

    def _stale_devices(self, desired_names: set[str]) -> list[str]:
        path = self.state_dir / DEVICES_NAME
        try:
            before = set(json.loads(path.read_text()))
        except (OSError, ValueError):
            before = set()
        if before != desired_names:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(sorted(desired_names)))
            tmp.replace(path)
        return sorted(before - desired_names)

    def _replan(self) -> None:
        if self._stop.is_set():
            return
        snap = self._snapshot
        t0 = time.perf_counter()
        desired = plan(self.ov, self.owner, self._attachments, snap)
        names = {v.name for v in desired.vxlans} | {b.name for b in desired.bridges}
        try:
            # Until the first registry snapshot, an empty view would flush
            # every remote entry the previous agent programmed: devices only.
            res = overlay_apply.apply(self._nl, desired, self._stale_devices(names), entries=snap.revision >= 0)
        except (HvrouterError, OSError) as exc:
            log.error("overlay apply: %s", exc)
            self._status["apply_error"] = str(exc)
            return
        self._status.pop("apply_error", None)
        for c in res.changes:
            log.info("overlay: %s", c)
        for f in res.failures:
            log.warning("overlay: failed %s", f)
        if snap.revision < 0:
            self._status.update(pending=res.pending, failures=res.failures, devices=sorted(res.devices.values()))
            return
        tables = miss_tables(self.ov, self.owner, snap)
        delete, replace = self.cache.update(res.devices, tables)
        self._index = {name: idx for idx, name in res.devices.items()}
        delete += self._sweep(tables)
        overlay_apply.write(self._nl, delete, delete=True, index=self._index)
        overlay_apply.write(self._nl, replace, index=self._index)
        self._evpn()
        self._status.update(
            revision=snap.revision,
            peers=len({m.vtep for m in snap.members if m.owner != self.owner}),
            remote_entries=sum(1 for e in snap.entries if e.owner != self.owner),
            static_fdb=res.fdb,
            static_neigh=res.neigh,
            pending=res.pending,
            failures=res.failures,
            devices=sorted(res.devices.values()),
            plan_apply_ms=round((time.perf_counter() - t0) * 1000, 1),
        )
        self._write_status()

    def _sweep(self, tables: MissTables) -> list[Fdb | Neigh]:
        """Controller entries in the kernel the registry no longer backs (a
        previous agent's, or missed updates); the others are adopted."""
        from ..kernel import vxlan as kv

        stale: list[Fdb | Neigh] = []
        nd = {n.vxlan_name for n in self.ov.networks if n.mode == "unicast-dynamic-nd"}
        for dev, macs in tables.l2.items():
            if dev not in self._index:
                continue
            try:
                fdb = kv.read_fdb_flags(self._nl, dev)
                neigh = kv.read_neigh(self._nl, dev) if dev in nd else []
            except (HvrouterError, OSError) as exc:
                log.warning("overlay: reading %s: %s", dev, exc)
                continue
            for f, flags in fdb:
                if flags & kv.NTF_EXT_LEARNED:
                    entry = fdb_entry(dev, f.mac, f.dst)
                    if macs.get(f.mac) == f.dst:
                        self.cache.adopt(entry)
                    else:
                        stale.append(entry)
            ips = tables.l3.get(dev, {})
            for n in neigh:
                if n.permanent:
                    nentry = neigh_entry(dev, n.ip, n.mac)
                    if ips.get(n.ip) == n.mac:
                        self.cache.adopt(nentry)
                    else:
                        stale.append(nentry)
        return stale

    def _evpn(self) -> None:
        evpn = self.ov.evpn
        if evpn is None or not evpn.run or not any(n.mode == "evpn" for n in self.ov.networks):
            return
        from .evpn import Frr, render

        local = next(str(n.local) for n in self.ov.networks if n.mode == "evpn")
        try:
            text = render("vtep", evpn, self.owner, local=local)
            if self._frr is None:
                self._frr = Frr(evpn.directory, self.owner)
            if not self._frr.alive():
                self._frr.start(text)
                log.info("overlay: FRR started for EVPN")
            elif self._frr.apply(text):
                log.info("overlay: FRR config applied")
            self._status.pop("evpn_error", None)
        except (HvrouterError, OSError) as exc:
            self._status["evpn_error"] = str(exc)
            log.error("overlay evpn: %s", exc)

    def _on_miss(self) -> None:
        misses: list[Miss] = []
        try:
            self._listener.read(misses)
        except OSError as exc:
            log.debug("miss listener: %s", exc)
        if not misses:
            return
        entries = self.cache.handle(misses)
        if entries:
            self.cache.counters.kernel_errors += overlay_apply.write(self._nl, entries, index=self._index)
        self.cache.counters.overruns = self._listener.overruns

    # -- status ------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {**self._status, "controller": self.cache.stats(), "published_at": self._published_at}

    def _write_status(self) -> None:
        path = self.state_dir / STATUS_NAME
        tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
        try:
            tmp.write_text(json.dumps(self.stats(), sort_keys=True))
            tmp.replace(path)
        except OSError:
            pass

    def write_status_if_due(self) -> None:
        self._write_status()
