"""The hvrouter nftables tables (`inet hvrouter`, `arp hvrouter`), rendered
whole from the host config and the ports. Pure and deterministic: the same
input gives the same text, byte for byte, whatever the order of the ports.

Ports only add set and map elements and counter objects, never rules. The
text carries its own fingerprint (a SHA-256 of the text) in both tables'
comments, which is how `sync` tells whether the kernel holds what we would
render without listing thousands of elements.

Anti-spoofing drops are counted per port in named counters, one per port and
table: `counter_name(port)` (`spoof_` + the tap name, see there), in
`inet hvrouter` (IPv4/IPv6 frames) and in `arp hvrouter` (ARP).
"""

from __future__ import annotations

import hashlib
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..config import IFNAME_RE, Config
from ..model import Port
from ..ports import eui64_link_local
from ..templating import environment

if TYPE_CHECKING:
    pass

TABLE = "hvrouter"
FAMILY = "inet"
# Both tables of ours, replaced together: ARP is not seen by the inet family.
FAMILIES = (FAMILY, "arp")
BGP_PORT = 179
# BFD control (single hop), echo, and multihop control (RFC 5881, 5883).
BFD_PORTS = (3784, 3785, 4784)
LOG_PREFIX = "hvrouter drop: "
LOG_RATE = "10/second"
FINGERPRINT_PREFIX = "hvrouter sha256:"
# Stands for the fingerprint while the text is hashed: the fingerprint cannot
# be part of what it fingerprints.
_PLACEHOLDER = "hvrouter sha256:" + "0" * 64
_FINGERPRINT_RE = re.compile(r'^\s*comment "(hvrouter sha256:[0-9a-f]{64})"\s*$', re.M)
_IFNAME = re.compile(IFNAME_RE)
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# What a VM may send from :: (before it holds any address): DAD neighbour
# solicitations, MLD reports (RFC 3810 allows :: while no link-local is
# usable) and router solicitations.
V6_BOOTSTRAP = (
    "nd-neighbor-solicit",
    "nd-router-solicit",
    "mld-listener-report",
    "mld-listener-done",
    "mld2-listener-report",
)
COUNTER_PREFIX = "spoof_"
# Room in the dynamic set `spoofers` (ports with a drop): more than the
# 10k ports a hypervisor is planned for.
SPOOFERS_SIZE = 65536
# nft object names are bare words of [A-Za-z0-9/_.-] (no quoting in a
# counter declaration); interface names may also hold @ : +. Those are
# written /xx (hex), "/" itself never occurs in an interface name.
_OBJ_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_OBJ_ESCAPE = re.compile(r"/([0-9a-f]{2})")
LinkLocal = Literal["eui64", "any"]


@dataclass
class _Elements:
    """Set and map elements, as nft text, plus what was left out and why."""

    taps: list[str] = field(default_factory=list)
    uplinks: list[str] = field(default_factory=list)
    overlay_bridges: list[str] = field(default_factory=list)
    dnat4: list[str] = field(default_factory=list)
    nat4_own: list[str] = field(default_factory=list)
    dnat6: list[str] = field(default_factory=list)
    nat6_own: list[str] = field(default_factory=list)
    port_mac: list[str] = field(default_factory=list)
    port_ipv4: list[str] = field(default_factory=list)
    port_ipv6: list[str] = field(default_factory=list)
    port_net4: list[str] = field(default_factory=list)
    port_net6: list[str] = field(default_factory=list)
    counter_names: list[str] = field(default_factory=list)
    counter_map: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _quote(ifname: str) -> str:
    return f'"{ifname}"'


def counter_name(port: str) -> str:
    """The name of the counter objects of port `port` (a tap name), the same
    in `inet hvrouter` and `arp hvrouter`: "spoof_" + the name, with @ : +
    written as /40 /3a /2b ("vm1" -> "spoof_vm1", "a@b" -> "spoof_a/40b")."""
    return COUNTER_PREFIX + _OBJ_SAFE.sub(lambda m: f"/{ord(m.group()):02x}", port)


def port_of_counter(name: str) -> str | None:
    """The port a counter object name stands for; None if not one of ours."""
    if not name.startswith(COUNTER_PREFIX):
        return None
    return _OBJ_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), name.removeprefix(COUNTER_PREFIX))


# An allowed source: (first address as an int, prefix length, nft text).
_Source = tuple[int, int, str]
_FAMILIES = ((4, socket.AF_INET, 32), (6, socket.AF_INET6, 128))


