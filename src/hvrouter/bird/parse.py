"""Parsers for `birdc -v` output (BIRD has no machine-readable output).

With -v, birdc prints BIRD's reply codes: a line `NNNN-text` (more follows)
or `NNNN text` (last line) opens a reply line, and lines starting with spaces
continue the previous code. The codes tell the protocol table rows (1002)
from their details (1006) and errors (8000-9999) from answers, so the
parsers never guess from the wording. Pure functions, tested against output
captured from BIRD 2.0.12.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# birdc -v indents continuation lines by 5 columns (4 for the code, 1 for
# the separator), so continued text keeps the indentation BIRD gave it.
_CODE_RE = re.compile(r"^(\d{4})([ -])(.*)$")
_CONT = 5

CODE_WELCOME = 1
CODE_PROTOCOL_ROW = 1002
CODE_PROTOCOL_DETAIL = 1006
CODE_BFD_SESSIONS = 1020
CODE_STATUS_UP = 13
CODES_RECONFIGURED = {3, 4, 5, 17}  # done, in progress, queued, queue replaced
FIRST_ERROR_CODE = 8000
# "12:00:00.123", "2024-05-01", "2024-05-01 12:00:00" (timeformat iso long)
_SINCE = r"\d{4}-\d{2}-\d{2}(?: \d{2}:\d{2}:\d{2}(?:\.\d+)?)?|\d{2}:\d{2}:\d{2}(?:\.\d+)?"
_ROW_RE = re.compile(rf"^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+({_SINCE})\s*(.*)$")
_ROUTES_RE = re.compile(r"(\d+) (imported|filtered|exported|preferred)")
_BFD_ROW_RE = re.compile(rf"^(\S+)\s+(\S+)\s+(\S+)\s+({_SINCE})\s+(\S+)\s+(\S+)\s*$")


@dataclass(frozen=True)
class ReplyLine:
    code: int
    text: str


def parse_reply(output: str) -> list[ReplyLine]:
    """Split `birdc -v` output into (code, text) lines; drops the welcome line."""
    lines: list[ReplyLine] = []
    code = 0
    for raw in output.splitlines():
        m = _CODE_RE.match(raw)
        if m:
            code = int(m.group(1))
            text = m.group(3)
        elif raw.startswith(" "):
            text = raw[_CONT:]
        elif not raw.strip():
            continue
        else:
            # Not BIRD's protocol (birdc's own messages): keep it, code 0.
            code, text = 0, raw
        if code != CODE_WELCOME:
            lines.append(ReplyLine(code, text.rstrip()))
    return lines


def errors(lines: list[ReplyLine]) -> list[str]:
    return [ln.text for ln in lines if ln.code >= FIRST_ERROR_CODE]


@dataclass(frozen=True)
class ProtocolState:
    """One row of `show protocols`."""

    name: str
    proto: str  # BGP, Kernel, Pipe, BFD, Device, Static
    table: str  # "---" for multi-channel protocols
    state: str  # up, start, down, stop, flush
    since: str
    info: str  # BGP: Established, Active, Passive...; may carry the last error

    @property
    def up(self) -> bool:
        return self.state == "up"


def _row(text: str) -> ProtocolState | None:
    m = _ROW_RE.match(text.strip())
    if m is None:
        return None
    name, proto, table, state, since, info = m.groups()
    # Info pads its columns (state, then the last error): one space is enough.
    return ProtocolState(name, proto, table, state, since, " ".join(info.split()))


def parse_protocols(lines: list[ReplyLine]) -> list[ProtocolState]:
    out = []
    for ln in lines:
        if ln.code == CODE_PROTOCOL_ROW:
            row = _row(ln.text)
            if row is not None:
                out.append(row)
    return out


@dataclass
class _Detail:
    row: ProtocolState
    attrs: dict[str, str] = field(default_factory=dict)
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)


def _details(lines: list[ReplyLine]) -> list[_Detail]:
    """`show protocols all`: each row with its top-level attributes and channels."""
    out: list[_Detail] = []
    channel: dict[str, Any] | None = None
    for ln in lines:
        if ln.code == CODE_PROTOCOL_ROW:
            row = _row(ln.text)
            if row is not None:
                out.append(_Detail(row))
            channel = None
            continue
        if ln.code != CODE_PROTOCOL_DETAIL or not out:
            continue
        text = ln.text.strip()
        if text.startswith("Channel "):
            channel = out[-1].channels.setdefault(text.split()[1], {})
            continue
        key, sep, value = text.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if channel is not None:
            channel.setdefault(key, value)
        else:
            out[-1].attrs.setdefault(key, value)
    return out


def _channel(raw: dict[str, Any]) -> dict[str, Any]:
    counts = {kind: int(n) for n, kind in _ROUTES_RE.findall(raw.get("Routes", ""))}
    return {
        "state": raw.get("State", ""),
        "table": raw.get("Table", ""),
        "imported": counts.get("imported", 0),
        "filtered": counts.get("filtered", 0),
        "exported": counts.get("exported", 0),
        "preferred": counts.get("preferred", 0),
        # "::" means BIRD found no address to announce as next hop (e.g. no
        # global IPv6 address on the session's interface): routes of that
        # channel are withdrawn, however many it says it exported.
        "next_hop": raw.get("BGP Next hop", ""),
    }


def parse_bgp_sessions(lines: list[ReplyLine]) -> list[dict[str, Any]]:
    """BGP sessions from `show protocols all`.

    A route reflector's dynamic protocol (the one with a `Neighbor range`) is
    only a template for the sessions it spawns and is left out: it never
    becomes Established and would read as a session down.
    """
    out = []
    for d in _details(lines):
        if d.row.proto != "BGP" or "Neighbor range" in d.attrs:
            continue
        info_state = d.row.info.split()[0] if d.row.info else ""
        out.append(
            {
                "name": d.row.name,
                "state": d.row.state,
                "bgp_state": d.attrs.get("BGP state", info_state or "Down"),
                "neighbor": d.attrs.get("Neighbor address", "").split("%")[0],
                "since": d.row.since,
                "info": d.row.info,
                "last_error": d.attrs.get("Last error", ""),
                "channels": {name: _channel(raw) for name, raw in sorted(d.channels.items())},
            }
        )
    return out


def parse_bfd_sessions(lines: list[ReplyLine]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    proto = ""
    for ln in lines:
        if ln.code != CODE_BFD_SESSIONS:
            continue
        text = ln.text.strip()
        if text.endswith(":") and " " not in text:
            proto = text[:-1]
            continue
        m = _BFD_ROW_RE.match(text)
        if m is None:
            continue  # the column header
        address, interface, state, since, interval, timeout = m.groups()
        out.append(
            {
                "protocol": proto,
                "address": address,
                "interface": interface,
                "state": state,
                "since": since,
                "interval_s": float(interval),
                "timeout_s": float(timeout),
            }
        )
    return out


def is_up_status(lines: list[ReplyLine]) -> bool:
    return any(ln.code == CODE_STATUS_UP for ln in lines)
