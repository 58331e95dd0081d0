"""The hvrouter nftables table, rendered whole from the host config and the
ports. Pure and deterministic: the same input gives the same text, byte for
byte, whatever the order of the ports.

Ports only add set and map elements, never rules. The text carries its own
fingerprint (a SHA-256 of the text) in the table's comment, which is how
`sync` tells whether the kernel holds what we would render without listing
thousands of elements.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, ip_address

import jinja2

from ..config import IFNAME_RE, Config
from ..model import Port

TABLE = "hvrouter"
FAMILY = "inet"
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


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("hvrouter.firewall", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


@dataclass
class _Elements:
    """Set and map elements, as nft text, plus what was left out and why."""

    taps: list[str] = field(default_factory=list)
    uplinks: list[str] = field(default_factory=list)
    dnat4: list[str] = field(default_factory=list)
    nat4_own: list[str] = field(default_factory=list)
    dnat6: list[str] = field(default_factory=list)
    nat6_own: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _quote(ifname: str) -> str:
    return f'"{ifname}"'


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


def _elements(cfg: Config, ports: Iterable[Port]) -> _Elements:
    out = _Elements()
    uplinks = sorted({u.interface for u in cfg.fabric.uplinks})
    out.uplinks = [_quote(u) for u in uplinks]
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
    _nat(good, out)
    # Notes become `#` lines: a newline smuggled in through a port's field
    # would turn the rest of the line into ruleset text.
    out.notes = [_UNPRINTABLE.sub("?", n) for n in out.notes]
    return out


def render(cfg: Config, ports: Sequence[Port]) -> str:
    """The whole `table inet hvrouter`, nft syntax, fingerprint included."""
    el = _elements(cfg, ports)
    text = _environment().get_template("hvrouter.nft.j2").render(
        table=TABLE,
        fingerprint=_PLACEHOLDER,
        taps=el.taps,
        uplinks=el.uplinks,
        dnat4=el.dnat4,
        nat4_own=el.nat4_own,
        dnat6=el.dnat6,
        nat6_own=el.nat6_own,
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
    digest = hashlib.sha256(text.encode()).hexdigest()
    return text.replace(_PLACEHOLDER, FINGERPRINT_PREFIX + digest, 1)


def fingerprint(text: str) -> str | None:
    """The fingerprint written in a rendered (or listed) table, if any."""
    m = _FINGERPRINT_RE.search(text)
    return m.group(1) if m else None