def _parse(text: str, version: int | None) -> tuple[int, _Source] | None:
    """(version, source) of an address or prefix, host bits cleared; None
    if it does not parse or is of the wrong family. socket rather than
    ipaddress: 10k ports, several entries each, rendered on every pass."""
    addr, slash, plen_text = text.partition("/")
    for ver, family, bits in _FAMILIES:
        if version not in (None, ver):
            continue
        try:
            packed = socket.inet_pton(family, addr)
        except (OSError, ValueError):
            continue
        if not slash:
            return ver, (int.from_bytes(packed, "big"), bits, addr)
        if not (plen_text.isascii() and plen_text.isdigit() and int(plen_text) <= bits):
            return None
        plen = int(plen_text)
        first = int.from_bytes(packed, "big") >> (bits - plen) << (bits - plen)
        net = socket.inet_ntop(family, first.to_bytes(bits // 8, "big"))
        # A /32 or /128 as a bare address: how nft lists it back.
        return ver, (first, plen, net if plen == bits else f"{net}/{plen}")
    return None


def _add(tap: str, sources: list[_Source], bits: int, single: list[str], nets: list[str]) -> None:
    """Elements of one port and family: addresses to the hash set, prefixes
    to the interval set. nft refuses overlapping intervals (an extra prefix
    inside the port's own /64, say): what a shorter prefix covers is left
    out. Sorted by first address, an entry overlaps the one kept before it
    iff it starts inside it (prefixes nest or are disjoint)."""
    if len(sources) > 1:
        sources.sort()
    end = -1
    for first, plen, text in sources:
        if first <= end:
            continue
        end = first + (1 << (bits - plen)) - 1
        (single if plen == bits else nets).append(f"{tap} . {text}")


def _sources(port: Port, link_local: LinkLocal, out: _Elements) -> None:
    """The port's MAC and the sources it may use, as set elements. A field
    that does not parse is left out with a note, so the port's traffic from
    it is dropped: failing closed."""
    tap = _quote(port.name)
    mac = port.mac.lower()
    good_mac = _MAC.match(mac) is not None
    if good_mac:
        out.port_mac.append(f"{tap} . {mac}")
    else:
        out.notes.append(f"port {port.name}: MAC {port.mac!r} is not a MAC address; everything it sends is dropped")
    by_version: dict[int, list[_Source]] = {4: [], 6: []}
    if link_local == "eui64" and good_mac:
        ll = eui64_link_local(mac)
        by_version[6].append((int.from_bytes(socket.inet_pton(socket.AF_INET6, ll), "big"), 128, ll))
    # NAT addresses are not sources: the VM uses its private address.
    fields: tuple[tuple[str, tuple[str, ...], int | None], ...] = (
        ("IPv4 address", port.ipv4, 4), ("IPv6 prefix", port.ipv6, 6), ("extra prefix", port.extra, None))
    for what, texts, version in fields:
        for text in texts:
            parsed = _parse(text, version)
            if parsed is None:
                expected = f"an IPv{version} address or prefix" if version else "an address or prefix"
                out.notes.append(f"port {port.name}: {what} {text!r} is not {expected}, not an allowed source")
            else:
                by_version[parsed[0]].append(parsed[1])
    _add(tap, by_version[4], 32, out.port_ipv4, out.port_net4)
    _add(tap, by_version[6], 128, out.port_ipv6, out.port_net6)


def v6_target(port: Port) -> str | None:
    """The address a port's IPv6 NAT addresses translate to: its first /128.

    A prefix-per-port port owns a prefix, not an address: which address the
    VM uses in it is the VM's business, so there is nothing to translate to."""
    for entry in port.ipv6:
        if entry.endswith("/128"):
            return entry.removesuffix("/128")
    return None


def _nat(ports: Sequence[Port], out: _Elements) -> None:
    # (public address, target, tap) per family; sorted by address below.
    seen: dict[IPv4Address | IPv6Address, str] = {}
    entries: list[tuple[IPv4Address | IPv6Address, IPv4Address | IPv6Address, str]] = []
    for port in ports:
        for text in port.nat:
            try:
                public = ip_address(text)
            except ValueError:
                out.notes.append(f"port {port.name}: NAT address {text!r} is not an address, skipped")
                continue
            if public.version == 4:
                target_text: str | None = port.ipv4[0] if port.ipv4 else None
                missing = "no IPv4 address to translate to"
            else:
                target_text = v6_target(port)
                missing = (
                    f"its IPv6 {', '.join(port.ipv6)} is a prefix, not an address to translate to"
                    if port.ipv6
                    else "no IPv6 address to translate to"
                )
            if target_text is None:
                out.notes.append(f"port {port.name}: no NAT for {public}: {missing}")
                continue
            target: IPv4Address | IPv6Address | None
            try:
                target = ip_address(target_text)
            except ValueError:
                target = None
            if target is None or target.version != public.version:
                out.notes.append(f"port {port.name}: NAT target {target_text!r} is not an IPv{public.version} address, skipped")
                continue
            # The store refuses a NAT address claimed twice; should one get
            # here anyway, a duplicate map key would make nft refuse the whole
            # table, so the first port (by name) keeps it.
            if public in seen:
                out.notes.append(f"port {port.name}: NAT address {public} already belongs to port {seen[public]}, skipped")
                continue
            seen[public] = port.name
            entries.append((public, target, port.name))
    entries.sort(key=lambda e: (e[0].version, int(e[0])))
    for public, target, tap in entries:
        if public.version == 4:
            out.dnat4.append(f"{public} : {target}")
            out.nat4_own.append(f"{_quote(tap)} . {public}")
        else:
            out.dnat6.append(f"{public} : {target}")
            out.nat6_own.append(f"{_quote(tap)} . {public}")


def _elements(cfg: Config, ports: Iterable[Port], link_local: LinkLocal) -> _Elements:
    out = _Elements()
    uplinks = sorted({u.interface for u in cfg.fabric.uplinks})
    out.uplinks = [_quote(u) for u in uplinks]
    out.overlay_bridges = [_quote(n.bridge_name) for n in sorted(cfg.overlay.networks, key=lambda n: n.bridge_name)]
    good: list[Port] = []
    for port in sorted(ports, key=lambda p: p.name):
        # Names reach the table as quoted strings: anything outside the
        # interface-name alphabet could break (or inject into) the ruleset.
        if not _IFNAME.match(port.name):
            out.notes.append(f"port {port.name!r}: not an interface name, left out")
            continue
        if port.name in uplinks:
            # Treated as a tap, an uplink would have its fabric traffic
            # dropped by the VM reverse-path check.
            out.notes.append(f"port {port.name}: has the name of an uplink, left out of the taps")
            continue
        good.append(port)
    out.taps = [_quote(p.name) for p in good]
    for port in good:
        _sources(port, link_local, out)
        out.counter_names.append(counter_name(port.name))
        out.counter_map.append(f"{_quote(port.name)} : {counter_name(port.name)}")
    _nat(good, out)
    # Notes become `#` lines: a newline smuggled in through a port's field
    # would turn the rest of the line into ruleset text.
    out.notes = [_UNPRINTABLE.sub("?", n) for n in out.notes]
    return out


def render(cfg: Config, ports: Sequence[Port], *, link_local: LinkLocal = "eui64") -> str:
    """The whole `table inet hvrouter` and `table arp hvrouter`, nft syntax,
    fingerprint included.

    `link_local` is the IPv6 link-local source a port may use: "eui64", the
    one SLAAC derives from its MAC (the planner routes the port's prefix via
    it, so a VM must hold it anyway), or "any" (fe80::/10), for guests that
    build theirs otherwise (RFC 7217 stable-privacy, Windows)."""
    el = _elements(cfg, ports, link_local)
    text = environment("hvrouter.firewall").get_template("hvrouter.nft.j2").render(
        table=TABLE,
        fingerprint=_PLACEHOLDER,
        taps=el.taps,
        uplinks=el.uplinks,
        overlay_bridges=el.overlay_bridges,
        dnat4=el.dnat4,
        nat4_own=el.nat4_own,
        dnat6=el.dnat6,
        nat6_own=el.nat6_own,
        port_mac=el.port_mac,
        port_ipv4=el.port_ipv4,
        port_ipv6=el.port_ipv6,
        port_net4=el.port_net4,
        port_net6=el.port_net6,
        link_local_any=link_local == "any",
        counter_names=el.counter_names,
        counter_map=el.counter_map,
        v6_bootstrap=", ".join(V6_BOOTSTRAP),
        spoofers_size=SPOOFERS_SIZE,
        notes=el.notes,
        # The NAT chains make the kernel track every connection of the host
        # (a table that can fill, a cost per packet): only when there is
        # something to translate.
        nat=bool(el.dnat4 or el.dnat6),
        bgp_port=BGP_PORT,
        bfd_ports="{ " + ", ".join(str(p) for p in BFD_PORTS) + " }",
        log_prefix=LOG_PREFIX,
        log_rate=LOG_RATE,
    )
    # Both tables carry it: either one deleted or edited by hand shows.
    return text.replace(_PLACEHOLDER, input_fingerprint(cfg, ports, link_local))


_CODE_DIGEST: list[bytes] = []


def input_fingerprint(cfg: Config, ports: Sequence[Port], link_local: LinkLocal = "eui64") -> str:
    """The fingerprint of what the tables are rendered from: this module, the
    template, the config and the ports. Comparing it with the kernel's costs
    ~20 ms at 10k ports, where rendering the text to hash it cost 0.2 s of
    every no-op pass of a fresh `reconcile --once`."""
    if not _CODE_DIGEST:
        code = hashlib.sha256(Path(__file__).read_bytes())
        code.update((Path(__file__).parent / "templates" / "hvrouter.nft.j2").read_bytes())
        _CODE_DIGEST.append(code.digest())
    h = hashlib.sha256(_CODE_DIGEST[0])
    h.update(cfg.model_dump_json().encode())
    h.update(link_local.encode())
    for p in sorted(ports, key=lambda p: p.name):
        h.update("\0".join((p.name, p.mac, p.network, " ".join(p.ipv4), " ".join(p.ipv6), " ".join(p.extra),
                            " ".join(p.nat))).encode() + b"\n")
    return FINGERPRINT_PREFIX + h.hexdigest()


def fingerprint(text: str) -> str | None:
    """The fingerprint written in a rendered (or listed) table, if any."""
    m = _FINGERPRINT_RE.search(text)
    return m.group(1) if m else None
