"""The safety net of seed 001 as one nftables table owned by hvrouter,
`table inet hvrouter`: rendered whole from the config and the ports, applied
as one atomic transaction.

    text = render(cfg, ports)          # pure; ports only add set elements
    check(text)                        # nft -c, FirewallError on rejection
    apply(text)                        # one transaction: old table or new, never none
    sync(cfg, ports)                   # apply only if the kernel's table differs

What the table does: forwarding only tap<->uplink and tap<->tap (the rest is
logged at a limited rate and dropped), strict reverse-path filtering of VM
sources in both families, no BGP/BFD from VMs to anything, no ICMP redirects
in or out, BFD untracked by conntrack, DNAT of the ports' public addresses.
"""

from .apply import DEFAULT_NFT, apply, check, observe, remove, sync
from .errors import FirewallError
from .render import BFD_PORTS, BGP_PORT, FAMILY, LOG_PREFIX, TABLE, fingerprint, render, v6_target

__all__ = [
    "BFD_PORTS",
    "BGP_PORT",
    "DEFAULT_NFT",
    "FAMILY",
    "LOG_PREFIX",
    "TABLE",
    "FirewallError",
    "apply",
    "check",
    "fingerprint",
    "observe",
    "remove",
    "render",
    "sync",
    "v6_target",
]
