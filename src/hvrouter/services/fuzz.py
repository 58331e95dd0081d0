"""Fuzzing material: valid client frames per protocol and a fast seeded
mutator. Used by tests/unit/test_services_fuzz.py (frames fed to the
dispatcher) and, from a VM namespace, against a live responder:

    python -m hvrouter.services.fuzz --interface eth0 --mac 52:54:00:00:00:01 \\
        --ipv4 203.0.113.4 --gateway 203.0.113.254 --count 100000 [--seed N]

sends --count mutated frames per protocol out of the interface.
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass

from . import client, dhcp4, dhcp6
from .table import SERVER_DUID
from .wire import icmp6_frame, mac_bytes, udp4_frame, udp6_frame


def dhcp4_corpus(mac: bytes, addr: bytes, gw: bytes) -> list[bytes]:
    return [
        client.dhcp4_frame(mac, dhcp4.DISCOVER),
        client.dhcp4_frame(mac, dhcp4.DISCOVER, broadcast=False, hostname=b"vm", options=b"\x3d\x07\x01" + mac),
        client.dhcp4_frame(mac, dhcp4.REQUEST, requested=addr, server_id=gw),
        client.dhcp4_frame(mac, dhcp4.REQUEST, ciaddr=addr, broadcast=False, src_ip=addr, dst_ip=gw),
        client.dhcp4_frame(mac, dhcp4.INFORM, ciaddr=addr, src_ip=addr),
        client.dhcp4_frame(mac, dhcp4.RELEASE, ciaddr=addr, server_id=gw),
        client.dhcp4_frame(mac, dhcp4.DECLINE, requested=addr, server_id=gw),
    ]


def rs_corpus(mac: bytes) -> list[bytes]:
    # With a nonce option (RFC 3971) and an unknown one after the SLLAO too.
    msg = struct.pack("!BBHI", 133, 0, 0, 0) + b"\x01\x01" + mac + b"\x0e\x01" + b"\x11" * 6 + b"\xfe\x02" + b"\0" * 14
    return [
        client.rs_frame(mac),
        client.rs_frame(mac, src_ip=client.UNSPECIFIED),
        icmp6_frame(mac, b"\x33\x33\x00\x00\x00\x02", client.link_local(mac), client.ALL_ROUTERS, msg),
    ]


def dhcp6_corpus(mac: bytes, addr6: bytes) -> list[bytes]:
    cid = client.client_duid(mac)
    ia = client.ia_na(addresses=(addr6,))
    out = [
        client.dhcp6_frame(mac, dhcp6.INFORMATION_REQUEST, client_id=cid, options=dhcp6.option(6, b"\x00\x17\x00\x18")),
        client.dhcp6_frame(mac, dhcp6.SOLICIT, client_id=cid, options=client.ia_na()),
        client.dhcp6_frame(mac, dhcp6.SOLICIT, client_id=cid, options=ia + dhcp6.option(dhcp6.OPT_RAPID_COMMIT, b"")),
        client.dhcp6_frame(mac, dhcp6.REBIND, client_id=cid, options=ia),
        client.dhcp6_frame(mac, dhcp6.CONFIRM, client_id=cid, options=ia),
    ]
    for mtype in (dhcp6.REQUEST, dhcp6.RENEW, dhcp6.RELEASE, dhcp6.DECLINE):
        out.append(client.dhcp6_frame(mac, mtype, client_id=cid, server_id=SERVER_DUID, options=ia))
    return out


def rewrap4(frame: bytes, payload: bytes) -> bytes:
    return udp4_frame(frame[6:12], frame[0:6], frame[26:30], frame[30:34], 68, 67, payload)


def rewrap_rs(frame: bytes, msg: bytes) -> bytes:
    return icmp6_frame(frame[6:12], frame[0:6], frame[22:38], frame[38:54], msg[:2] + b"\x00\x00" + msg[4:])


def rewrap6(frame: bytes, payload: bytes) -> bytes:
    return udp6_frame(frame[6:12], frame[0:6], frame[22:38], frame[38:54], 546, 547, payload)


@dataclass(frozen=True)
class Protocol:
    name: str
    l4: int  # where the payload starts (what rewrap takes)
    rewrap: Callable[[bytes, bytes], bytes]


PROTOCOLS = {p.name: p for p in (Protocol("dhcp4", 42, rewrap4), Protocol("rs", 54, rewrap_rs), Protocol("dhcp6", 62, rewrap6))}


def mutate(rng: random.Random, data: bytes) -> bytes:
    """1-3 of: bit flips, interesting byte values, truncation, appended
    junk, insertion, deletion, a 16-bit field pushed to an extreme."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        if op == 0 and b:
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:
            del b[rng.randrange(len(b) + 1) :]
        elif op == 3:
            b += rng.randbytes(rng.randint(1, 64))
        elif op == 4:
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 5 and b:
            i = rng.randrange(len(b))
            del b[i : i + rng.randint(1, 16)]
        elif op == 6 and len(b) >= 2:
            i = rng.randrange(len(b) - 1)
            b[i : i + 2] = rng.choice((b"\xff\xff", b"\x00\x00", b"\x00\xff", b"\xff\x00"))
    return bytes(b)


def fuzz_frame(rng: random.Random, corpus: list[bytes], proto: Protocol, foreign_mac: bytes | None = None) -> bytes:
    """One fuzzed frame: the payload mutated and re-wrapped in valid headers
    (so it gets past the checksums to the DHCP/ND parsers), the whole frame
    mutated, or random bytes; now and then from a foreign MAC."""
    base = rng.choice(corpus)
    r = rng.random()
    if r < 0.45:
        frame = proto.rewrap(base, mutate(rng, base[proto.l4 :]))
    elif r < 0.9:
        frame = mutate(rng, base)
    elif r < 0.95:
        frame = base[:14] + rng.randbytes(rng.randrange(600))
    else:
        frame = rng.randbytes(rng.randrange(80))
    if foreign_mac is not None and rng.random() < 0.03:
        frame = frame[:6] + foreign_mac + frame[12:]
    return frame


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hvrouter.services.fuzz")
    ap.add_argument("--interface", required=True)
    ap.add_argument("--mac", required=True)
    ap.add_argument("--ipv4", default="203.0.113.4")
    ap.add_argument("--gateway", default="203.0.113.254")
    ap.add_argument("--ipv6", default="2001:db8::5")
    ap.add_argument("--count", type=int, default=100_000, help="frames per protocol")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    mac = mac_bytes(args.mac)
    corpora = {
        "dhcp4": dhcp4_corpus(mac, socket.inet_aton(args.ipv4), socket.inet_aton(args.gateway)),
        "rs": rs_corpus(mac),
        "dhcp6": dhcp6_corpus(mac, socket.inet_pton(socket.AF_INET6, args.ipv6)),
    }
    rng = random.Random(args.seed)
    sent = 0
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((args.interface, 0))
        for name, proto in PROTOCOLS.items():
            for _ in range(args.count):
                frame = fuzz_frame(rng, corpora[name], proto)
                if len(frame) < 14:
                    frame += b"\0" * (14 - len(frame))  # the kernel refuses shorter
                try:
                    s.send(frame)
                    sent += 1
                except OSError:
                    pass  # e.g. EINVAL for a frame the device refuses
    print(f"sent {sent}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
