"""Make the kernel match an OverlayDesired (devices, bridge ports, static
FDB and ARP/ND entries). Only permanent entries on managed devices are
removed: dynamic ones belong to the miss controller, learnt ones to the
kernel, extern-learnt ones to FRR."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from ..errors import HvrouterError
from ..kernel import NetlinkSocket
from ..kernel import vxlan as kv
from .types import Fdb, Neigh, OverlayDesired

log = logging.getLogger("hvrouter.overlay")


@dataclass
class ApplyResult:
    changes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # attachments whose interface does not exist yet
    devices: dict[int, str] = field(default_factory=dict)  # vxlan ifindex -> name
    fdb: int = 0  # remote FDB entries on managed devices after the pass
    neigh: int = 0


def _fdb_key(f: Fdb) -> tuple[str, str, bool]:
    return (f.mac, f.dst, f.router)


def apply(
    nl: NetlinkSocket, desired: OverlayDesired, stale_devices: Sequence[str] = (), entries: bool = True
) -> ApplyResult:
    """`entries=False`: devices and ports only, FDB/ARP/ND left as they are
    (an agent that has not read the registry yet must not flush what its
    predecessor programmed)."""
    res = ApplyResult()

    def step(what: str, change: Callable[[], bool]) -> None:
        """One kernel change; a failure is recorded and the pass goes on."""
        try:
            if change():
                res.changes.append(what)
        except (HvrouterError, OSError) as exc:
            res.failures.append(f"{what}: {exc}")

    for name in stale_devices:
        step(f"removed device {name}", partial(kv.delete_link, nl, name))
    for br in desired.bridges:
        step(f"bridge {br.name}", partial(kv.ensure_bridge, nl, br))
    for vx in desired.vxlans:
        step(f"vxlan {vx.name} (vni {vx.vni}, local {vx.local})", partial(kv.ensure_vxlan, nl, vx))
    links = kv.link_indexes(nl)  # one dump, not one request per interface
    res.devices = {links[vx.name]: vx.name for vx in desired.vxlans if vx.name in links}
    for port in desired.ports:
        if port.interface not in links:
            res.pending.append(port.interface)
        else:
            step(f"port {port.interface} in {port.bridge}", partial(kv.ensure_port, nl, port))
    # Detached interfaces leave the bridge (only ours: the overlay bridges).
    wanted: dict[str, set[str]] = {}
    for port in desired.ports:
        wanted.setdefault(port.bridge, set()).add(port.interface)
    for br in desired.bridges:
        try:
            members = kv.bridge_members(nl, br.name)
        except (HvrouterError, OSError) as exc:
            res.failures.append(f"bridge {br.name} members: {exc}")
            continue
        for member in members:
            if member not in wanted.get(br.name, set()):
                step(f"port {member} out of {br.name}", partial(kv.release_port, nl, member))
    present = set(res.devices.values())
    index = {name: idx for idx, name in res.devices.items()}
    for dev in sorted(desired.managed & present) if entries else ():
        _entries(nl, dev, index[dev], desired, res)
    return res


def _entries(nl: NetlinkSocket, dev: str, ifindex: int, desired: OverlayDesired, res: ApplyResult) -> None:
    want_fdb = {_fdb_key(f): f for f in desired.fdb if f.device == dev}
    have_fdb = {
        _fdb_key(f): f for f, flags in kv.read_fdb_flags(nl, dev) if f.permanent and not flags & kv.NTF_EXT_LEARNED
    }
    want_neigh = {(n.ip, n.mac): n for n in desired.neigh if n.device == dev}
    have_neigh = (
        {(n.ip, n.mac): n for n in kv.read_neigh(nl, dev) if n.permanent} if dev in desired.neigh_managed else {}
    )
    requests = []
    labels = []
    for key in have_fdb.keys() - want_fdb.keys():
        requests.append(kv.fdb_request(have_fdb[key], delete=True, ifindex=ifindex))
        labels.append(f"del fdb {key[0]} dst {key[1]} dev {dev}")
    for nkey in have_neigh.keys() - want_neigh.keys():
        requests.append(kv.neigh_request(have_neigh[nkey], delete=True, ifindex=ifindex))
        labels.append(f"del neigh {nkey[0]} lladdr {nkey[1]} dev {dev}")
    for key in want_fdb.keys() - have_fdb.keys():
        requests.append(kv.fdb_request(want_fdb[key], ifindex=ifindex))
        labels.append(f"fdb {key[0]} dst {key[1]}{' router' if key[2] else ''} dev {dev}")
    for nkey in want_neigh.keys() - have_neigh.keys():
        requests.append(kv.neigh_request(want_neigh[nkey], ifindex=ifindex))
        labels.append(f"neigh {nkey[0]} lladdr {nkey[1]} dev {dev}")
    if requests:
        failures = nl.batch(requests)
        bad = {f.index for f in failures}
        for f in failures:
            res.failures.append(f"{labels[f.index]}: {f.describe()}")
        ok = [label for i, label in enumerate(labels) if i not in bad]
        if len(ok) <= 20:
            res.changes.extend(ok)
        else:
            res.changes.append(f"{len(ok)} entries on {dev}")
    res.fdb += len(want_fdb)
    res.neigh += len(want_neigh)


def write(nl: NetlinkSocket, entries: list[Fdb | Neigh], delete: bool = False, index: dict[str, int] | None = None) -> int:
    """Controller writes: returns the number of failures (logged at debug).
    `index` (device name -> ifindex) saves a lookup per entry."""
    if not entries:
        return 0
    index = index or {}
    reqs = [
        kv.fdb_request(e, delete, ifindex=index.get(e.device))
        if isinstance(e, Fdb)
        else kv.neigh_request(e, delete, ifindex=index.get(e.device))
        for e in entries
    ]
    failures = nl.batch(reqs)
    for f in failures[:5]:
        log.debug("overlay %s %s: %s", "delete" if delete else "write", entries[f.index], f.describe())
    return len(failures)
