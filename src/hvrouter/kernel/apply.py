"""Apply planned operations: one batched netlink conversation per call."""

from __future__ import annotations

from dataclasses import dataclass

from ..model import Address, DevConf, NeighParms, Op, ProxyNeigh, Route, Rule, Sysctl
from . import codec, sysctl
from .netlink import NetlinkSocket


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
    if isinstance(obj, NeighParms):
        return codec.neighparms_msg(obj)
    raise TypeError(f"cannot encode {obj!r}")


def apply(nl: NetlinkSocket, ops: list[Op], proto: int) -> list[OpFailure]:
    failures: list[OpFailure] = []
    batch: list[Op] = []
    for op in ops:
        if isinstance(op.obj, Sysctl):
            try:
                sysctl.write(op.obj)
            except OSError as exc:
                failures.append(OpFailure(op, f"{exc.strerror} writing /proc/sys/{op.obj.name.replace('.', '/')}"))
        else:
            batch.append(op)
    for f in nl.batch([encode(op, proto) for op in batch]):
        failures.append(OpFailure(batch[f.index], f.describe()))
    return failures
