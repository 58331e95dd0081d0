"""What to serve on each tap, from the config and the ports (the same desired
state the planner routes): tap ifindex -> PortEntry.

Everything that does not depend on the request is encoded here, once per
port and not per packet: DHCPv4 option blocks, the router advertisement,
the DHCPv6 information options. An update reuses the entries of ports that
did not change, so a pass at 10k ports costs a dict walk, not 10k encodings.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from ..config import Config, NetworkConfig
from ..model import Link, Port
from .wire import ALL_NODES, ALL_NODES_MAC, dns_names, icmp6_frame, mac_bytes

log = logging.getLogger("hvrouter.services")

# Lifetimes of the prefixes in router advertisements (RFC 4861 6.2.1
# defaults): the prefix of a port never changes while the port exists.
PREFIX_VALID = 2_592_000
PREFIX_PREFERRED = 604_800
# The server DUID is the same on every hypervisor: a VM that migrates keeps
# renewing its DHCPv6 lease with the server id it learnt before, and a
# per-tap DUID (tap MACs differ between hypervisors) would make the new
# hypervisor discard those Renews until the client falls back to Rebind.
# DUID-LLT (RFC 8415 11.2), hardware type 1, time 0, and a fixed locally
# administered link-layer address ("hvrtr").
SERVER_DUID = struct.pack("!HHI", 1, 1, 0) + bytes.fromhex("026876727472")


@dataclass(frozen=True, slots=True)
class Dhcp4Binding:
    address: bytes  # the port's first IPv4 address (yiaddr)
    server_id: bytes  # the gateway: server identifier and source address
    lease_options: bytes  # OFFER/ACK options after the message type, without END
    inform_options: bytes  # the same without lease times (RFC 2131 3.4)


@dataclass(frozen=True, slots=True)
class RouterAdvert:
    source: bytes  # the gateway, fe80::1 by default
    message: bytes  # ICMPv6 RA with a zero checksum (checksummed per destination)
    multicast_frame: bytes  # the periodic one, to ff02::1, ready to send


@dataclass(frozen=True, slots=True)
class Dhcp6Binding:
    source: bytes  # the gateway, fe80::1 by default
    info_options: bytes  # DNS servers (23) and domain list (24), encoded
    stateful: bool  # IA_NA served (shared-prefix networks)
    addresses: tuple[bytes, ...]  # the port's /128s, for IA_NA
    on_link: tuple[tuple[bytes, int], ...]  # (prefix, length): what Confirm accepts
    lease_time: int


@dataclass(frozen=True, slots=True)
class PortEntry:
    name: str
    ifindex: int
    mac: bytes  # the VM's MAC: requests from any other are ignored
    tap_mac: bytes  # our source MAC, the one the VM resolves the gateway to
    dhcp4: Dhcp4Binding | None
    ra: RouterAdvert | None
    dhcp6: Dhcp6Binding | None
    ra_interval: int  # max seconds between periodic RAs


def dhcp4_option(code: int, value: bytes) -> bytes:
    """One option; values over 255 bytes become consecutive instances of the
    same code, which the client concatenates (RFC 3396)."""
    if not value:
        return bytes((code, 0))
    return b"".join(bytes((code, len(chunk))) + chunk for chunk in (value[i : i + 255] for i in range(0, len(value), 255)))


def search_list(net: NetworkConfig) -> tuple[str, ...]:
    """Search domains: services.search, else the domain alone."""
    svc = net.services
    if svc.search:
        return svc.search
    return (svc.domain,) if svc.domain else ()


@dataclass(frozen=True, slots=True)
class NetServices:
    """What every port of a network shares, encoded once per network."""

    dhcp4: tuple[bytes, bytes, bytes] | None  # (server id, lease options, inform options)
    gw6: bytes
    ra_head: bytes  # RA header (flags, lifetimes), zero checksum
    ra_tail: bytes  # MTU, RDNSS, DNSSL options
    shared_pio: tuple[bytes, bytes] | None  # shared-prefix: (PIO with A=1, PIO with A=0)
    dhcp6_info: bytes | None  # None: DHCPv6 off


def _pio(network: bytes, plen: int, flags: int) -> bytes:
    return struct.pack("!BBBBIII", 3, 4, plen, flags, PREFIX_VALID, PREFIX_PREFERRED, 0) + network


def net_services(net: NetworkConfig) -> NetServices:
    svc = net.services
    dhcp4 = None
    if net.ipv4 is not None:
        gw = net.ipv4.gateway.packed
        lease = svc.lease_time
        common = dhcp4_option(1, net.ipv4.subnet.netmask.packed) + dhcp4_option(3, gw)
        dns4 = b"".join(a.packed for a in svc.dns if isinstance(a, IPv4Address))
        if dns4:
            common += dhcp4_option(6, dns4)
        if svc.domain:
            common += dhcp4_option(15, svc.domain.encode("ascii"))
        if svc.search:
            common += dhcp4_option(119, dns_names(svc.search))
        if svc.mtu is not None:
            common += dhcp4_option(26, struct.pack("!H", min(svc.mtu, 0xFFFF)))
        sid = dhcp4_option(54, gw)
        times = (
            dhcp4_option(51, struct.pack("!I", lease))
            + dhcp4_option(58, struct.pack("!I", lease // 2))
            + dhcp4_option(59, struct.pack("!I", lease * 7 // 8))
        )
        dhcp4 = (gw, sid + times + common, sid + common)
    gw6 = net.ipv6.gateway.packed if net.ipv6 is not None else b""
    shared = net.ipv6 is not None and net.ipv6.mode == "shared-prefix"
    stateful = shared and svc.dhcpv6
    flags = (0x80 if stateful else 0) | (0x40 if svc.dhcpv6 else 0)
    head = struct.pack("!BBHBBHII", 134, 0, 0, 64, flags, svc.router_lifetime, 0, 0)
    tail = b""
    if svc.mtu is not None:
        tail += struct.pack("!BBHI", 5, 1, 0, svc.mtu)
    # RFC 8106 5.1/5.2: lifetimes at least 3 x MaxRtrAdvInterval.
    dns_life = 3 * svc.ra_interval
    dns6 = [a.packed for a in svc.dns if isinstance(a, IPv6Address)]
    if dns6:
        tail += struct.pack("!BBHI", 25, 1 + 2 * len(dns6), 0, dns_life) + b"".join(dns6)
    names = search_list(net)
    if names:
        raw = dns_names(names)
        raw += b"\x00" * (-(8 + len(raw)) % 8)
        tail += struct.pack("!BBHI", 31, (8 + len(raw)) // 8, 0, dns_life) + raw
    shared_pio = None
    if shared:
        assert net.ipv6 is not None
        pfx = net.ipv6.prefix
        # L=0: the VMs of a shared prefix are not neighbours of each other
        # (each sits alone behind its tap, and the host has no on-link
        # neighbours to proxy for), so everything goes to the router.
        a_flag = 0x40 if pfx.prefixlen == 64 else 0
        shared_pio = (_pio(pfx.network_address.packed, pfx.prefixlen, a_flag),
                      _pio(pfx.network_address.packed, pfx.prefixlen, 0))
    info = None
    if svc.dhcpv6:
        info = b""
        dns6b = b"".join(dns6)
        if dns6b:
            info += struct.pack("!HH", 23, len(dns6b)) + dns6b
        if names:
            raw = dns_names(names)
            info += struct.pack("!HH", 24, len(raw)) + raw
    return NetServices(dhcp4, gw6, head, tail, shared_pio, info)


def _prefix(text: str) -> tuple[bytes, int]:
    """"2001:db8::/64" -> (16 bytes, 64), without ipaddress (10k ports)."""
    addr, _, plen = text.partition("/")
    return socket.inet_pton(socket.AF_INET6, addr), int(plen or 128)


def _eui64(prefix: bytes, mac: bytes) -> bytes:
    return prefix[:8] + bytes((mac[0] ^ 0x02, mac[1], mac[2], 0xFF, 0xFE, mac[3], mac[4], mac[5]))


def make_entry(net: NetworkConfig, port: Port, link: Link, tap_mac: bytes, ns: NetServices | None = None) -> PortEntry:
    """What to serve on one tap. Raises ValueError on a port the config
    cannot serve (validated input never does)."""
    svc = net.services
    ns = ns or net_services(net)
    mac = mac_bytes(port.mac)
    dhcp4 = ra = dhcp6 = None
    if not svc.enabled:
        return PortEntry(port.name, link.index, mac, tap_mac, None, None, None, svc.ra_interval)
    if ns.dhcp4 is not None and port.ipv4:
        gw, lease_opts, inform_opts = ns.dhcp4
        host = dhcp4_option(12, port.name.encode("ascii", "replace"))
        dhcp4 = Dhcp4Binding(socket.inet_aton(port.ipv4[0]), gw, lease_opts + host, inform_opts + host)
    if net.ipv6 is not None:
        prefixes = [_prefix(p) for p in port.ipv6]
        msg = ns.ra_head + bytes((1, 1)) + tap_mac  # source link-layer address: no NS needed for fe80::1
        if ns.shared_pio is not None:
            # A=1 only where SLAAC yields an address we route: when stateful
            # DHCPv6 hands out the port's /128s, an autoconfigured address
            # would be unrouted (and spoofed, for the firewall).
            eui = _eui64(net.ipv6.prefix.network_address.packed, mac)
            slaac = not svc.dhcpv6 or any(p == eui for p, _ in prefixes)
            msg += ns.shared_pio[0 if slaac else 1]
        else:
            for p, plen in prefixes:
                # SLAAC needs a /64 (RFC 4862 5.5.3 with 64-bit interface ids).
                msg += _pio(p, plen, 0x80 | (0x40 if plen == 64 else 0))
        msg += ns.ra_tail
        ra = RouterAdvert(ns.gw6, msg, icmp6_frame(tap_mac, ALL_NODES_MAC, ns.gw6, ALL_NODES, msg))
        if ns.dhcp6_info is not None:
            if ns.shared_pio is not None:
                pfx = net.ipv6.prefix
                addrs = tuple(p for p, plen in prefixes if plen == 128)
                on_link: tuple[tuple[bytes, int], ...] = ((pfx.network_address.packed, pfx.prefixlen),)
            else:
                addrs, on_link = (), tuple(prefixes)
            dhcp6 = Dhcp6Binding(ns.gw6, ns.dhcp6_info, ns.shared_pio is not None, addrs, on_link, svc.lease_time)
    return PortEntry(port.name, link.index, mac, tap_mac, dhcp4, ra, dhcp6, svc.ra_interval)


def build_table(
    cfg: Config,
    ports: Sequence[Port],
    links: Mapping[str, Link],
    tap_mac: Callable[[str], bytes],
    previous: Mapping[int, PortEntry] | None = None,
    previous_inputs: Mapping[int, tuple[object, ...]] | None = None,
) -> tuple[dict[int, PortEntry], dict[int, tuple[object, ...]]]:
    """-> (ifindex -> entry, ifindex -> the inputs it was built from).

    Ports whose tap is missing or down are not served (they are pending for
    the planner too). An entry is rebuilt only when its inputs changed: the
    port, its network's config, the tap (index and name)."""
    previous = previous or {}
    previous_inputs = previous_inputs or {}
    nets = cfg.network_by_name
    shared: dict[str, NetServices] = {}
    table: dict[int, PortEntry] = {}
    inputs: dict[int, tuple[object, ...]] = {}
    for port in ports:
        link = links.get(port.name)
        net = nets.get(port.network)
        if link is None or not link.up or net is None:
            continue
        key = (port, net, link.name)
        old = previous.get(link.index)
        if old is not None and previous_inputs.get(link.index) == key:
            table[link.index] = old
            inputs[link.index] = key
            continue
        try:
            mac = old.tap_mac if old is not None and old.name == link.name else tap_mac(link.name)
            ns = shared.get(net.name)
            if ns is None:
                ns = shared[net.name] = net_services(net)
            table[link.index] = make_entry(net, port, link, mac, ns)
        except (OSError, ValueError) as exc:
            # The tap vanished since the links were read, or a value the
            # encoder rejects: this port waits for the next pass, the others
            # are served.
            log.warning("port %s: not served: %s", port.name, exc)
            continue
        inputs[link.index] = key
    return table, inputs
