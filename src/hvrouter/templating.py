"""The Jinja2 environment every generated configuration uses (BIRD, the
nftables table, FRR): templates are files in a package, an undefined
variable is an error, and whitespace control keeps the output readable."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import jinja2


@cache
def environment(package: str, folder: str = "templates") -> jinja2.Environment:
    # Imported here: a no-op reconcile pass only compares the firewall's
    # fingerprint and never renders, and the import alone is ~35 ms of it.
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader(package, folder),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
