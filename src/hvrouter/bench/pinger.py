"""A pinger for benchmarks: echo requests every `interval` until the first
echo reply, ignoring ICMP errors (iputils ping exits on the first one, and
while a route is converging there are some). Prints the CLOCK_MONOTONIC time
of the first reply, which the caller (another process, same clock) compares
with its own. Run inside a namespace with `ip netns exec NS python -m ...`.

usage: python -m hvrouter.bench.pinger ADDRESS [TIMEOUT_S] [INTERVAL_S]
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
import sys
import time

from ..services.wire import checksum


def first_reply(dst: str, timeout: float, interval: float) -> float | None:
    v6 = ipaddress.ip_address(dst).version == 6
    if v6:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        request, reply = 128, 129
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        request, reply = 8, 0
    ident = os.getpid() & 0xFFFF
    deadline = time.monotonic() + timeout
    seq = 0
    next_send = 0.0
    while (now := time.monotonic()) < deadline:
        if now >= next_send:
            seq = (seq + 1) & 0xFFFF
            header = struct.pack("!BBHHH", request, 0, 0, ident, seq)
            payload = b"hvrouter-bench"
            if not v6:  # the kernel fills in the ICMPv6 checksum, not the ICMP one
                header = struct.pack("!BBHHH", request, 0, checksum(header + payload), ident, seq)
            try:
                sock.sendto(header + payload, (dst, 0))
            except OSError:
                pass  # no route yet: keep trying
            next_send = now + interval
        ready, _, _ = select.select([sock], [], [], max(0.0, min(next_send, deadline) - time.monotonic()))
        if not ready:
            continue
        data = sock.recv(2048)
        icmp = data if v6 else data[(data[0] & 0x0F) * 4 :]
        if len(icmp) >= 8:
            kind, _code, _sum, rid, _rseq = struct.unpack("!BBHHH", icmp[:8])
            if kind == reply and rid == ident:
                return time.monotonic()
    return None


def main() -> int:
    dst = sys.argv[1]
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.01
    got = first_reply(dst, timeout, interval)
    print(f"{got:.6f}" if got is not None else "timeout", flush=True)
    return 0 if got is not None else 1


if __name__ == "__main__":
    sys.exit(main())
