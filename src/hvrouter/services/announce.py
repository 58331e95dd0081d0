"""Gratuitous ARP and unsolicited neighbour advertisements into a tap.

When a port becomes active (its tap appears, or the VM was just moved here)
the VM may hold a stale neighbour entry for its gateway (another
hypervisor's tap MAC after a migration). Seed 003 sends `arpsend -U` and
`ndsend` for that; we send the equivalent frames ourselves on an AF_PACKET
socket bound to the tap: an ARP announcement of the IPv4 gateway and an
unsolicited, overriding, router-flagged NA for fe80::1, both from the tap's
MAC.
"""

from __future__ import annotations

import fcntl
import socket
import struct

from .wire import ALL_NODES, ALL_NODES_MAC, BROADCAST_MAC, icmp6_frame

ETH_P_ARP = 0x0806
SIOCGIFHWADDR = 0x8927


def hw_address(ifname: str) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        info = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, struct.pack("256s", ifname.encode()[:15]))
    return info[18:24]


def garp_frame(mac: bytes, ip: str) -> bytes:
    """ARP request announcing ip at mac (sender IP = target IP), broadcast."""
    addr = socket.inet_aton(ip)
    eth = BROADCAST_MAC + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + addr + b"\x00" * 6 + addr
    return eth + arp


def unsolicited_na_frame(mac: bytes, ip6: str) -> bytes:
    """NA for ip6 to all-nodes: router, override, target link-layer address."""
    src = socket.inet_pton(socket.AF_INET6, ip6)
    flags = 0xA0000000  # R and O; S must be 0 in an unsolicited advertisement
    body = struct.pack("!BBHI", 136, 0, 0, flags) + src + struct.pack("!BB", 2, 1) + mac
    return icmp6_frame(mac, ALL_NODES_MAC, src, ALL_NODES, body)


def announce(ifname: str, gateway4: str | None, gateway6: str | None) -> int:
    """Send the announcements into one tap; returns the number of frames."""
    mac = hw_address(ifname)
    frames = []
    if gateway4:
        frames.append(garp_frame(mac, gateway4))
    if gateway6:
        frames.append(unsolicited_na_frame(mac, gateway6))
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((ifname, 0))
        for frame in frames:
            s.send(frame)
    return len(frames)
