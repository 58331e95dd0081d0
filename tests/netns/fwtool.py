"""Small network tools the firewall tests run inside a namespace
(`ip netns exec NS python fwtool.py ...`). Standard library only.

    listen --tcp 179 2222 --udp 3784 5001   accept/receive on both families,
                                            print "ready", then one line per
                                            connection or datagram:
                                            "tcp|udp PORT SOURCE"
    tcp HOST,PORT ... [--timeout S]          connect to all at once, print JSON
                                            {"HOST,PORT": true/false}
    udp HOST PORT [--src A] [--sport N] [--device DEV] [--broadcast] [--count N]
    arp DEVICE --op request|reply --sha MAC --sip A --tip A [--tha MAC]
        [--src MAC] [--dst MAC] [--count N]   one raw ARP frame (AF_PACKET):
                                            Ethernet source --src (default
                                            --sha), destination --dst
                                            (default broadcast)
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import threading


def listen(tcp: list[int], udp: list[int]) -> None:
    sel = selectors.DefaultSelector()
    for port in tcp + udp:
        kind = socket.SOCK_STREAM if port in tcp else socket.SOCK_DGRAM
        for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            s = socket.socket(family, kind)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, port))
            if kind == socket.SOCK_STREAM:
                s.listen(16)
            sel.register(s, selectors.EVENT_READ, ("tcp" if kind == socket.SOCK_STREAM else "udp", port))
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            proto, port = key.data
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if proto == "tcp":
                conn, peer = sock.accept()
                conn.close()
            else:
                _, peer = sock.recvfrom(2048)
            print(f"{proto} {port} {peer[0]}", flush=True)


def tcp(targets: list[str], timeout: float) -> None:
    result: dict[str, bool] = {}

    def one(target: str) -> None:
        host, port = target.rsplit(",", 1)
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
            result[target] = True
        except OSError:
            result[target] = False

    threads = [threading.Thread(target=one, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(result))


def _sockaddr(family: int, host: str, port: int) -> tuple[object, ...]:
    # getaddrinfo understands link-local scopes: fe80::1%eth0.
    return socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)[0][4]


def udp(host: str, port: int, src: str, sport: int, device: str, broadcast: bool, count: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    if device:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
    if broadcast:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    if src or sport:
        s.bind(_sockaddr(family, src or ("::" if family == socket.AF_INET6 else "0.0.0.0"), sport))
    for _ in range(count):
        s.sendto(b"hvfw", _sockaddr(family, host, port))


def arp(device: str, op: str, sha: str, sip: str, tip: str, tha: str, src: str, dst: str, count: int) -> None:
    def mac(text: str) -> bytes:
        return bytes.fromhex(text.replace(":", ""))

    eth = mac(dst) + mac(src or sha) + (0x0806).to_bytes(2, "big")
    # Ethernet, IPv4, lengths 6 and 4, then the opcode (1 request, 2 reply).
    body = bytes.fromhex("000108000604") + (1 if op == "request" else 2).to_bytes(2, "big")
    body += mac(sha) + socket.inet_aton(sip) + mac(tha) + socket.inet_aton(tip)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((device, 0))
        for _ in range(count):
            s.send(eth + body)


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    li = sub.add_parser("listen")
    li.add_argument("--tcp", type=int, nargs="*", default=[])
    li.add_argument("--udp", type=int, nargs="*", default=[])
    tc = sub.add_parser("tcp")
    tc.add_argument("targets", nargs="+")
    tc.add_argument("--timeout", type=float, default=1.0)
    ud = sub.add_parser("udp")
    ud.add_argument("host")
    ud.add_argument("port", type=int)
    ud.add_argument("--src", default="")
    ud.add_argument("--sport", type=int, default=0)
    ud.add_argument("--device", default="")
    ud.add_argument("--broadcast", action="store_true")
    ud.add_argument("--count", type=int, default=1)
    ar = sub.add_parser("arp")
    ar.add_argument("device")
    ar.add_argument("--op", choices=("request", "reply"), required=True)
    ar.add_argument("--sha", required=True)
    ar.add_argument("--sip", required=True)
    ar.add_argument("--tip", required=True)
    ar.add_argument("--tha", default="00:00:00:00:00:00")
    ar.add_argument("--src", default="")
    ar.add_argument("--dst", default="ff:ff:ff:ff:ff:ff")
    ar.add_argument("--count", type=int, default=1)
    a = p.parse_args()
    if a.cmd == "listen":
        listen(a.tcp, a.udp)
    elif a.cmd == "tcp":
        tcp(a.targets, a.timeout)
    elif a.cmd == "arp":
        arp(a.device, a.op, a.sha, a.sip, a.tip, a.tha, a.src, a.dst, a.count)
    else:
        udp(a.host, a.port, a.src, a.sport, a.device, a.broadcast, a.count)


if __name__ == "__main__":
    main()
