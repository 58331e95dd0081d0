"""The seed lab's BGP plan as hvrouter configs, one per role (addresses
mapped into the documentation ranges, DESIGN.md)."""

from __future__ import annotations

import copy
from typing import Any

from hvrouter.config import Config, parse_config

ASN = 65000

HV1: dict[str, Any] = {
    "rtproto": 211,
    "tables": {"public": 90, "private": 20, "local-out": 100},
    "rules": {"default_table": "public", "local_out_table": "local-out",
              "prefixes": [{"prefix": "198.18.15.0/24", "table": "private"}]},
    "networks": [
        {
            "name": "public",
            "table": "public",
            "ipv4": {"subnet": "203.0.113.0/24", "gateway": "203.0.113.254"},
            "ipv6": {"mode": "prefix-per-port", "prefix": "2001:db8:cb00:7100::/56"},
        }
    ],
    "fabric": {"uplinks": [{"interface": "fa-pub", "table": "public"}, {"interface": "fa-priv", "table": "private"},
                           {"interface": "fb-pub", "table": "public"}, {"interface": "fb-priv", "table": "private"}]},
    "bgp": {
        "asn": ASN,
        "router_id": "198.18.15.1",
        "peers": [
            {"name": "rr1_pub", "address": "198.51.100.11", "local": "198.51.100.1", "interface": "fa-pub",
             "table": "public"},
            {"name": "rr1_priv", "address": "198.18.15.11", "local": "198.18.15.1", "interface": "fa-priv",
             "table": "private"},
            {"name": "rr2_pub", "address": "198.51.100.75", "local": "198.51.100.65", "interface": "fb-pub",
             "table": "public"},
            {"name": "rr2_priv", "address": "198.18.15.139", "local": "198.18.15.129", "interface": "fb-priv",
             "table": "private"},
        ],
    },
    "bird": {"role": "hypervisor"},
}

RR1: dict[str, Any] = {
    "tables": {"public": 90, "private": 20, "local-out": 100},
    "bgp": {
        "asn": ASN,
        "router_id": "198.51.100.11",
        "clients": [
            {"name": "hv_pub", "range": "198.51.100.0/26", "local": "198.51.100.11", "table": "public",
             "cluster_id": "0.0.0.1"},
            {"name": "hv_priv", "range": "198.18.15.0/25", "local": "198.18.15.11", "table": "private",
             "cluster_id": "0.0.0.2"},
        ],
    },
    "bird": {"role": "route-reflector"},
}

EDGE: dict[str, Any] = {
    "tables": {"public": 90, "private": 20, "local-out": 100},
    "bgp": {
        "asn": ASN,
        "router_id": "198.51.100.50",
        "peers": [
            {"name": "rr1_pub", "address": "198.51.100.11", "local": "198.51.100.50", "interface": "fa-pub",
             "table": "public"},
            {"name": "rr2_pub", "address": "198.51.100.75", "local": "198.51.100.114", "interface": "fb-pub",
             "table": "public"},
        ],
        "announce": ["0.0.0.0/0", "192.0.2.53/32", "::/0", "2001:db8:ffff::53/128"],
    },
    "bird": {"role": "edge"},
}

ROLE_DATA = {"hypervisor": HV1, "route-reflector": RR1, "edge": EDGE}


def config(data: dict[str, Any], **changes: Any) -> Config:
    """parse_config on a copy of `data`, with top-level or `bgp.` keys changed."""
    data = copy.deepcopy(data)
    for key, value in changes.items():
        if key.startswith("bgp_"):
            data["bgp"][key[4:]] = value
        else:
            data[key] = value
    return parse_config(data)
