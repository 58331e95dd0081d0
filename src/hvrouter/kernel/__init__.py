"""The only package that talks to the kernel (netlink, /proc/sys).

Everything above it deals in model objects; errno values become readable
failures here and nowhere else.
"""

from .apply import OpFailure, apply
from .netlink import NetlinkSocket
from .observe import observe, read_links

__all__ = ["NetlinkSocket", "OpFailure", "apply", "observe", "read_links"]
