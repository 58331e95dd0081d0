"""Test data for the unit tests: configs, ports and fake links.

Every address is from the documentation/benchmark ranges (DESIGN.md)."""

from __future__ import annotations

import copy
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import yaml

from hvrouter.config import Config, example_text, parse_config
from hvrouter.model import Link, Port

# A network with room for 10k ports, for the scale tests.
WIDE: dict[str, Any] = {
    "tables": {"public": 90, "local-out": 100},
    "rules": {"default_table": "public", "local_out_table": "local-out"},
    "networks": [
        {
            "name": "wide",
            "table": "public",
            "ipv4": {"subnet": "198.18.0.0/15", "gateway": "198.18.0.1"},
            "ipv6": {"mode": "prefix-per-port", "prefix": "2001:db8:1000::/36"},
        }
    ],
    "fabric": {"uplinks": [{"interface": "eth0", "table": "public"}]},
}

# A shared-prefix network: /128 host routes plus proxy NDP on the uplinks.
SHARED: dict[str, Any] = {
    "tables": {"public": 90, "private": 20, "local-out": 100},
    "networks": [
        {
            "name": "lan",
            "table": "public",
            "ipv4": {"subnet": "198.51.100.0/24", "gateway": "198.51.100.254"},
            "ipv6": {"mode": "shared-prefix", "prefix": "2001:db8:aa::/64"},
        }
    ],
    "fabric": {
        "uplinks": [
            {"interface": "eth0", "table": "public"},
            {"interface": "eth1", "table": "private"},
            {"interface": "eth2", "table": "public", "proxy_ndp": False},
            {"interface": "eth3", "table": "public"},  # never in the links map
        ]
    },
}


def example_dict() -> dict[str, Any]:
    data = yaml.safe_load(example_text())
    assert isinstance(data, dict)
    return data


def make_config(data: dict[str, Any]) -> Config:
    return parse_config(copy.deepcopy(data))


def mac_of(i: int) -> str:
    return "52:54:00:" + ":".join(f"{b:02x}" for b in i.to_bytes(3, "big"))


def wide_port(i: int) -> Port:
    """Port number i of the `wide` network: unique name, MAC, /32 and /64."""
    return Port(
        name=f"tap{i}",
        mac=mac_of(i + 1),
        network="wide",
        ipv4=(str(IPv4Address(int(IPv4Address("198.18.1.0")) + i)),),
        ipv6=(f"{IPv6Address(int(IPv6Address('2001:db8:1000::')) + (i << 64))}/64",),
    )


def links_for(ports: list[Port], up: bool = True, first_index: int = 100) -> dict[str, Link]:
    return {p.name: Link(first_index + i, p.name, up) for i, p in enumerate(ports)}
