"""A ping stream for failure scenarios: one echo request every `interval`
for `duration`, then a JSON summary on stdout (sent, received, lost, the
longest run of consecutive losses, the send time of each loss). Run inside
a namespace: `ip netns exec NS python -m hvrouter.bench.stream DST DURATION
[INTERVAL] [SOURCE]`. A reply arriving up to 1 s after the last request
still counts.
"""

from __future__ import annotations

import ipaddress
import json
import os
import select
import socket
import struct
import sys
import time

from ..services.wire import checksum


def stream(dst: str, duration: float, interval: float, source: str | None) -> dict[str, object]:
    v6 = ipaddress.ip_address(dst).version == 6
    if v6:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        request, reply = 128, 129
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        request, reply = 8, 0
    if source:
        sock.bind((source, 0))
    ident = os.getpid() & 0xFFFF
    start = time.monotonic()
    sent_at: dict[int, float] = {}
    got: set[int] = set()
    seq = 0
    next_send = start
    end_send = start + duration
    while True:
        now = time.monotonic()
        if now >= end_send + 1.0:
            break
        if now >= next_send and now < end_send:
            seq += 1
            payload = struct.pack("!d", now)
            header = struct.pack("!BBHHH", request, 0, 0, ident, seq & 0xFFFF)
            if not v6:
                header = struct.pack("!BBHHH", request, 0, checksum(header + payload), ident, seq & 0xFFFF)
            try:
                sock.sendto(header + payload, (dst, 0))
            except OSError:
                pass  # no route: counted as lost
            sent_at[seq] = now - start
            next_send += interval
        wait = max(0.0, min(next_send if now < end_send else end_send + 1.0, end_send + 1.0) - time.monotonic())
        ready, _, _ = select.select([sock], [], [], wait)
        if ready:
            data = sock.recv(2048)
            icmp = data if v6 else data[(data[0] & 0x0F) * 4 :]
            if len(icmp) >= 8:
                kind, _c, _s, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
                if kind == reply and rid == ident:
                    got.add(rseq)
    lost = [s for s in sent_at if (s & 0xFFFF) not in got]
    longest = run = 0
    for s in range(1, seq + 1):
        run = run + 1 if s in lost else 0
        longest = max(longest, run)
    return {
        "dst": dst,
        "sent": seq,
        "received": seq - len(lost),
        "lost": len(lost),
        "interval_ms": interval * 1000,
        "loss_ms": round(len(lost) * interval * 1000, 1),
        "gap_ms": round(longest * interval * 1000, 1),
        "lost_at_s": [round(sent_at[s], 2) for s in lost[:50]],
    }


def main() -> int:
    dst, duration = sys.argv[1], float(sys.argv[2])
    interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.01
    source = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else None
    print(json.dumps(stream(dst, duration, interval, source)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
