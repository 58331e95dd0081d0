"""From (receiving ifindex, frame) to the reply frame, with the counters.

No I/O here: the Responder feeds frames from its socket, the tests and the
fuzzers feed them directly. Every frame gets exactly one outcome:

    received = answered + no_reply + ignored_unknown_interface
               + ignored_foreign_mac + malformed + errors

and every frame sent (answers and periodic RAs) is counted in `served` by
message type. Nothing a frame contains can raise out of handle(): an
unexpected exception is an `errors` count and a rate-limited log line with
the traceback, and the next frame is served as if nothing happened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from .dhcp4 import handle_dhcp4
from .dhcp6 import handle_dhcp6
from .ra import handle_rs
from .table import PortEntry
from .wire import ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMPV6, IPPROTO_UDP, ForeignMac, Malformed, Reply

log = logging.getLogger("hvrouter.services")

OUTCOMES = ("answered", "no_reply", "ignored_unknown_interface", "ignored_foreign_mac", "malformed", "errors")
Handler = Callable[[PortEntry, bytes], Reply]


def classify(frame: bytes) -> Handler:
    """Which protocol a frame is for, from the same fields the BPF filter
    looks at."""
    if len(frame) < 14 + 20:
        raise Malformed("runt frame")
    etype = int.from_bytes(frame[12:14], "big")
    if etype == ETH_P_IP:
        return handle_dhcp4
    if etype == ETH_P_IPV6 and len(frame) >= 54:
        nxt = frame[20]
        if nxt == IPPROTO_ICMPV6:
            return handle_rs
        if nxt == IPPROTO_UDP:
            return handle_dhcp6
    raise Malformed("not DHCPv4, router solicitation or DHCPv6")


class Counters:
    """Outcome counts, served replies by type, requests left unanswered by type."""

    __slots__ = ("outcomes", "served", "unanswered")

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.served: dict[str, int] = {}
        self.unanswered: dict[str, int] = {}

    def snapshot(self) -> dict[str, object]:
        # dict() of a dict is one C call: consistent under the GIL even while
        # the responder thread keeps counting.
        return {**dict(self.outcomes), "served": dict(self.served), "unanswered": dict(self.unanswered)}


class Dispatcher:
    def __init__(self, log_interval: float = 10.0) -> None:
        # Replaced whole (never mutated) by Responder.update(): a reader
        # always sees one consistent table.
        self.table: Mapping[int, PortEntry] = {}
        self.total = Counters()
        self.ports: dict[str, Counters] = {}
        self.received = 0
        self._log_interval = log_interval
        self._last_log = -log_interval
        self._suppressed = 0

    def port_counters(self, name: str) -> Counters:
        c = self.ports.get(name)
        if c is None:
            c = self.ports[name] = Counters()
        return c

    def _count(self, port: Counters | None, outcome: str) -> None:
        self.total.outcomes[outcome] += 1
        if port is not None:
            port.outcomes[outcome] += 1

    def count_served(self, name: str, kind: str) -> None:
        for c in (self.total, self.port_counters(name)):
            c.served[kind] = c.served.get(kind, 0) + 1

    def handle(self, ifindex: int, frame: bytes) -> bytes | None:
        """One received frame -> the frame to send back into the same tap."""
        self.received += 1
        entry = self.table.get(ifindex)
        if entry is None:
            self._count(None, "ignored_unknown_interface")
            return None
        pc = self.port_counters(entry.name)
        try:
            reply = classify(frame)(entry, frame)
        except Malformed:
            self._count(pc, "malformed")
            return None
        except ForeignMac:
            self._count(pc, "ignored_foreign_mac")
            return None
        except Exception:  # the guard: count, log (rate-limited), drop, go on
            self._count(pc, "errors")
            self._log_error(entry.name)
            return None
        if reply.frame is None:
            self._count(pc, "no_reply")
            for c in (self.total, pc):
                c.unanswered[reply.kind] = c.unanswered.get(reply.kind, 0) + 1
            return None
        self._count(pc, "answered")
        for c in (self.total, pc):
            c.served[reply.kind] = c.served.get(reply.kind, 0) + 1
        return reply.frame

    def _log_error(self, port: str) -> None:
        now = time.monotonic()
        if now - self._last_log < self._log_interval:
            self._suppressed += 1
            return
        self._last_log = now
        more = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        self._suppressed = 0
        log.exception("port %s: error handling a frame, dropped%s", port, more)

    def forget_ports(self, keep: set[str]) -> None:
        """Drop the counters of ports that are gone (their totals stay)."""
        for name in [n for n in self.ports if n not in keep]:
            del self.ports[name]

    def stats(self) -> dict[str, object]:
        total = self.total.snapshot()
        total["received"] = self.received
        return {**total, "ports": {name: c.snapshot() for name, c in list(self.ports.items())}}
