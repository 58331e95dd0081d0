"""Planning: desired kernel objects from config + ports + the links that exist."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest
from factories import links_for, mac_of, wide_port

from hvrouter.config import Config
from hvrouter.kernel.sysctl import proxy_delay_paths
from hvrouter.model import (
    AF_INET,
    AF_INET6,
    DEVCONF_NAMES,
    RT_SCOPE_LINK,
    RT_SCOPE_UNIVERSE,
    RTN_UNICAST,
    Address,
    DevConf,
    KernelObject,
    Link,
    Port,
    ProxyNeigh,
    Route,
    Rule,
    Sysctl,
)
from hvrouter.plan.desired import Desired, plan, plan_rules

TAP = 7
T = TypeVar("T")


def public_port(name: str = "tap0", mac: str = "52:54:00:00:00:01") -> Port:
    return Port(name, mac, "public", ("203.0.113.10",), ("2001:db8:cb00:7101::/64",))


def owned_by(d: Desired, name: str) -> set[KernelObject]:
    return {d.objects.objects[k] for k, owner in d.objects.owners.items() if owner == name}


def of_type(objs: set[KernelObject], kind: type[T]) -> set[T]:
    return {o for o in objs if isinstance(o, kind)}


def rules(d: Desired) -> list[Rule]:
    return sorted(o for o in d.objects.objects.values() if isinstance(o, Rule))


@pytest.fixture
def ready(example_cfg: Config) -> Desired:
    port = public_port()
    return plan(example_cfg, [port], {port.name: Link(TAP, port.name, True)})


def test_port_is_ready(ready: Desired) -> None:
    assert ready.port_state == {"tap0": "ready"}


def test_ipv4_host_route_and_gateway(ready: Desired) -> None:
    objs = owned_by(ready, "tap0")
    assert Route(AF_INET, 90, "203.0.113.10/32", 0, RTN_UNICAST, RT_SCOPE_LINK, TAP) in objs
    assert of_type(objs, Address) == {Address(AF_INET, TAP, "203.0.113.254", 32, RT_SCOPE_LINK)}


def test_ipv6_prefix_via_eui64_link_local(ready: Desired) -> None:
    route = Route(
        AF_INET6, 90, "2001:db8:cb00:7101::/64", 1024, RTN_UNICAST, RT_SCOPE_UNIVERSE, TAP, "fe80::5054:ff:fe00:1", 4
    )
    assert route in owned_by(ready, "tap0")


def test_gateway_fe80_1_is_a_router_proxy_entry(ready: Desired) -> None:
    assert of_type(owned_by(ready, "tap0"), ProxyNeigh) == {ProxyNeigh(AF_INET6, TAP, "fe80::1", True)}


def test_tap_devconf(ready: Desired) -> None:
    (devconf,) = of_type(owned_by(ready, "tap0"), DevConf)
    # The tap's name rides along: applying the DevConf also writes its proxy_delay.
    assert (devconf.ifindex, devconf.ifname) == (TAP, "tap0")
    assert {DEVCONF_NAMES[k]: v for k, v in devconf.values} == {"proxy_arp": 1, "forwarding": 1, "rp_filter": 1}


def test_rp_filter_follows_config(example_cfg: Config) -> None:
    cfg = example_cfg.model_copy(update={"tap": example_cfg.tap.model_copy(update={"rp_filter": 2})})
    d = plan(cfg, [public_port()], {"tap0": Link(TAP, "tap0", True)})
    (devconf,) = of_type(owned_by(d, "tap0"), DevConf)
    assert {DEVCONF_NAMES[k]: v for k, v in devconf.values}["rp_filter"] == 2


def test_proxy_delay_is_written_per_tap() -> None:
    # Runs unprivileged: tap0 does not exist here, so only the IPv4 path is certain.
    assert "net/ipv4/neigh/tap0/proxy_delay" in proxy_delay_paths("tap0")


def test_host_sysctls(example_cfg: Config) -> None:
    sysctls = of_type(set(plan(example_cfg, [], {}).objects.objects.values()), Sysctl)
    assert {
        Sysctl("net/ipv4/conf/all/forwarding", "1"),
        Sysctl("net/ipv6/conf/all/forwarding", "1"),
        Sysctl("net/ipv4/conf/all/send_redirects", "0"),
        Sysctl("net/ipv4/conf/default/send_redirects", "0"),
        Sysctl("net/ipv6/conf/all/proxy_ndp", "1"),
    } <= sysctls


def test_port_objects_are_exactly_these(ready: Desired) -> None:
    kinds = sorted(type(o).__name__ for o in owned_by(ready, "tap0"))
    assert kinds == ["Address", "DevConf", "ProxyNeigh", "Route", "Route"]


@pytest.mark.parametrize(
    ("links", "state"),
    [({}, "pending: tap missing"), ({"tap0": Link(TAP, "tap0", False)}, "pending: tap down")],
)
def test_pending_port_produces_nothing(example_cfg: Config, links: dict[str, Link], state: str) -> None:
    d = plan(example_cfg, [public_port()], links)
    assert d.port_state == {"tap0": state}
    assert owned_by(d, "tap0") == set()
    assert d.objects.objects == plan(example_cfg, [], {}).objects.objects


def test_port_of_unknown_network(example_cfg: Config) -> None:
    port = Port("tap0", "52:54:00:00:00:01", "gone")
    d = plan(example_cfg, [port], links_for([port]))
    assert d.port_state["tap0"].startswith("error:")
    assert owned_by(d, "tap0") == set()


def test_rules_are_in_the_reserved_range(example_cfg: Config) -> None:
    found = rules(plan(example_cfg, [], {}))
    assert found and found == sorted(plan_rules(example_cfg))
    prio = example_cfg.rules.priority
    assert all(prio <= r.priority < prio + 100 for r in found)


def example_port(i: int) -> Port:
    return Port(f"tap{i}", mac_of(i + 1), "public", (f"203.0.113.{i + 1}",))


@pytest.mark.parametrize(
    ("cfg_name", "make", "many"), [("example_cfg", example_port, 200), ("wide_cfg", wide_port, 1000)]
)
def test_rule_count_does_not_grow_with_ports(
    request: pytest.FixtureRequest, cfg_name: str, make: Callable[[int], Port], many: int
) -> None:
    cfg: Config = request.getfixturevalue(cfg_name)
    one, lots = [make(0)], [make(i) for i in range(many)]
    d1, dn = plan(cfg, one, links_for(one)), plan(cfg, lots, links_for(lots))
    assert all(s == "ready" for s in dn.port_state.values())
    assert rules(d1) == rules(dn)
    host_routes = [o for o in dn.objects.objects.values() if isinstance(o, Route) and o.oif]
    assert len(host_routes) >= many  # the ports really were planned


# -- shared-prefix network -------------------------------------------------------

UPLINKS = {
    "eth0": Link(2, "eth0", True),  # public
    "eth1": Link(3, "eth1", True),  # private
    "eth2": Link(4, "eth2", True),  # public, proxy_ndp off
}


def test_shared_prefix_routes_and_uplink_proxies(shared_cfg: Config) -> None:
    port = Port("vm1", "52:54:00:00:00:01", "lan", (), ("2001:db8:aa::10/128",))
    d = plan(shared_cfg, [port], {**UPLINKS, "vm1": Link(TAP, "vm1", True)})
    objs = owned_by(d, "vm1")
    routes6 = {o for o in of_type(objs, Route) if o.family == AF_INET6}
    assert routes6 == {Route(AF_INET6, 90, "2001:db8:aa::10/128", 1024, RTN_UNICAST, RT_SCOPE_UNIVERSE, TAP)}
    assert of_type(objs, ProxyNeigh) == {
        ProxyNeigh(AF_INET6, TAP, "fe80::1", True),
        ProxyNeigh(AF_INET6, 2, "2001:db8:aa::10", False),  # eth0 only
    }


def test_shared_prefix_ipv4_gateway_on_tap(shared_cfg: Config) -> None:
    port = Port("vm1", "52:54:00:00:00:01", "lan", ("198.51.100.7",))
    d = plan(shared_cfg, [port], {"vm1": Link(TAP, "vm1", True)})
    objs = owned_by(d, "vm1")
    assert Address(AF_INET, TAP, "198.51.100.254", 32, RT_SCOPE_LINK) in objs
    assert Route(AF_INET, 90, "198.51.100.7/32", 0, RTN_UNICAST, RT_SCOPE_LINK, TAP) in objs


def test_extra_prefixes_are_routed_to_the_port(example_cfg: Config) -> None:
    port = Port("tap0", "52:54:00:00:00:01", "public", extra=("192.0.2.53/32", "2001:db8:ffff::53/128"))
    objs = owned_by(plan(example_cfg, [port], {"tap0": Link(TAP, "tap0", True)}), "tap0")
    assert Route(AF_INET, 90, "192.0.2.53/32", 0, RTN_UNICAST, RT_SCOPE_LINK, TAP) in objs
    assert (
        Route(AF_INET6, 90, "2001:db8:ffff::53/128", 1024, RTN_UNICAST, RT_SCOPE_UNIVERSE, TAP, "fe80::5054:ff:fe00:1", 4)
        in objs
    )
