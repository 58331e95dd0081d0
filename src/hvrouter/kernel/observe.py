"""Read what the kernel holds that hvrouter owns (or settings it manages)."""

from __future__ import annotations

from collections.abc import Iterable

from ..model import AF_INET, AF_INET6, DEVCONF_NAMES, DevConf, KernelObject, Link, ObjectSet
from . import codec, sysctl
from .netlink import NetlinkSocket

MANAGED_DEVCONF = tuple(sorted(DEVCONF_NAMES))


def read_links(nl: NetlinkSocket) -> dict[str, Link]:
    mtype, body = codec.dump_links()
    return {
        name: Link(index, name, up)
        for index, name, up in nl.dump(mtype, body, codec.RTM_NEWLINK, codec.decode_link)
    }


def read_devconf(nl: NetlinkSocket, links: dict[str, Link]) -> list[DevConf]:
    names = {link.index: name for name, link in links.items()}
    mtype, body = codec.dump_netconf(AF_INET)
    return [
        DevConf(index, names.get(index, ""), tuple((k, conf.get(k, 0)) for k in MANAGED_DEVCONF))
        for index, conf in nl.dump(mtype, body, codec.RTM_NEWNETCONF, codec.decode_netconf)
    ]


def observe(
    nl: NetlinkSocket,
    proto: int,
    rule_lo: int,
    rule_hi: int,
    sysctl_paths: Iterable[str],
) -> tuple[dict[str, Link], ObjectSet]:
    """Links by name, and the owned/managed objects present in the kernel."""
    links = read_links(nl)
    found: list[KernelObject] = [*read_devconf(nl, links)]
    decode_addr = codec.make_address_decoder(proto)
    decode_route = codec.make_route_decoder(proto)
    decode_rule = codec.make_rule_decoder(proto, rule_lo, rule_hi)
    decode_proxy = codec.make_proxy_decoder(proto)
    for fam in (AF_INET, AF_INET6):
        found += nl.dump(*codec.dump_addresses(fam), codec.RTM_NEWADDR, decode_addr)
        found += nl.dump(*codec.dump_routes(fam, proto), codec.RTM_NEWROUTE, decode_route)
        found += nl.dump(*codec.dump_rules(fam), codec.RTM_NEWRULE, decode_rule)
        found += nl.dump(*codec.dump_proxies(fam), codec.RTM_NEWNEIGH, decode_proxy)
    found += sysctl.read(sysctl_paths)
    seen = ObjectSet()
    seen.objects = {obj.key(): obj for obj in found}
    return links, seen
