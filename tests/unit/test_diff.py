"""Set-difference reconcile: add / replace / delete owned objects, set settings."""

from __future__ import annotations

from hvrouter.model import (
    AF_INET,
    AF_INET6,
    RT_SCOPE_LINK,
    RTN_UNICAST,
    Address,
    DevConf,
    KernelObject,
    ObjectSet,
    Op,
    ProxyNeigh,
    Route,
    Rule,
    Sysctl,
)
from hvrouter.plan.diff import diff

ROUTE = Route(AF_INET, 90, "203.0.113.10/32", 0, RTN_UNICAST, RT_SCOPE_LINK, 7)
ADDR = Address(AF_INET, 7, "203.0.113.254", 32, RT_SCOPE_LINK)
RULE = Rule(AF_INET, 20099, 90)
PROXY = ProxyNeigh(AF_INET6, 7, "fe80::1", True)
DEVCONF = DevConf(7, "tap0", ((1, 1), (3, 1), (8, 1)))
SYSCTL = Sysctl("net/ipv4/conf/all/forwarding", "1")


def objset(*objs: KernelObject, owner: str = "tap0") -> ObjectSet:
    s = ObjectSet()
    for o in objs:
        s.add(o, owner)
    return s


def actions(ops: list[Op]) -> list[tuple[str, KernelObject]]:
    return [(op.action, op.obj) for op in ops]


ALL = (ROUTE, ADDR, RULE, PROXY, DEVCONF, SYSCTL)


def test_identical_sets_need_nothing() -> None:
    assert diff(objset(*ALL), objset(*ALL)) == []


def test_missing_objects_are_added_and_settings_set() -> None:
    ops = diff(objset(ROUTE, PROXY, DEVCONF, SYSCTL), ObjectSet())
    assert sorted(actions(ops), key=repr) == sorted(
        [("add", ROUTE), ("add", PROXY), ("set", DEVCONF), ("set", SYSCTL)], key=repr
    )
    assert all(op.owner == "tap0" and op.old is None for op in ops)


def test_changed_route_is_replaced() -> None:
    moved = ROUTE._replace(oif=8)
    (op,) = diff(objset(moved), objset(ROUTE))
    assert (op.action, op.obj, op.old) == ("replace", moved, ROUTE)


def test_changed_setting_is_set() -> None:
    strict_off = DEVCONF._replace(values=((1, 1), (3, 1), (8, 0)))
    (op,) = diff(objset(strict_off), objset(DEVCONF))
    assert (op.action, op.obj, op.old) == ("set", strict_off, DEVCONF)


def test_owned_object_not_desired_is_deleted() -> None:
    stale = ROUTE._replace(dst="203.0.113.99/32")
    ops = diff(objset(ROUTE), objset(ROUTE, stale, owner="stale-owner"))
    assert actions(ops) == [("delete", stale)]


def test_every_owned_kind_is_deleted() -> None:
    ops = diff(ObjectSet(), objset(ROUTE, ADDR, RULE, PROXY))
    assert {op.obj for op in ops} == {ROUTE, ADDR, RULE, PROXY}
    assert {op.action for op in ops} == {"delete"}


def test_settings_are_never_deleted() -> None:
    assert diff(ObjectSet(), objset(DEVCONF, SYSCTL)) == []


def test_deletes_come_first_in_dependency_order() -> None:
    desired = objset(ROUTE._replace(dst="203.0.113.11/32"), ADDR._replace(ifindex=8), SYSCTL, PROXY._replace(ifindex=8))
    observed = objset(ROUTE, ADDR, RULE, PROXY)
    ops = diff(desired, observed)
    kinds = [(op.action, op.kind) for op in ops]
    assert kinds == [
        ("delete", "proxy"),
        ("delete", "rule"),
        ("delete", "route"),
        ("delete", "address"),
        ("set", "sysctl"),
        ("add", "address"),
        ("add", "route"),
        ("add", "proxy"),
    ]
