"""`make demo`: bring the seed lab up (or check it if it is already up),
print the reachability matrix and the BGP sessions, and say how to look
around and how to tear it down."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..bird import Birdc
from ..errors import HvrouterError
from . import topology as T
from .manage import Lab, render_matrix

HV = str(Path(sys.executable).parent / "hvrouter")


def main() -> int:
    lab = Lab("hvlab")
    t0 = time.monotonic()
    if lab.exists():
        print("lab hvlab is already up: checking it (remove it with `hvrouter lab down`)")
        result = lab.wait_converged(60)
    else:
        print("building the seed lab: 2 fabrics, 2 route reflectors, 3 hypervisors, 4 VMs, an edge router")
        result = lab.up()
        print(f"lab up and converged in {time.monotonic() - t0:.1f} s\n")
    print(render_matrix(result))
    print("\nBGP sessions (MP-BGP, IPv4 + IPv6 channels in each):")
    for node in T.ROUTERS:
        try:
            sessions = Birdc(Path(lab.files(node.name).bird_sock)).bgp_sessions()
        except HvrouterError as exc:
            print(f"  {node.name}: {exc}")
            continue
        cells = ", ".join(f"{s['name']} {s.get('bgp_state', s.get('state'))}" for s in sessions)
        print(f"  {node.name:<5} {cells}")
    print(f"""
Look around (every command runs inside the node's namespace, with its config):
  {HV} lab exec hv1 -- birdc show route table t_public4   # BIRD's view on hv1 (t_public6, t_private4...)
  {HV} lab exec hv1 -- hvrouter status               # ports and BGP/BFD sessions
  {HV} lab exec hv1 -- ip route show table 90        # the public table: host routes, ECMP via 2 fabrics
  {HV} lab exec vm1 -- ping -c3 192.0.2.53           # a VM reaching the internet host
  {HV} lab exec hv1 -- hvrouter overlay status       # the VXLAN overlay: registry, FDB, misses
  {HV} lab exec vm1 -- ping -c3 198.19.250.4         # vm1 to vm4 over the overlay (VMs' eth1)
  {HV} lab up --topology vxlan --mode unicast-dynamic-nd --name vx   # seed 002's lab, any mode
  {HV} lab check                                     # the matrix again ({HV} lab check --json)
Tear it down:
  {HV} lab down""")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
