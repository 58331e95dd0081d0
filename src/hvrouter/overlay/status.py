"""`hvrouter overlay status`: the agent's view (written by the daemon every
second) plus the registry content, read directly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import Config
from .agent import STATUS_NAME


def overlay_status(cfg: Config, state_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"networks": [
        {"name": n.name, "vni": n.vni, "mode": n.mode, "local": str(n.local), "vxlan": n.vxlan_name, "bridge": n.bridge_name}
        for n in cfg.overlay.networks
    ]}
    try:
        out["agent"] = json.loads((state_dir / STATUS_NAME).read_text())
    except (OSError, ValueError):
        out["agent"] = None
    try:
        from .registry import open_registry

        reg = open_registry(cfg.overlay.registry)
        try:
            snap = reg.snapshot()
        finally:
            reg.close()
        out["registry"] = {
            "revision": snap.revision,
            "members": sorted(({"vni": m.vni, "vtep": m.vtep, "owner": m.owner} for m in snap.members),
                              key=lambda d: (d["vni"], d["owner"])),
            "entries": sorted(({"vni": e.vni, "mac": e.mac, "ips": list(e.ips), "vtep": e.vtep, "owner": e.owner}
                               for e in snap.entries), key=lambda d: (d["vni"], d["mac"], d["owner"])),
        }
    except Exception as exc:  # noqa: BLE001 - status must show what is wrong, not crash
        out["registry"] = {"error": str(exc)}
    return out


def render_status(st: dict[str, Any]) -> str:
    lines = []
    for n in st["networks"]:
        lines.append(f"network {n['name']}: vni {n['vni']} mode {n['mode']} local {n['local']} ({n['vxlan']} in {n['bridge']})")
    agent = st.get("agent")
    if agent is None:
        lines.append("agent: not running (no status file)")
    else:
        c = agent.get("controller", {})
        lines.append(
            f"agent {agent.get('owner')}: registry {agent.get('registry')} revision {agent.get('revision')}, "
            f"{agent.get('peers', 0)} peer(s), {agent.get('remote_entries', 0)} remote entr(ies), "
            f"static fdb {agent.get('static_fdb', 0)}, static neigh {agent.get('static_neigh', 0)}"
        )
        lines.append(
            "misses: " + ", ".join(f"{k} {c.get(k, 0)}" for k in (
                "misses", "resolved", "unknown", "negative_hits", "rate_limited", "installed", "overruns"))
        )
        for key in ("pending", "failures"):
            if agent.get(key):
                lines.append(f"{key}: {', '.join(agent[key])}")
        for key in ("registry_error", "apply_error", "evpn_error"):
            if agent.get(key):
                lines.append(f"{key}: {agent[key]}")
    reg = st.get("registry", {})
    if "error" in reg:
        lines.append(f"registry: {reg['error']}")
    else:
        lines.append(f"registry: {len(reg.get('members', []))} member(s), {len(reg.get('entries', []))} entr(ies)")
        for e in reg.get("entries", []):
            lines.append(f"  vni {e['vni']:<8} {e['mac']}  {e['vtep']:<24} {e['owner']:<10} {' '.join(e['ips'])}")
    return "\n".join(lines)
