"""Putting the table in the kernel: one `nft -f` transaction, a check that is
the same transaction aborted, and a cheap look at what the kernel holds.

Every function takes the nft command line (default `nft`), so a caller can
prefix it (`ip netns exec NS nft`) to work in another network namespace.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..config import Config
from ..model import Port
from .errors import FirewallError
from .render import FAMILY, TABLE, fingerprint, render

log = logging.getLogger(__name__)

DEFAULT_NFT: tuple[str, ...] = ("nft",)
TIMEOUT = 60.0
WHAT = f"table {FAMILY} {TABLE}"


def _run(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except FileNotFoundError:
        raise FirewallError(" ".join(cmd), f"{cmd[0]}: not found (install nftables)") from None
    except subprocess.TimeoutExpired:
        raise FirewallError(" ".join(cmd), f"no answer in {TIMEOUT:.0f} s") from None


def _message(out: subprocess.CompletedProcess[str], *paths: tuple[Path, str]) -> str:
    text = out.stderr.strip() or out.stdout.strip() or f"exit code {out.returncode}"
    # nft names our temporary files; the caller knows no such files.
    for path, name in paths:
        text = text.replace(str(path), name)
    return text


def _transaction(text: str, nft: Sequence[str], check_only: bool) -> None:
    """Replace the table by `text` in one transaction (or only check it).

    The table is created if missing (a no-op otherwise) so that `delete`
    always has something to delete (nft 1.0.6 has no `destroy`), then
    deleted, then defined anew: nft commits the three at once, so packets
    see the old table or the new one, never none. Deleting rather than
    flushing also drops set elements and chains the new text no longer has.
    The table text is included from its own file so that nft's line numbers
    in an error are the rendered text's."""
    with tempfile.TemporaryDirectory(prefix="hvrouter-fw-") as tmp:
        table_file = Path(tmp) / "hvrouter.nft"
        table_file.write_text(text)
        tx_file = Path(tmp) / "transaction.nft"
        tx_file.write_text(f'{WHAT} {{}}\ndelete {WHAT}\ninclude "{table_file}"\n')
        cmd = [*nft, *(["-c"] if check_only else []), "-f", str(tx_file)]
        out = _run(cmd)
        if out.returncode != 0:
            verb = "check" if check_only else "apply"
            raise FirewallError(
                f"nft: {verb} {WHAT}",
                _message(out, (table_file, "<hvrouter table>"), (tx_file, "<transaction>")),
            )


def apply(text: str, nft: Sequence[str] = DEFAULT_NFT) -> None:
    """Make `text` (a whole `table inet hvrouter`) the kernel's table,
    atomically. Raises FirewallError with nft's message; nothing changes then."""
    _transaction(text, nft, check_only=False)


def check(text: str, nft: Sequence[str] = DEFAULT_NFT) -> None:
    """The transaction `apply` would run, validated by the kernel and aborted
    (`nft -c`; needs CAP_NET_ADMIN). Raises FirewallError with nft's message."""
    _transaction(text, nft, check_only=True)


def observe(nft: Sequence[str] = DEFAULT_NFT) -> str | None:
    """The fingerprint of the kernel's table; None when there is no table,
    "" when there is one without our fingerprint (made or edited by hand)."""
    # Terse listing: rules and the comment, not the thousands of elements.
    cmd = [*nft, "-t", "list", "table", FAMILY, TABLE]
    out = _run(cmd)
    if out.returncode != 0:
        if "No such file or directory" in out.stderr:
            return None
        raise FirewallError(" ".join(cmd), _message(out))
    return fingerprint(out.stdout) or ""


def sync(
    cfg: Config,
    ports: Sequence[Port],
    dry_run: bool = False,
    *,
    nft: Sequence[str] = DEFAULT_NFT,
    force: bool = False,
) -> bool:
    """Apply the table rendered now unless the kernel already holds it.

    True when it was applied (or, with dry_run, would be). The comparison is
    by fingerprint only: a rule edited by hand under an unchanged comment is
    not seen; `force` re-applies regardless (a periodic safety net)."""
    text = render(cfg, ports)
    want = fingerprint(text)
    have = observe(nft)
    if have == want and not force:
        return False
    reason = "forced" if have == want else "missing" if have is None else "not ours" if have == "" else "changed"
    if dry_run:
        log.info("firewall: would apply %s (%s)", WHAT, reason)
        return True
    apply(text, nft)
    log.info("firewall: applied %s (%s, %s)", WHAT, reason, want)
    return True


def remove(nft: Sequence[str] = DEFAULT_NFT) -> bool:
    """Delete our table (uninstall). False when there was none."""
    if observe(nft) is None:
        return False
    cmd = [*nft, "delete", "table", FAMILY, TABLE]
    out = _run(cmd)
    if out.returncode != 0:
        raise FirewallError(" ".join(cmd), _message(out))
    return True
