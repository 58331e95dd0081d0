"""The safety net of seed 001 and the anti-spoofing of issue 5 as two
nftables tables owned by hvrouter, `table inet hvrouter` and `table arp
hvrouter`: rendered whole from the config and the ports, applied together as
one atomic transaction, sharing one fingerprint.

    text = render(cfg, ports)          # pure; ports only add set elements and counters
    check(text)                        # nft -c, FirewallError on rejection
    apply(text)                        # one transaction: old tables or new, never none
    sync(cfg, ports)                   # apply only if the kernel's tables differ
    counters()                         # {port: {"packets": n, "bytes": m}} spoofing drops

What the tables do: forwarding only tap<->uplink and tap<->tap (the rest is
logged at a limited rate and dropped); per port, frames must carry the
port's MAC and IPv4/IPv6 sources must be the port's (DHCP, DAD/MLD/RS from
the unspecified address excepted), ARP may only claim the port's MAC and
addresses, every drop counted per port; strict reverse-path filtering of VM
sources in both families behind that; no BGP/BFD from VMs to anything, no
ICMP redirects in or out, BFD untracked by conntrack, DNAT of the ports'
public addresses.
"""

from .apply import DEFAULT_NFT, apply, check, counters, observe, remove, sync
from .errors import FirewallError
from .render import (
    BFD_PORTS,
    BGP_PORT,
    FAMILIES,
    FAMILY,
    LOG_PREFIX,
    TABLE,
    counter_name,
    fingerprint,
    port_of_counter,
    render,
    v6_target,
)

__all__ = [
    "BFD_PORTS",
    "BGP_PORT",
    "DEFAULT_NFT",
    "FAMILIES",
    "FAMILY",
    "LOG_PREFIX",
    "TABLE",
    "FirewallError",
    "apply",
    "check",
    "counter_name",
    "counters",
    "fingerprint",
    "observe",
    "port_of_counter",
    "remove",
    "render",
    "sync",
    "v6_target",
]
