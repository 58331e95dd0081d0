"""Runs inside the benchmark namespace: makes misses on a VXLAN device and
times when the answering entries appear (RTM_NEWNEIGH on the neighbour group).

    python -m hvrouter.bench.misswork DEVICE DATAFILE LATENCY_SAMPLES BURST_CAP_S [UNKNOWN]

DATAFILE lines: `mac ip vtep`. Prints one JSON object.
* latency: for the first LATENCY_SAMPLES MACs, one frame each (an L2 miss),
  waiting for its FDB entry before the next: miss-to-entry latency;
* burst: an ARP request for every IP at once (L3 misses), then the time
  until every neighbour entry is there (or BURST_CAP_S): sustained rate;
* UNKNOWN > 0 (storm test): that many frames to unknown MACs first, as fast
  as possible, interleaved with the latency probes.
"""

from __future__ import annotations

import json
import select
import socket
import statistics
import struct
import sys
import time

from ..kernel.vxlan import MissListener
from ..overlay.types import Miss

SRC = bytes.fromhex("525400aa0001")
SENDER_IP = socket.inet_aton("198.19.127.1")


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def l2_frame(mac: str) -> bytes:
    return _mac(mac) + SRC + b"\x08\x00" + bytes(46)


def arp_request(ip: str) -> bytes:
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + SRC + SENDER_IP + bytes(6) + socket.inet_aton(ip)
    return b"\xff" * 6 + SRC + b"\x08\x06" + arp + bytes(18)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Watcher:
    def __init__(self, ifindex: int) -> None:
        self.listener = MissListener()
        self.ifindex = ifindex
        self.seen: dict[tuple[str, str], float] = {}
        self._misses: list[Miss] = []
        self._updates: list[tuple[int, str, str]] = []

    def poll(self, timeout: float) -> None:
        r, _, _ = select.select([self.listener.fileno()], [], [], timeout)
        if not r:
            return
        self.listener.read(self._misses, self._updates)
        now = time.perf_counter()
        for ifindex, kind, key in self._updates:
            if ifindex == self.ifindex:
                self.seen.setdefault((kind, key), now)
        self._updates.clear()
        self._misses.clear()


def main() -> int:
    dev, datafile, samples, cap = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    unknown = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    rows = [line.split() for line in open(datafile) if line.strip()]
    ifindex = socket.if_nametoindex(dev)
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    tx.bind((dev, 0))
    w = Watcher(ifindex)
    out: dict[str, object] = {}

    # storm: unknown MACs (never in the registry), interleaved with real probes
    storm_sent = 0
    storm_t0 = time.perf_counter()
    probe_every = max(1, unknown // max(1, samples)) if unknown else 0

    latencies: list[float] = []
    lost = 0
    for mac, _ip, _vtep in rows[:samples]:
        if unknown:
            for _ in range(probe_every):
                if storm_sent >= unknown:
                    break
                n = storm_sent
                try:
                    tx.send(l2_frame(f"52:54:02:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}"))
                except BlockingIOError:
                    pass
                storm_sent += 1
        t0 = time.perf_counter()
        tx.send(l2_frame(mac))
        deadline = t0 + 1.0
        while ("fdb", mac) not in w.seen and time.perf_counter() < deadline:
            w.poll(deadline - time.perf_counter())
        t = w.seen.get(("fdb", mac))
        if t is None:
            lost += 1
        else:
            latencies.append((t - t0) * 1000)
    out["latency_samples"] = len(latencies)
    out["latency_lost"] = lost
    if latencies:
        out["p50_ms"] = round(statistics.median(latencies), 3)
        out["p99_ms"] = round(percentile(latencies, 0.99), 3)
        out["max_ms"] = round(max(latencies), 3)
    if unknown:
        out["storm_sent"] = storm_sent
        out["storm_s"] = round(time.perf_counter() - storm_t0, 3)
        return _dump(out)

    # burst: every IP at once (L3 misses), then wait for the neighbour entries
    t0 = time.perf_counter()
    for _m, ip, _v in rows:
        while True:
            try:
                tx.send(arp_request(ip))
                break
            except BlockingIOError:
                w.poll(0)
        w.poll(0)
    sent_s = time.perf_counter() - t0
    want = {("neigh", ip) for _m, ip, _v in rows}
    deadline = t0 + cap
    while time.perf_counter() < deadline:
        w.poll(min(0.05, max(0.0, deadline - time.perf_counter())))
        if want <= w.seen.keys():
            break
    times = [w.seen[k] for k in want if k in w.seen]
    out["burst"] = len(rows)
    out["burst_send_s"] = round(sent_s, 3)
    out["resolved"] = len(times)
    elapsed = (max(times) - t0) if len(times) == len(rows) else cap
    out["elapsed_s"] = round(elapsed, 3)
    out["per_s"] = round(len(times) / elapsed, 1) if elapsed > 0 else 0.0
    return _dump(out)


def _dump(out: dict[str, object]) -> int:
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
