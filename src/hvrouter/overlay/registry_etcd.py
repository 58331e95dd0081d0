"""etcd v3 registry backend, through etcd's JSON gateway (etcd3gw).

Key layout under the configured prefix P:

    P owner/<owner>                   {"owner", "members", "entries"}   the owner record
    P data/<owner>/m/<vni>/<vtep>     {"vtep"}                          a Member
    P data/<owner>/e/<vni>/<mac>      {"ips", "vtep"}                   an Entry

Every key of an owner is attached to the owner's etcd lease, so etcd
deletes all of them (in one revision) when the lease runs out or is
revoked. The owner comes first in the data keys so that a publish reads the
owner's previous keys with one range request and writes only the
difference (one VM added is one put, not 10k).

publish is one transaction (atomic for watchers) when etcd accepts it; etcd
3.4 defaults to 128 operations and 1.5 MiB per request, which 10k entries
exceed, so etcdrun starts etcd with larger limits. Against an etcd with the
defaults, a refused transaction is split into chunks (puts first, deletes
last, the owner record at the very end): watchers may then briefly see the
union of the old and new content, never less than either.

revision is the header revision of the (paginated, revision-pinned) range
read of P data/. wait(revision) opens a watch on P data/ from revision + 1
and returns a new snapshot as soon as any event (or a compaction notice)
arrives.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from binascii import a2b_base64
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import etcd3gw
import requests
from etcd3gw import exceptions as etcd_exc

from .registry import RegistryError, check_owner, validate_publication
from .types import Entry, Member, Snapshot

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 3.0
PAGE_KEYS = 10000
# Fallback chunk limits for an etcd started with its defaults (128 ops,
# 1.5 MiB of protobuf; the JSON we send is larger than the protobuf).
FALLBACK_OPS = 128
FALLBACK_BYTES = 1024 * 1024
_LIMIT_ERRORS = ("too many operations", "too large", "larger than max", "resourceexhausted")

T = TypeVar("T")


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _range_end(prefix: str) -> str:
    raw = prefix.encode()
    return _b64(raw[:-1] + bytes([raw[-1] + 1]))


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


class EtcdRegistry:
    """Registry in etcd at `endpoints` (client URLs, tried in order) under
    `prefix`; each owner's keys live on an etcd lease of `lease` seconds."""

    def __init__(self, endpoints: Sequence[str], prefix: str, lease: int) -> None:
        if not endpoints:
            raise RegistryError("etcd registry: no endpoints configured")
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise RegistryError(f"etcd registry: prefix {prefix!r} must start and end with '/'")
        self.endpoints = tuple(endpoints)
        self.prefix = prefix
        self.lease = int(lease)
        self._data = f"{prefix}data/"
        self._lock = threading.Lock()
        self._clients = [self._make_client(ep) for ep in self.endpoints]
        self._current = 0
        self._leases: dict[str, int] = {}  # owner -> lease id we last used
        self._max_ops: int | None = None  # None: one transaction whatever the size
        self._max_bytes: int | None = None
        self._closed = False
        self._cache: dict[str, tuple[list[Member], list[Entry]]] = {}
        self._cache_rev: int | None = None
        with self._lock:
            self._call("connect", lambda c: c.api_path)  # GET /version: fail fast, name the endpoint

    @staticmethod
    def _make_client(endpoint: str) -> etcd3gw.Etcd3Client:
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise RegistryError(f"etcd registry: endpoint {endpoint!r} is not an http(s)://host:port URL")
        try:
            port = url.port or 2379
        except ValueError as exc:
            raise RegistryError(f"etcd registry: endpoint {endpoint!r}: {exc}") from exc
        return etcd3gw.client(host=url.hostname, port=port, protocol=url.scheme, timeout=REQUEST_TIMEOUT_S)

    # -- plumbing ----------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._current]

    def _call(self, what: str, fn: Callable[[etcd3gw.Etcd3Client], T]) -> T:
        """fn on the current endpoint, failing over to the next ones when an
        endpoint cannot be reached; every failure becomes a RegistryError."""
        if self._closed:
            raise RegistryError(f"etcd registry {self.endpoint}: {what}: used after close()")
        unreachable: list[str] = []
        for i in range(len(self._clients)):
            idx = (self._current + i) % len(self._clients)
            ep = self.endpoints[idx]
            try:
                result = fn(self._clients[idx])
            except (etcd_exc.ConnectionFailedError, etcd_exc.ConnectionTimeoutError,
                    requests.ConnectionError, requests.Timeout) as exc:
                unreachable.append(f"{ep} ({_detail(exc)})")
                continue
            except etcd_exc.Etcd3Exception as exc:
                raise RegistryError(f"etcd registry {ep}: {what} failed: {_detail(exc)}") from exc
            except (requests.RequestException, ValueError, KeyError) as exc:
                raise RegistryError(f"etcd registry {ep}: {what} failed: bad answer: {exc!r}") from exc
            self._current = idx
            return result
        raise RegistryError(f"etcd registry: {what} failed: cannot reach " + "; ".join(unreachable))

    def _range(self, c: etcd3gw.Etcd3Client, prefix: str, at: int | None = None) -> tuple[int, list[dict[str, Any]]]:
        """All keys under `prefix` at one revision (`at`, or the current one): (revision, raw kvs)."""
        start, end = _b64(prefix), _range_end(prefix)
        kvs: list[dict[str, Any]] = []
        revision: int | None = at
        while True:
            payload: dict[str, Any] = {"key": start, "range_end": end, "limit": PAGE_KEYS}
            if revision is not None:
                payload["revision"] = revision  # later pages: the same consistent view
            res = c.post(c.get_url("/kv/range"), json=payload)
            if revision is None:
                revision = int(res["header"]["revision"])
            page = res.get("kvs", [])
            kvs.extend(page)
            if not res.get("more") or not page:
                return revision, kvs
            start = _b64(base64.b64decode(page[-1]["key"]) + b"\0")

    def _refresh(self, c: etcd3gw.Etcd3Client, lease_id: int) -> int:
        return etcd3gw.Lease(lease_id, c).refresh()

    def _recorded_leases(self, c: etcd3gw.Etcd3Client, owner: str) -> list[int]:
        """The lease of the owner record (another process, or an earlier run, published it)."""
        res = c.post(c.get_url("/kv/range"), json={"key": _b64(f"{self.prefix}owner/{owner}")})
        return [int(kv["lease"]) for kv in res.get("kvs", []) if int(kv.get("lease", 0))]

    def _live_lease(self, c: etcd3gw.Etcd3Client, owner: str) -> int | None:
        """The owner's lease, refreshed, or None if it has none alive (or one
        shorter than configured: the config changed, take a new one). The
        lease we used last is tried first: one request per keepalive."""
        tried: set[int] = set()
        cached = self._leases.get(owner)
        if cached is not None:
            tried.add(cached)
            if self._refresh(c, cached) >= self.lease:
                return cached
        for lease_id in self._recorded_leases(c, owner):
            if lease_id not in tried and self._refresh(c, lease_id) >= self.lease:
                return lease_id
        return None

    def _commit(self, c: etcd3gw.Etcd3Client, ops: list[dict[str, Any]]) -> None:
        if self._max_ops is None:
            try:
                c.transaction({"compare": [], "success": ops, "failure": []})
                return
            except etcd_exc.Etcd3Exception as exc:
                if not any(s in _detail(exc).lower() for s in _LIMIT_ERRORS):
                    raise
                log.warning("etcd %s refused a transaction of %d operations (%s); splitting it from now on",
                            self.endpoint, len(ops), _detail(exc))
                self._max_ops, self._max_bytes = FALLBACK_OPS, FALLBACK_BYTES
        max_ops, max_bytes = self._max_ops, self._max_bytes or FALLBACK_BYTES
        chunk: list[dict[str, Any]] = []
        size = 0
        for op in ops:
            n = len(_dumps(op))
            if chunk and (len(chunk) >= max_ops or size + n > max_bytes):
                c.transaction({"compare": [], "success": chunk, "failure": []})
                chunk, size = [], 0
            chunk.append(op)
            size += n
        if chunk:
            c.transaction({"compare": [], "success": chunk, "failure": []})

    # -- Registry -----------------------------------------------------------------

    def publish(self, owner: str, members: Iterable[Member], entries: Iterable[Entry]) -> None:
        ms, es = validate_publication(owner, members, entries)
        base = f"{self._data}{owner}/"
        new: dict[str, str] = {f"{base}m/{m.vni}/{m.vtep}": _dumps({"vtep": m.vtep}) for m in ms}
        new.update(
            (f"{base}e/{e.vni}/{e.mac}", _dumps({"ips": list(e.ips), "vtep": e.vtep}))
            for e in es
        )
        record_key = f"{self.prefix}owner/{owner}"
        record = _dumps({"owner": owner, "members": len(ms), "entries": len(es)})

        def run(c: etcd3gw.Etcd3Client) -> None:
            try:
                attempt(c, self._live_lease(c, owner))
            except etcd_exc.Etcd3Exception as exc:
                if "lease not found" not in _detail(exc):
                    raise
                # Revoked (a withdraw elsewhere) between our refresh and the put: once more, on a new lease.
                attempt(c, None)

        def attempt(c: etcd3gw.Etcd3Client, lease_id: int | None) -> None:
            if lease_id is None:
                lease_id = c.lease(self.lease).id
            _rev, kvs = self._range(c, base)
            old = {base64.b64decode(kv["key"]).decode(): (base64.b64decode(kv.get("value", "")).decode(),
                                                          int(kv.get("lease", 0))) for kv in kvs}
            res = c.post(c.get_url("/kv/range"), json={"key": _b64(record_key)})
            old_record = [(base64.b64decode(kv.get("value", "")).decode(), int(kv.get("lease", 0)))
                          for kv in res.get("kvs", [])]
            puts = [{"request_put": {"key": _b64(k), "value": _b64(v), "lease": lease_id}}
                    for k, v in new.items() if old.get(k) != (v, lease_id)]
            deletes = [{"request_delete_range": {"key": _b64(k)}} for k in old if k not in new]
            ops = puts + deletes
            if ops or old_record != [(record, lease_id)]:
                ops.append({"request_put": {"key": _b64(record_key), "value": _b64(record), "lease": lease_id}})
                self._commit(c, ops)
            self._leases[owner] = lease_id

        with self._lock:
            self._call(f"publish of owner {owner!r} ({len(ms)} members, {len(es)} entries)", run)

    def keepalive(self, owner: str) -> bool:
        check_owner(owner)
        with self._lock:
            lease_id = self._call(f"keepalive of owner {owner!r}", lambda c: self._live_lease(c, owner))
            if lease_id is None:
                self._leases.pop(owner, None)
                return False
            self._leases[owner] = lease_id
            return True

    def withdraw(self, owner: str) -> None:
        check_owner(owner)
        base = f"{self._data}{owner}/"

        def run(c: etcd3gw.Etcd3Client) -> None:
            leases = {*self._recorded_leases(c, owner), *([self._leases[owner]] if owner in self._leases else [])}
            for lease_id in leases:
                try:
                    etcd3gw.Lease(lease_id, c).revoke()  # deletes the owner's keys in one revision
                except etcd_exc.Etcd3Exception as exc:
                    if "not found" not in _detail(exc):
                        raise
            # Keys that somehow lost their lease go too.
            c.transaction({"compare": [], "failure": [], "success": [
                {"request_delete_range": {"key": _b64(base), "range_end": _range_end(base)}},
                {"request_delete_range": {"key": _b64(f"{self.prefix}owner/{owner}")}},
            ]})
            self._leases.pop(owner, None)

        with self._lock:
            self._call(f"withdraw of owner {owner!r}", run)

    def snapshot(self) -> Snapshot:
        with self._lock:
            revision, kvs = self._call("snapshot", lambda c: self._range(c, self._data))
            self._cache = self._parse(kvs)
            self._cache_rev = revision
            return self._from_cache()

    def _from_cache(self) -> Snapshot:
        members = [m for ms, _es in self._cache.values() for m in ms]
        entries = [e for _ms, es in self._cache.values() for e in es]
        return Snapshot(self._cache_rev if self._cache_rev is not None else 0, frozenset(members), frozenset(entries))

    def _parse(self, kvs: list[dict[str, Any]]) -> dict[str, tuple[list[Member], list[Entry]]]:
        """Raw kvs under the data prefix -> owner -> (members, entries)."""
        out: dict[str, tuple[list[Member], list[Entry]]] = {}
        skip = len(self._data)
        keys = [a2b_base64(kv["key"]).decode(errors="replace")[skip:] for kv in kvs]
        raw = [a2b_base64(kv.get("value", "")) for kv in kvs]
        try:  # one decoder call for all values: 30k json.loads calls cost ~3x more
            values: list[Any] = json.loads(b"[" + b",".join(raw) + b"]")
        except ValueError:
            values = [_loads_or_none(r) for r in raw]
        for key, v in zip(keys, values, strict=True):
            parts = key.split("/", 3)  # owner, kind, vni, vtep (member) or mac (entry)
            try:
                if len(parts) != 4:
                    raise ValueError("not <owner>/<kind>/<vni>/<name>")
                owner, kind, vni, name = parts
                members, entries = out.setdefault(owner, ([], []))
                if kind == "m":
                    members.append(Member(int(vni), name, owner))
                elif kind == "e":
                    entries.append(Entry(int(vni), name, tuple(v["ips"]), str(v["vtep"]), owner))
                else:
                    raise ValueError(f"unknown kind {kind!r}")
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("etcd registry %s: ignoring malformed key %s%s: %s", self.endpoint, self._data, key, exc)
        return out

    def wait(self, revision: int, timeout: float) -> Snapshot | None:
        """Watch from `revision`; on a change re-read only the owners whose
        keys changed, at the revision of the newest event seen. A publish or
        a lease expiry touches one owner's keys in one revision, so that read
        is complete; the next watch starts after it, so nothing is skipped.
        Compaction, a cancelled watch or a revision we do not hold: full read."""
        if revision < 0 or revision != self._cache_rev:
            snap = self.snapshot()
            return snap if revision < 0 or snap.revision != revision else None
        deadline = time.monotonic() + timeout
        with self._lock:
            change = self._call("wait", lambda c: self._watch(c, revision, deadline))
            if change is None:
                return None
            owners, newest = change
            if owners is not None and newest > revision:
                try:
                    for owner in owners:
                        parsed = self._parse(self._owner_kvs(owner, newest))
                        if owner in parsed:
                            self._cache[owner] = parsed[owner]
                        else:
                            self._cache.pop(owner, None)
                    self._cache_rev = newest
                    return self._from_cache()
                except RegistryError as exc:  # e.g. that revision was compacted meanwhile
                    log.info("etcd registry %s: incremental read failed (%s); reading everything", self.endpoint, exc)
        snap = self.snapshot()
        return snap if snap.revision != revision else None

    def _owner_kvs(self, owner: str, at: int) -> list[dict[str, Any]]:
        prefix = f"{self._data}{owner}/"
        return self._call(f"read {owner}", lambda c: self._range(c, prefix, at))[1]

    def _watch(
        self, c: etcd3gw.Etcd3Client, revision: int, deadline: float
    ) -> tuple[set[str] | None, int] | None:
        """After `revision`: None at the deadline without a change; else (the
        owners whose keys changed, the newest event's revision), or (None, 0)
        when only a full read will do (error, cancel, compaction)."""
        create: dict[str, Any] = {"key": _b64(self._data), "range_end": _range_end(self._data), "start_revision": revision + 1}
        remaining = max(deadline - time.monotonic(), 0.001)
        resp = c.session.post(c.get_url("/watch"), json={"create_request": create}, stream=True,
                              timeout=(CONNECT_TIMEOUT_S, remaining))
        skip = len(self._data)
        try:
            if resp.status_code != 200:
                raise etcd_exc.Etcd3Exception(resp.text, resp.reason)
            buf = b""
            created = False
            for chunk in resp.iter_content(chunk_size=None):
                buf += chunk
                while b"\n" in buf:
                    line, _nl, buf = buf.partition(b"\n")
                    if not line.strip():
                        continue
                    result = json.loads(line).get("result", {})
                    if not created:
                        if not result.get("created"):
                            return None, 0  # an error or a cancel: re-read
                        if int(result.get("header", {}).get("revision", 0)) < revision:
                            return None, 0  # the store is older than our revision: etcd was recreated
                        created = True
                        continue
                    events = result.get("events") or []
                    if result.get("canceled") or result.get("compact_revision") or not events:
                        return None, 0
                    owners: set[str] = set()
                    newest = 0
                    for ev in events:
                        kv = ev.get("kv", {})
                        owners.add(a2b_base64(kv.get("key", "")).decode(errors="replace")[skip:].split("/", 1)[0])
                        newest = max(newest, int(kv.get("mod_revision", 0)))
                    return owners, newest
            return None
        except (requests.ConnectionError, requests.Timeout) as exc:
            if time.monotonic() >= deadline - 0.05:
                return None  # the read timeout is our own timeout
            raise etcd_exc.ConnectionFailedError(str(exc)) from exc
        finally:
            resp.close()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                for c in self._clients:
                    c.session.close()


def _loads_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _detail(exc: BaseException) -> str:
    """etcd's own message when the gateway gave one, else the exception."""
    text = getattr(exc, "detail_text", None)
    if text:
        try:
            msg = json.loads(text)
            return str(msg.get("message") or msg.get("error") or text)
        except ValueError:
            return str(text)
    return str(exc) or type(exc).__name__
