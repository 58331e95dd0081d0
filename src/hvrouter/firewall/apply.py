"""Putting the tables in the kernel: one `nft -f` transaction for both, a
check that is the same transaction aborted, a cheap look at what the kernel
holds, and the per-port anti-spoofing counters read back.

Every function takes the nft command line (default `nft`), so a caller can
prefix it (`ip netns exec NS nft`) to work in another network namespace.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..config import Config
from ..model import Port
from .errors import FirewallError
from .render import FAMILIES, FAMILY, TABLE, LinkLocal, fingerprint, input_fingerprint, port_of_counter, render

log = logging.getLogger(__name__)

DEFAULT_NFT: tuple[str, ...] = ("nft",)
TIMEOUT = 60.0
WHAT = f"tables {FAMILY} {TABLE} and arp {TABLE}"
# Counter values, by (family, counter name): (packets, bytes).
Counts = Mapping[tuple[str, str], tuple[int, int]]
_TABLE_LINE = re.compile(rf"^table (\w+) {TABLE} \{{")
_COUNTER_LINE = re.compile(r"^(\s+counter )(\S+) \{ packets 0 bytes 0 \}$")


def _run(cmd: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False)
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
    """Replace both tables by `text` in one transaction (or only check it).

    Each table is created if missing (a no-op otherwise) so that `delete`
    always has something to delete (nft 1.0.6 has no `destroy`), then
    deleted, then defined anew: nft commits it all at once, so packets see
    the old tables or the new ones, never none and never one old, one new.
    Deleting rather than flushing also drops set elements, counters and
    chains the new text no longer has. The text is included from its own
    file so that nft's line numbers in an error are the rendered text's."""
    with tempfile.TemporaryDirectory(prefix="hvrouter-fw-") as tmp:
        table_file = Path(tmp) / "hvrouter.nft"
        table_file.write_text(text)
        tx_file = Path(tmp) / "transaction.nft"
        replace = "".join(f"table {family} {TABLE} {{}}\ndelete table {family} {TABLE}\n" for family in FAMILIES)
        tx_file.write_text(f'{replace}include "{table_file}"\n')
        cmd = [*nft, *(["-c"] if check_only else []), "-f", str(tx_file)]
        out = _run(cmd)
        if out.returncode != 0:
            verb = "check" if check_only else "apply"
            raise FirewallError(
                f"nft: {verb} {WHAT}",
                _message(out, (table_file, "<hvrouter table>"), (tx_file, "<transaction>")),
            )


def _read_counts(nft: Sequence[str]) -> dict[tuple[str, str], tuple[int, int]]:
    """Our named counters, in both tables: one `nft -j list counters` (every
    table's; ours are picked by table name and family)."""
    cmd = [*nft, "-j", "list", "counters"]
    out = _run(cmd)
    if out.returncode != 0:
        raise FirewallError(" ".join(cmd), _message(out))
    try:
        items = json.loads(out.stdout)["nftables"]
        found: dict[tuple[str, str], tuple[int, int]] = {}
        for item in items:
            c = item.get("counter")
            if c is not None and c["table"] == TABLE and c["family"] in FAMILIES:
                found[(c["family"], c["name"])] = (int(c["packets"]), int(c["bytes"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FirewallError(" ".join(cmd), f"unexpected JSON from nft: {exc!r}") from None
    return found


def _with_counts(text: str, counts: Counts) -> str:
    """`text` with its counter objects starting from `counts` rather than 0,
    and the ports whose count is not 0 in its `spoofers` sets.

    Replacing the tables re-creates the counters: without this every port
    change would zero every port's drop count. Packets dropped between the
    read and the commit are not carried (a few milliseconds)."""
    lines = text.split("\n")
    family = ""
    carried: dict[str, list[str]] = {}
    for i, line in enumerate(lines):
        if line.startswith("table "):
            m = _TABLE_LINE.match(line)
            family = m.group(1) if m else ""
            continue
        m = _COUNTER_LINE.match(line)
        if m is None:
            continue
        packets, nbytes = counts.get((family, m.group(2)), (0, 0))
        port = port_of_counter(m.group(2))
        if (packets or nbytes) and port is not None:
            lines[i] = f"{m.group(1)}{m.group(2)} {{ packets {packets} bytes {nbytes} }}"
            carried.setdefault(family, []).append(f'"{port}"')
    family = ""
    in_spoofers = False
    for i, line in enumerate(lines):
        if line.startswith("table "):
            m = _TABLE_LINE.match(line)
            family = m.group(1) if m else ""
        elif line == "    set spoofers {":
            in_spoofers = True
        elif in_spoofers and line == "    }":
            in_spoofers = False
            if carried.get(family):
                lines[i] = f"        elements = {{ {', '.join(carried[family])} }}\n{line}"
    return "\n".join(lines)


def _has_spoofers(nft: Sequence[str]) -> bool:
    """Whether a port of ours has a drop counted (set `spoofers` of either
    table not empty): listing one set is cheap, listing counters is not."""
    for family in FAMILIES:
        cmd = [*nft, "-j", "list", "set", family, TABLE, "spoofers"]
        out = _run(cmd)
        if out.returncode != 0:
            if "No such file or directory" in out.stderr:
                continue  # no table, or one without the set: nothing to carry
            raise FirewallError(" ".join(cmd), _message(out))
        try:
            found = [item["set"] for item in json.loads(out.stdout)["nftables"] if "set" in item]
        except (ValueError, KeyError, TypeError) as exc:
            raise FirewallError(" ".join(cmd), f"unexpected JSON from nft: {exc!r}") from None
        if any(s.get("elem") for s in found):
            return True
    return False


def apply(text: str, nft: Sequence[str] = DEFAULT_NFT, *, keep_counters: bool = True) -> None:
    """Make `text` (the whole `table inet hvrouter` and `table arp hvrouter`)
    the kernel's tables, atomically. The per-port drop counters keep their
    values across the replacement unless `keep_counters` is false. Raises
    FirewallError with nft's message; nothing changes then."""
    if keep_counters and _has_spoofers(nft):
        text = _with_counts(text, _read_counts(nft))
    _transaction(text, nft, check_only=False)


def check(text: str, nft: Sequence[str] = DEFAULT_NFT) -> None:
    """The transaction `apply` would run, validated by the kernel and aborted
    (`nft -c`; needs CAP_NET_ADMIN). Raises FirewallError with nft's message."""
    _transaction(text, nft, check_only=True)


def _observe_table(family: str, nft: Sequence[str]) -> str | None:
    """The fingerprint of one table: None if there is no such table, ""
    if it is not ours (made by hand, or by a version without the set)."""
    # The empty set `fingerprint` carries it: listing one set fetches only
    # that set, listing the table would fetch all its elements and counters.
    cmd = [*nft, "list", "set", family, TABLE, "fingerprint"]
    out = _run(cmd)
    if out.returncode == 0:
        return fingerprint(out.stdout) or ""
    if "No such file or directory" not in out.stderr:
        raise FirewallError(" ".join(cmd), _message(out))
    # No such set: is there a table at all? (Rare: first start, hand-made.)
    cmd = [*nft, "-t", "list", "table", family, TABLE]
    out = _run(cmd)
    if out.returncode == 0:
        return ""
    if "No such file or directory" in out.stderr:
        return None
    raise FirewallError(" ".join(cmd), _message(out))


def observe(nft: Sequence[str] = DEFAULT_NFT) -> str | None:
    """The fingerprint the kernel's tables share; None when neither table
    exists, "" when one is missing or lacks our fingerprint (made or edited
    by hand) or the two differ."""
    prints = [_observe_table(family, nft) for family in FAMILIES]
    if all(p is None for p in prints):
        return None
    first = prints[0]
    return first if first and all(p == first for p in prints) else ""


def counters(nft: Sequence[str] = DEFAULT_NFT) -> dict[str, dict[str, int]]:
    """Anti-spoofing drops per port: {port: {"packets": n, "bytes": m}}, IP
    (table inet hvrouter) and ARP (table arp hvrouter) together, for every
    port in the tables (present tap or not). {} when there are no tables.

    The counters live in named counter objects, `counter_name(port)`; they
    keep their values when the tables are replaced (see `apply`), and start
    from 0 when a port is added or the tables were deleted."""
    out: dict[str, dict[str, int]] = {}
    for (_, name), (packets, nbytes) in sorted(_read_counts(nft).items()):
        port = port_of_counter(name)
        if port is None:
            continue
        entry = out.setdefault(port, {"packets": 0, "bytes": 0})
        entry["packets"] += packets
        entry["bytes"] += nbytes
    return out


_memo: list[tuple[Config, tuple[Port, ...], LinkLocal, str]] = []


def _render_memo(cfg: Config, ports: Sequence[Port], link_local: LinkLocal) -> str:
    """`render`, remembering the last call: every reconcile pass syncs, and
    a pass that changed nothing renders the same ports again (0.15 s at 10k
    ports, against 3 ms to compare them)."""
    key = tuple(ports)
    if _memo and _memo[0][0] is cfg and _memo[0][2] == link_local and _memo[0][1] == key:
        return _memo[0][3]
    text = render(cfg, key, link_local=link_local)
    _memo[:] = [(cfg, key, link_local, text)]
    return text


def sync(
    cfg: Config,
    ports: Sequence[Port],
    dry_run: bool = False,
    *,
    nft: Sequence[str] = DEFAULT_NFT,
    force: bool = False,
    link_local: LinkLocal = "eui64",
) -> bool:
    """Apply the tables rendered now unless the kernel already holds them.

    True when they were applied (or, with dry_run, would be). The comparison
    is by fingerprint only: a rule edited by hand under an unchanged comment
    is not seen; `force` re-applies regardless (a periodic safety net).
    `link_local`: see `render`."""
    want = input_fingerprint(cfg, ports, link_local)
    have = observe(nft)
    if have == want and not force:
        return False
    text = _render_memo(cfg, ports, link_local)
    reason = "forced" if have == want else "missing" if have is None else "not ours" if have == "" else "changed"
    if dry_run:
        log.info("firewall: would apply %s (%s)", WHAT, reason)
        return True
    apply(text, nft)
    log.info("firewall: applied %s (%s, %s)", WHAT, reason, want)
    return True


def remove(nft: Sequence[str] = DEFAULT_NFT) -> bool:
    """Delete our tables (uninstall). False when there were none."""
    if observe(nft) is None:
        return False
    # Both in one transaction, whichever of the two exists.
    script = "".join(f"table {family} {TABLE} {{}}\ndelete table {family} {TABLE}\n" for family in FAMILIES)
    out = _run([*nft, "-f", "-"], stdin=script)
    if out.returncode != 0:
        raise FirewallError(f"nft: delete {WHAT}", _message(out))
    return True
