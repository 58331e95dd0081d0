"""A swarm of DHCPv4 clients for the boot-storm benchmark.

One AF_PACKET socket in the clients' namespace serves every client: client i
sends from interface `v{i}` with that interface's MAC. All DISCOVERs go out
within `window` seconds; each OFFER is answered with a REQUEST; like real
clients, a DISCOVER or REQUEST left unanswered is sent again after
RETRY seconds. The run ends when every client holds an ACK or at `timeout`.
Latency is counted from a client's first DISCOVER. Prints a JSON summary.

usage: python -m hvrouter.bench.dhcpclients N [WINDOW_S] [TIMEOUT_S]
"""

from __future__ import annotations

import json
import os
import select
import socket
import statistics
import struct
import sys
import time

from ..services.wire import checksum

ETH_P_IP = 0x0800
MAGIC = b"\x63\x82\x53\x63"
DISCOVER, OFFER, REQUEST, ACK, NAK = 1, 2, 3, 5, 6
RETRY = 2.0


def frame(mac: bytes, xid: int, kind: int, requested: bytes = b"", server: bytes = b"") -> bytes:
    opts = bytes([53, 1, kind])
    if requested:
        opts += bytes([50, 4]) + requested
    if server:
        opts += bytes([54, 4]) + server
    opts += bytes([55, 4, 1, 3, 6, 15, 255])
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0, b"\0" * 4, b"\0" * 4, b"\0" * 4,
                        b"\0" * 4, mac + b"\0" * 10, b"", b"") + MAGIC + opts
    udp = struct.pack("!HHHH", 68, 67, 8 + len(bootp), 0) + bootp
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, b"\0" * 4, b"\xff" * 4)
    iph = iph[:10] + struct.pack("!H", checksum(iph)) + iph[12:]
    return b"\xff" * 6 + mac + struct.pack("!H", ETH_P_IP) + iph + udp


def parse(data: bytes) -> tuple[int, int, bytes, bytes] | None:
    """-> (xid, message type, yiaddr, server id) of a DHCP reply, else None."""
    if len(data) < 14 + 20 + 8 + 240 or data[12:14] != b"\x08\x00" or data[23] != 17:
        return None
    ihl = (data[14] & 0x0F) * 4
    udp = 14 + ihl
    if struct.unpack_from("!H", data, udp + 2)[0] != 68:
        return None
    b = udp + 8
    if data[b] != 2 or data[b + 236 : b + 240] != MAGIC:
        return None
    xid = struct.unpack_from("!I", data, b + 4)[0]
    yiaddr = data[b + 16 : b + 20]
    kind, server = 0, b""
    i = b + 240
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        code, length = data[i], data[i + 1]
        if code == 53:
            kind = data[i + 2]
        elif code == 54:
            server = data[i + 2 : i + 2 + length]
        i += 2 + length
    return xid, kind, yiaddr, server


def run(n: int, window: float, timeout: float) -> dict[str, object]:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    macs = []
    for i in range(n):
        with open(f"/sys/class/net/v{i}/address") as f:
            macs.append(bytes.fromhex(f.read().strip().replace(":", "")))
    base = (os.getpid() & 0xFFFF) << 16
    sent_at: dict[int, float] = {}
    offer_ms: dict[int, float] = {}
    acked: dict[int, float] = {}
    naks = 0
    retries = 0
    pending: dict[int, tuple[float, bytes]] = {}  # client -> (resend at, frame)
    start = time.monotonic()
    next_i = 0
    deadline = start + timeout
    while len(acked) < n and time.monotonic() < deadline:
        now = time.monotonic()
        # Spread the DISCOVERs evenly over the window.
        due = n if window <= 0 else min(n, int((now - start) / window * n) + 1)
        while next_i < due:
            f = frame(macs[next_i], base + next_i, DISCOVER)
            sock.sendto(f, (f"v{next_i}", 0))
            sent_at[next_i] = time.monotonic()
            pending[next_i] = (sent_at[next_i] + RETRY, f)
            next_i += 1
        for i, (when, f) in list(pending.items()):
            if now >= when:
                sock.sendto(f, (f"v{i}", 0))
                pending[i] = (now + RETRY, f)
                retries += 1
        wait = 0.001 if next_i < n else 0.05
        ready, _, _ = select.select([sock], [], [], wait)
        if not ready:
            continue
        while True:
            try:
                data = sock.recv(2048, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            got = parse(data)
            if got is None:
                continue
            xid, kind, yiaddr, server = got
            i = xid - base
            if not 0 <= i < n:
                continue
            t = time.monotonic()
            if kind == OFFER and i not in offer_ms:
                offer_ms[i] = (t - sent_at[i]) * 1000
                f = frame(macs[i], xid, REQUEST, yiaddr, server)
                sock.sendto(f, (f"v{i}", 0))
                pending[i] = (t + RETRY, f)
            elif kind == ACK and i not in acked:
                acked[i] = t
                pending.pop(i, None)
            elif kind == NAK:
                naks += 1
    lat = sorted(offer_ms.values())
    return {
        "clients": n,
        "bound": len(acked),
        "naks": naks,
        "offered": len(offer_ms),
        "retransmissions": retries,
        "all_bound_s": round(max(acked.values()) - start, 3) if len(acked) == n else None,
        "discover_window_s": round(max(sent_at.values()) - start, 3) if sent_at else None,
        "offer_p50_ms": round(statistics.median(lat), 2) if lat else None,
        "offer_p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 2) if lat else None,
        "offer_max_ms": round(lat[-1], 2) if lat else None,
    }


def main() -> int:
    n = int(sys.argv[1])
    window = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 20.0
    print(json.dumps(run(n, window, timeout)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
