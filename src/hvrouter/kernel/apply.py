"""Apply planned operations: one batched netlink conversation per call."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..model import Address, DevConf, Op, ProxyNeigh, Route, Rule, Sysctl
from . import codec, sysctl
from .netlink import NetlinkSocket
from .sysctl import proxy_delay_paths


@dataclass(frozen=True, slots=True)
class OpFailure:
    op: Op
    reason: str


def encode(op: Op, proto: int) -> codec.Request:
    obj = op.obj
    delete = op.action == "delete"
    flags = codec.REPLACE if op.action == "replace" else codec.ADD
    if isinstance(obj, Route):
        return codec.route_msg(obj, proto, flags, delete)
    if isinstance(obj, Address):
        return codec.address_msg(obj, proto, flags, delete)
    if isinstance(obj, Rule):
        return codec.rule_msg(obj, proto, delete)
    if isinstance(obj, ProxyNeigh):
        return codec.proxy_msg(obj, proto, delete)
    if isinstance(obj, DevConf):
        return codec.devconf_msg(obj)
    raise TypeError(f"cannot encode {obj!r}")


def _write(op: Op, settings: list[Sysctl], failures: list[OpFailure]) -> None:
    for s in settings:
        try:
            sysctl.write(s)
        except OSError as exc:
            failures.append(OpFailure(op, f"{exc.strerror} writing /proc/sys/{s.name}"))
            return


def apply(nl: NetlinkSocket, ops: list[Op], proto: int, timings: dict[str, float] | None = None) -> list[OpFailure]:
    """Apply ops in order; failures are per object and never stop the rest.
    Consecutive ops of one kind form one batch, timed into `timings`."""
    failures: list[OpFailure] = []
    start = 0
    while start < len(ops):
        kind = ops[start].kind
        stop = start
        while stop < len(ops) and ops[stop].kind == kind:
            stop += 1
        t = time.perf_counter()
        _apply_run(nl, ops[start:stop], proto, failures)
        if timings is not None:
            key = f"apply_{kind}_s"
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - t
        start = stop
    return failures


def _apply_run(nl: NetlinkSocket, ops: list[Op], proto: int, failures: list[OpFailure]) -> None:
    batch: list[Op] = []
    for op in ops:
        obj = op.obj
        if isinstance(obj, Sysctl):
            _write(op, [obj], failures)
            continue
        if isinstance(obj, DevConf) and obj.ifname:
            # See DevConf: proxy_delay rides along with the devconf values.
            _write(op, [Sysctl(p, "0") for p in proxy_delay_paths(obj.ifname)], failures)
        batch.append(op)
    for f in nl.batch([encode(op, proto) for op in batch]):
        failures.append(OpFailure(batch[f.index], f.describe()))
