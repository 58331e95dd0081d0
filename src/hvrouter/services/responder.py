"""The responder: DHCPv4, router advertisements and DHCPv6 for every port.

An asyncio loop in a thread of its own (the daemon's selector loop stays as
it is) owns one AF_PACKET socket for all taps (rawsock.py) and the
periodic-RA timers. The daemon hands it the desired state after each pass
with update(); the port table is rebuilt in the caller's thread and swapped
in whole, so adding, removing or moving a port needs no restart and no file.

    responder = Responder()
    responder.start()
    ...after every reconcile pass...
    responder.update(cfg, ports, links)
    ...
    responder.stats()
    responder.stop()
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import threading
from collections.abc import Callable, Mapping, Sequence

from ..config import Config
from ..model import Link, Port
from .announce import hw_address
from .dispatch import Dispatcher
from .rawsock import PacketSocket, open_port_sink
from .table import PortEntry, build_table

log = logging.getLogger("hvrouter.services")

# RFC 4861 6.2.4: the first few advertisements of a new router interface go
# out faster than the configured interval.
MAX_INITIAL_ADVERTS = 3
MAX_INITIAL_INTERVAL = 16.0
# Frames handled per wake-up before timers get a turn.
BATCH = 64
# Above this many ports becoming active at once (a restart with 10k ports),
# their first RAs are spread over a second rather than sent in one burst
# that would hold up DHCP answers.
BURST = 64


class Responder:
    def __init__(
        self,
        *,
        tap_mac: Callable[[str], bytes] = hw_address,
        rcvbuf: int = 8 << 20,
        sink_dhcp_port: bool = True,
        rng: random.Random | None = None,
        socket_factory: Callable[[int], PacketSocket] = PacketSocket,
    ) -> None:
        """tap_mac and socket_factory are there for tests (no root, no taps)."""
        self._tap_mac = tap_mac
        self._socket_factory = socket_factory
        self._rcvbuf = rcvbuf
        self._sink_dhcp_port = sink_dhcp_port
        self._rng = rng or random.Random()
        self._dispatcher = Dispatcher()
        self._inputs: dict[int, tuple[object, ...]] = {}
        self._lock = threading.Lock()  # update() and stats() callers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sock: PacketSocket | None = None
        self._sink: socket.socket | None = None
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._send_errors: dict[str, int] = {}
        self._send_errors_total = 0

    # -- API for the daemon (any thread) --------------------------------------

    def start(self) -> None:
        """Open the socket (raises OSError without CAP_NET_RAW) and start the
        loop thread. Ports given to update() before start() are served from
        the start, with their first RAs."""
        if self._thread is not None:
            raise RuntimeError("responder already started")
        sock = self._socket_factory(self._rcvbuf)
        sink = open_port_sink() if self._sink_dhcp_port else None
        if self._sink_dhcp_port and sink is None:
            log.warning("UDP port 67 is taken: renewing DHCP clients will also get ICMP port unreachable")
        loop = asyncio.new_event_loop()
        with self._lock:
            self._sock, self._sink, self._loop = sock, sink, loop
            loop.call_soon(self._reschedule, {}, self._dispatcher.table)
        self._thread = threading.Thread(target=self._run, name="hvrouter-services", daemon=True)
        self._thread.start()
        log.info("responder started")

    def stop(self, timeout: float = 5.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        with self._lock:
            self._loop = self._thread = None
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            if self._sink is not None:
                self._sink.close()
                self._sink = None
        log.info("responder stopped")

    def update(self, cfg: Config, ports: Sequence[Port], links: Mapping[str, Link]) -> None:
        """Replace the port table (ifindex -> what to serve). Ports whose tap
        is missing or down are left out; new or changed ports get an RA at once."""
        with self._lock:
            old = self._dispatcher.table
            new, self._inputs = build_table(cfg, ports, links, self._tap_mac, old, self._inputs)
            self._dispatcher.table = new  # one reference swap: readers see old or new
            if self._loop is not None:
                # Queued under the lock: the loop sees the changes in order.
                self._loop.call_soon_threadsafe(self._reschedule, old, new)

    def stats(self) -> dict[str, object]:
        """Counters, globally and per port (see dispatch.py for the sums)."""
        with self._lock:
            out = self._dispatcher.stats()
            out["send_errors"] = self._send_errors_total
            ports = out["ports"]
            assert isinstance(ports, dict)
            for name, pc in ports.items():
                pc["send_errors"] = self._send_errors.get(name, 0)
            out["ports_served"] = len(self._dispatcher.table)
            if self._sock is not None:
                packets, drops = self._sock.update_kernel_stats()
                out["kernel"] = {"packets": packets, "drops": drops}
        return out

    @property
    def table(self) -> Mapping[int, PortEntry]:
        return self._dispatcher.table

    # -- the loop thread --------------------------------------------------------

    def _run(self) -> None:
        loop, sock = self._loop, self._sock
        assert loop is not None and sock is not None
        asyncio.set_event_loop(loop)
        loop.add_reader(sock.fileno(), self._on_readable)
        try:
            loop.run_forever()
        finally:
            loop.remove_reader(sock.fileno())
            for handle in self._timers.values():
                handle.cancel()
            self._timers.clear()
            loop.close()

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        handle = self._dispatcher.handle
        for _ in range(BATCH):
            try:
                got = sock.recv()
            except OSError as exc:  # ENETDOWN and the like: the next read is fresh
                log.debug("recv: %s", exc)
                return
            if got is None:
                return
            ifindex, frame = got
            reply = handle(ifindex, frame)
            if reply is not None:
                self._send(ifindex, reply)

    def _send(self, ifindex: int, frame: bytes) -> bool:
        sock = self._sock
        try:
            if sock is None:
                raise OSError("socket closed")
            sock.send(ifindex, frame)
            return True
        except OSError as exc:
            # The tap went away or its VM is not there (a veth or tap with no
            # carrier drops what we send): counted, never fatal.
            entry = self._dispatcher.table.get(ifindex)
            name = entry.name if entry is not None else f"ifindex {ifindex}"
            self._send_errors_total += 1
            self._send_errors[name] = self._send_errors.get(name, 0) + 1
            log.debug("port %s: send failed: %s", name, exc)
            return False

    def _reschedule(self, old: Mapping[int, PortEntry], new: Mapping[int, PortEntry]) -> None:
        """Start, restart or stop the periodic RAs after a table change."""
        for ifindex in [i for i in self._timers if i not in new or new[i].ra is None]:
            self._timers.pop(ifindex).cancel()
        fresh = [
            i for i, e in new.items()
            if e.ra is not None
            and (i not in self._timers or (o := old.get(i)) is None or o.ra != e.ra or o.tap_mac != e.tap_mac)
        ]
        loop = self._loop
        assert loop is not None
        spread = 1.0 if len(fresh) > BURST else 0.0
        for ifindex in fresh:
            if ifindex in self._timers:
                self._timers.pop(ifindex).cancel()
            delay = self._rng.uniform(0, spread)
            self._timers[ifindex] = loop.call_later(delay, self._advertise, ifindex, MAX_INITIAL_ADVERTS)
        keep = {e.name for e in new.values()}
        self._dispatcher.forget_ports(keep)
        for name in [n for n in self._send_errors if n not in keep]:
            del self._send_errors[name]

    def _advertise(self, ifindex: int, initial: int) -> None:
        """Send the periodic RA of a port and schedule the next one."""
        self._timers.pop(ifindex, None)
        entry = self._dispatcher.table.get(ifindex)
        if entry is None or entry.ra is None or self._loop is None:
            return
        if self._send(ifindex, entry.ra.multicast_frame):
            self._dispatcher.count_served(entry.name, "ra.periodic")
        interval = float(entry.ra_interval)
        if initial > 1:
            delay = self._rng.uniform(0.5, 1.0) * min(MAX_INITIAL_INTERVAL, interval)
        else:
            # Jitter keeps 10k ports from advertising in lock step.
            delay = self._rng.uniform(0.75, 1.0) * interval
        self._timers[ifindex] = self._loop.call_later(delay, self._advertise, ifindex, initial - 1)
