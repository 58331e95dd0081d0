"""Turning user input into Ports, and checking ports against the config and
against each other. Pure: no I/O. Every problem is reported at once."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)

from .config import IFNAME_RE, Config
from .errors import Problem
from .model import Port

MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
FIELDS = ("name", "mac", "network", "ipv4", "ipv6", "extra", "nat")


def normalize_mac(value: str) -> str | None:
    mac = value.strip().lower().replace("-", ":")
    if not MAC_RE.match(mac):
        return None
    first = int(mac[:2], 16)
    if first & 1:  # multicast/broadcast bit: never a VM's unicast address
        return None
    if mac == "00:00:00:00:00:00":
        return None
    return mac


def _as_list(value: object) -> list[object] | None:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return list(value)
    return None


def parse_port(data: Mapping[str, object], cfg: Config, where: str = "port") -> tuple[Port | None, list[Problem]]:
    """Build a Port from a mapping of the `port show --json` fields."""
    problems: list[Problem] = []
    for key in data:
        if key not in FIELDS:
            problems.append(Problem(f"{where}.{key}", data[key], f"one of the fields {', '.join(FIELDS)}"))

    name = data.get("name")
    if not isinstance(name, str) or not re.match(IFNAME_RE, name) or name in (".", ".."):
        problems.append(Problem(f"{where}.name", name, "an interface name of 1-15 characters [A-Za-z0-9_.:@+-]"))
        name = None
    mac_in = data.get("mac")
    mac = normalize_mac(mac_in) if isinstance(mac_in, str) else None
    if mac is None:
        problems.append(Problem(f"{where}.mac", mac_in, "a unicast MAC address like 52:54:00:12:34:56"))
    network = data.get("network")
    net = cfg.network_by_name.get(network) if isinstance(network, str) else None
    if net is None:
        problems.append(Problem(f"{where}.network", network, f"one of the networks {sorted(cfg.network_by_name)}"))

    ipv4: list[IPv4Address] = []
    raw4 = _as_list(data.get("ipv4"))
    if raw4 is None:
        problems.append(Problem(f"{where}.ipv4", data.get("ipv4"), "a list of IPv4 addresses"))
        raw4 = []
    for i, item in enumerate(raw4):
        w = f"{where}.ipv4[{i}]"
        try:
            addr = ip_address(str(item).strip()) if isinstance(item, str) else None
        except ValueError:
            addr = None
        if not isinstance(addr, IPv4Address):
            problems.append(Problem(w, item, "an IPv4 address like 203.0.113.1"))
            continue
        if net is not None:
            if net.ipv4 is None:
                problems.append(Problem(w, item, f"no IPv4 address (network {net.name} has no ipv4)"))
                continue
            sub = net.ipv4.subnet
            if addr not in sub:
                problems.append(Problem(w, item, f"an address inside {sub} (network {net.name})"))
                continue
            if addr == net.ipv4.gateway:
                problems.append(Problem(w, item, f"an address other than the gateway {net.ipv4.gateway}"))
                continue
            if sub.prefixlen <= 30 and addr in (sub.network_address, sub.broadcast_address):
                problems.append(Problem(w, item, f"a host address of {sub}, not its network/broadcast address"))
                continue
        if addr in ipv4:
            problems.append(Problem(w, item, "each address listed once"))
            continue
        ipv4.append(addr)

    ipv6: list[IPv6Network] = []
    raw6 = _as_list(data.get("ipv6"))
    if raw6 is None:
        problems.append(Problem(f"{where}.ipv6", data.get("ipv6"), "a list of IPv6 prefixes or addresses"))
        raw6 = []
    for i, item in enumerate(raw6):
        w = f"{where}.ipv6[{i}]"
        pfx = _parse_v6(item)
        if pfx is None:
            problems.append(Problem(w, item, "an IPv6 prefix like 2001:db8:cb00:7101::/64 or an address"))
            continue
        if net is not None:
            v6 = net.ipv6
            if v6 is None:
                problems.append(Problem(w, item, f"no IPv6 (network {net.name} has no ipv6)"))
                continue
            if not pfx.subnet_of(v6.prefix):
                problems.append(Problem(w, item, f"a prefix inside {v6.prefix} (network {net.name})"))
                continue
            if v6.mode == "prefix-per-port" and pfx.prefixlen != v6.port_prefix_len:
                problems.append(Problem(w, item, f"a /{v6.port_prefix_len} prefix (network {net.name} is prefix-per-port)"))
                continue
            if v6.mode == "shared-prefix" and pfx.prefixlen != 128:
                problems.append(Problem(w, item, f"a single address (network {net.name} is shared-prefix)"))
                continue
        if pfx in ipv6:
            problems.append(Problem(w, item, "each prefix listed once"))
            continue
        ipv6.append(pfx)

    extra: list[IPv4Network | IPv6Network] = []
    raw_extra = _as_list(data.get("extra"))
    if raw_extra is None:
        problems.append(Problem(f"{where}.extra", data.get("extra"), "a list of prefixes"))
        raw_extra = []
    for i, item in enumerate(raw_extra):
        w = f"{where}.extra[{i}]"
        try:
            pfx_any = ip_network(str(item).strip(), strict=True) if isinstance(item, str) else None
        except ValueError:
            pfx_any = None
        if pfx_any is None:
            problems.append(Problem(w, item, "a prefix or address like 203.0.113.10 or 2001:db8::/64 (host bits clear)"))
            continue
        if pfx_any.prefixlen == 0:
            problems.append(Problem(w, item, "a prefix more specific than a default route"))
            continue
        if net is not None and (net.ipv4 if pfx_any.version == 4 else net.ipv6) is None:
            problems.append(Problem(w, item, f"a family network {net.name} has"))
            continue
        extra.append(pfx_any)

    nat: list[IPv4Address | IPv6Address] = []
    raw_nat = _as_list(data.get("nat"))
    if raw_nat is None:
        problems.append(Problem(f"{where}.nat", data.get("nat"), "a list of addresses"))
        raw_nat = []
    for i, item in enumerate(raw_nat):
        w = f"{where}.nat[{i}]"
        try:
            addr_any = ip_address(str(item).strip()) if isinstance(item, str) else None
        except ValueError:
            addr_any = None
        if addr_any is None:
            problems.append(Problem(w, item, "an address like 203.0.113.11"))
            continue
        if addr_any.version == 4 and not ipv4 or addr_any.version == 6 and not ipv6:
            problems.append(Problem(w, item, f"an IPv{addr_any.version} address to translate to on this port"))
            continue
        if addr_any in nat or (addr_any.version == 4 and addr_any in ipv4):
            problems.append(Problem(w, item, "an address not already used by this port"))
            continue
        nat.append(addr_any)

    if problems or name is None or mac is None or net is None:
        return None, problems
    return (
        Port(
            name,
            mac,
            net.name,
            tuple(ip_text(a) for a in ipv4),
            tuple(net_text(n) for n in ipv6),
            tuple(net_text(n) for n in extra),
            tuple(ip_text(a) for a in nat),
        ),
        [],
    )


def _parse_v6(item: object) -> IPv6Network | None:
    if not isinstance(item, str):
        return None
    text = item.strip()
    try:
        if "/" in text:
            net = ip_network(text, strict=True)
        else:
            addr = ip_address(text)
            net = ip_network(f"{addr}/{addr.max_prefixlen}")
    except ValueError:
        return None
    return net if isinstance(net, IPv6Network) else None


def claimed(port: Port) -> list[IPv4Network | IPv6Network]:
    """Address space a port claims exclusively (extra routes may be shared:
    anycast puts the same extra prefix on several ports)."""
    out: list[IPv4Network | IPv6Network] = [IPv4Network(f"{a}/32") for a in port.ipv4]
    out.extend(IPv6Network(n) for n in port.ipv6)
    out.extend(ip_network(a) for a in port.nat)
    return out


def conflicts(new: Sequence[Port], existing: Iterable[Port]) -> list[Problem]:
    """Names, MACs and address space must be unique across ports.

    Overlap is checked with one sort per family over intervals, so importing
    10k ports into 10k others stays O(n log n)."""
    problems: list[Problem] = []
    existing = list(existing)
    names: dict[str, str] = {p.name: "an existing port" for p in existing}
    macs: dict[str, str] = {p.mac: p.name for p in existing}
    for i, p in enumerate(new):
        w = f"ports[{i}]" if len(new) > 1 else "port"
        if p.name in names:
            problems.append(Problem(f"{w}.name", p.name, f"a name not already used ({names[p.name]})"))
        names[p.name] = "another port of this input"
        if p.mac in macs:
            problems.append(Problem(f"{w}.mac", p.mac, f"a MAC not already used by port {macs[p.mac]}"))
        macs[p.mac] = p.name

    # Address space: one sort per family, then for every new interval look at
    # the intervals reaching furthest among those sorted before it, and at
    # the existing ones starting inside it. O(n log n) for realistic inputs,
    # so importing 10k ports into 10k others stays fast.
    Iv = tuple[int, int, int, str, bool, int]  # version, start, end, port, is_new, index
    intervals: list[Iv] = []
    for p in existing:
        for n in claimed(p):
            intervals.append((n.version, int(n.network_address), int(n.broadcast_address), p.name, False, -1))
    for i, p in enumerate(new):
        for n in claimed(p):
            intervals.append((n.version, int(n.network_address), int(n.broadcast_address), p.name, True, i))
    intervals.sort()
    reach: Iv | None = None  # furthest-reaching interval so far
    reach_old: Iv | None = None  # same, among existing ports
    for pos, iv in enumerate(intervals):
        if iv[4]:
            # Name an existing port when there is one: that is what the user
            # must change; a clash with another new port comes second.
            other: Iv | None = None
            if reach_old is not None and reach_old[0] == iv[0] and iv[1] <= reach_old[2]:
                other = reach_old
            else:
                for nxt in intervals[pos + 1 :]:
                    if nxt[0] != iv[0] or nxt[1] > iv[2]:
                        break
                    if not nxt[4]:
                        other = nxt
                        break
            if other is None and reach is not None and reach[0] == iv[0] and iv[1] <= reach[2]:
                other = reach
            if other is not None:
                w = f"ports[{iv[5]}]" if len(new) > 1 else "port"
                problems.append(Problem(f"{w}.address", _iv_text(iv), f"an address not already used by port {other[3]}"))
        if reach is None or reach[0] != iv[0] or iv[2] > reach[2]:
            reach = iv
        if not iv[4] and (reach_old is None or reach_old[0] != iv[0] or iv[2] > reach_old[2]):
            reach_old = iv
    return problems


def _iv_text(iv: tuple[int, int, int, str, bool, int]) -> str:
    if iv[0] == 4:
        net: IPv4Network | IPv6Network = IPv4Network((iv[1], 32 - (iv[2] - iv[1]).bit_length()))
    else:
        net = IPv6Network((iv[1], 128 - (iv[2] - iv[1]).bit_length()))
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def ip_text(addr: IPv4Address | IPv6Address) -> str:
    """Address text exactly as the kernel codec (inet_ntop) writes it, so what
    is planned compares equal to what is read back. Python's ipaddress
    differs for IPv4-mapped/-compatible IPv6 (::ffff:c633:6400 vs
    ::ffff:198.51.100.0)."""
    return socket.inet_ntop(socket.AF_INET if addr.version == 4 else socket.AF_INET6, addr.packed)


def net_text(net: IPv4Network | IPv6Network) -> str:
    return f"{ip_text(net.network_address)}/{net.prefixlen}"


def eui64_link_local(mac: str) -> str:
    """The SLAAC (EUI-64) link-local address of a MAC, as normalized text."""
    b = bytes.fromhex(mac.replace(":", ""))
    iid = bytes((b[0] ^ 0x02, b[1], b[2], 0xFF, 0xFE, b[3], b[4], b[5]))
    return socket.inet_ntop(socket.AF_INET6, b"\xfe\x80" + b"\x00" * 6 + iid)
