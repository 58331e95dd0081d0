"""Set-difference between desired and observed kernel objects. Pure."""

from __future__ import annotations

from ..model import KINDS, OWNED_KINDS, ObjectSet, Op

_ORDER = {k: i for i, k in enumerate(KINDS)}
# Deletions go first and in reverse dependency order, so a moved address or
# route never collides with its old self.
_DELETE_ORDER = {"proxy": 0, "rule": 1, "route": 2, "address": 3}


def diff(desired: ObjectSet, observed: ObjectSet) -> list[Op]:
    deletes: list[Op] = []
    changes: list[Op] = []
    obs = observed.objects
    for key, want in desired.objects.items():
        have = obs.get(key)
        if have is None:
            if key[0] in OWNED_KINDS:
                changes.append(Op("add", want, desired.owners[key]))
            else:
                changes.append(Op("set", want, desired.owners[key]))
        elif have != want:
            if key[0] in OWNED_KINDS:
                changes.append(Op("replace", want, desired.owners[key], old=have))
            else:
                changes.append(Op("set", want, desired.owners[key], old=have))
    for key, have in obs.items():
        if key[0] in OWNED_KINDS and key not in desired.objects:
            deletes.append(Op("delete", have, observed.owners.get(key, "stale")))
    deletes.sort(key=lambda op: _DELETE_ORDER[op.kind])
    changes.sort(key=lambda op: _ORDER[op.kind])
    return deletes + changes
