"""Read what the kernel holds that hvrouter owns (or settings it manages)."""

from __future__ import annotations

from ..model import (
    AF_INET,
    AF_INET6,
    DEVCONF_NAMES,
    DevConf,
    Link,
    ObjectSet,
)
from . import codec, sysctl
from .netlink import NetlinkSocket

MANAGED_DEVCONF = tuple(sorted(DEVCONF_NAMES))


def read_links(nl: NetlinkSocket) -> tuple[dict[str, Link], dict[int, DevConf]]:
    links: dict[str, Link] = {}
    confs: dict[int, DevConf] = {}
    mtype, body = codec.dump_links()
    for t, msg in nl.dump(mtype, body):
        if t != codec.RTM_NEWLINK:
            continue
        index, name, up, mac, conf = codec.decode_link(msg)
        links[name] = Link(index, name, up, mac)
        if conf:
            confs[index] = DevConf(index, tuple((k, conf.get(k, 0)) for k in MANAGED_DEVCONF))
    return links, confs


def observe(
    nl: NetlinkSocket, proto: int, rule_lo: int, rule_hi: int, sysctl_names: list[str]
) -> tuple[dict[str, Link], ObjectSet]:
    """Links by name, and the owned/managed objects present in the kernel."""
    seen = ObjectSet()
    links, confs = read_links(nl)
    for conf in confs.values():
        seen.add(conf, "")
    for fam in (AF_INET, AF_INET6):
        mtype, body = codec.dump_addresses(fam)
        for t, msg in nl.dump(mtype, body):
            if t == codec.RTM_NEWADDR:
                addr, p = codec.decode_address(msg)
                if p == proto:
                    seen.add(addr, "")
        mtype, body = codec.dump_routes(fam, proto)
        for t, msg in nl.dump(mtype, body):
            if t == codec.RTM_NEWROUTE:
                route, p = codec.decode_route(msg)
                if p == proto:
                    seen.add(route, "")
        mtype, body = codec.dump_rules(fam)
        for t, msg in nl.dump(mtype, body):
            if t == codec.RTM_NEWRULE:
                rule, p = codec.decode_rule(msg)
                if p == proto and rule_lo <= rule.priority <= rule_hi:
                    seen.add(rule, "")
        mtype, body = codec.dump_proxies(fam)
        for t, msg in nl.dump(mtype, body):
            if t == codec.RTM_NEWNEIGH:
                got = codec.decode_proxy(msg)
                if got is not None and got[1] == proto:
                    seen.add(got[0], "")
        mtype, body = codec.dump_neightbl(fam)
        for t, msg in nl.dump(mtype, body):
            if t == codec.RTM_NEWNEIGHTBL:
                parms = codec.decode_neightbl(msg)
                if parms is not None:
                    seen.add(parms, "")
    for s in sysctl.read(sysctl_names):
        seen.add(s, "")
    return links, seen
