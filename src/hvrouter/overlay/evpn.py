"""Mode `evpn`: BGP EVPN through FRR (zebra + bgpd), one instance per VTEP.

hvrouter creates the bridge and the vxlan device (nolearning; bridge port
learning off, neigh_suppress on); FRR's zebra discovers them by itself,
bgpd announces type-3 (IMET: "flood VNI n to me") and type-2 (MAC, MAC+IP)
routes through a route reflector, and zebra installs what the others
announce: remote MACs as `extern_learn` FDB entries on the vxlan device and
one 00:00:00:00:00:00 flood entry per remote VTEP. We never touch those.

An instance keeps everything under `directory/name`: the configuration,
pid files, vty sockets, the zebra API socket and the logs, so several
instances run side by side in different network namespaces (the lab, the
tests). Nothing goes to /etc/frr or /var/run/frr, and the packaged FRR
service is not involved. FRR itself still keeps a crash-log directory
/var/tmp/frr/<daemon>.<pid> while a daemon runs (compiled in; removed on a
clean exit).

Daemons run as root with group frrvty: FRR insists that its user belongs to
the vty group, and root avoids every permission question about a directory
the `frr` user may not even be able to traverse (pytest's tmp dirs are 0700).
They are started in the caller's network namespace, or in `netns` through
`ip netns exec`.

FRR 8.4 EVPN has IPv4 VTEPs only: for a vxlan device with an IPv6 local
address zebra shows `Local VTEP IP: 0.0.0.0`, yet bgpd still announces a
type-3 route for that VNI with an IPv4 originator (measured): remote VTEPs
would flood to the wrong place. config.py rejects such networks. The BGP
sessions themselves may run over IPv6.
"""

from __future__ import annotations

import grp
import ipaddress
import json
import logging
import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..bird.files import install
from ..config import EvpnConfig
from ..errors import HvrouterError, InputError, Problem
from ..templating import environment

log = logging.getLogger(__name__)

Role = Literal["vtep", "route-reflector"]
TEMPLATES: dict[str, str] = {"vtep": "frr-vtep.conf.j2", "route-reflector": "frr-rr.conf.j2"}
DAEMONS = ("zebra", "bgpd")  # start order; stopped in reverse
RR_GROUP = "RR"  # route reflectors (the VTEP's peers, or an RR's fellow reflectors)
CLIENTS_GROUP = "VTEPS"  # an RR's clients
# Seconds between connection attempts to a peer that is not up yet (FRR's
# default is 120 s, the datacenter profile 10 s): a VTEP started before its
# reflector should not wait long. A listening RR does not connect at all.
CONNECT_RETRY = 1
# Milliseconds bgpd waits before its first UPDATE to a newly established peer
# (to merge peers coming up together into one update group). FRR's default,
# 1000 ms growing with the peer count, is a whole second added at every hop
# (VTEP -> RR -> VTEP) after a session comes up; measured in the lab: type-3
# routes everywhere 1.1 s after Established by default, 0.2 s with 100 ms.
# Subgroups that start apart are still merged later by bgpd.
COALESCE_MS = 100
# FRR accepts 100 dynamic neighbours by default; an RR serves hundreds of
# hypervisors from one range.
LISTEN_LIMIT = 5000
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$")

SBINDIR = Path("/usr/lib/frr")
VTYSH = "vtysh"
VTY_GROUP = "frrvty"
TIMEOUT = 10.0  # seconds for one vtysh / frr-reload run, and for a daemon to answer
STOP_TIMEOUT = 5.0
SUN_PATH_MAX = 107  # sockaddr_un.sun_path minus the terminating NUL


class FrrError(HvrouterError):
    """An FRR instance could not be started, driven or stopped; names the
    instance directory, the command and FRR's own message."""


class FrrConfigError(FrrError):
    """`vtysh -C` rejected a configuration; `message` is what vtysh said."""

    def __init__(self, message: str, text: str = "") -> None:
        self.message = message
        self.text = text
        super().__init__(f"FRR rejected the configuration: {message}")


# -- rendering ---------------------------------------------------------------------


IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


def render(
    role: Role,
    evpn: EvpnConfig,
    hostname: str,
    local: str | None = None,
    clients: list[str] | None = None,
) -> str:
    """The FRR configuration (zebra + bgpd, integrated file) of a VTEP or an RR.

    vtep: one iBGP session per `evpn.peers` (the reflectors), l2vpn evpn with
    `advertise-all-vni`; `local` (this VTEP's underlay address) is the
    session's source.
    route-reflector: `clients` are prefixes (`198.19.0.0/24`: `bgp listen
    range`, the config does not grow with the VTEPs) or addresses (one
    explicit neighbour each), all route-reflector clients; `evpn.peers` are
    fellow reflectors (plain iBGP, not clients); `local` is the source of
    the sessions this RR opens (explicit clients, fellow reflectors).

    Raises InputError listing every problem.
    """
    where = f"FRR config ({role} {hostname})"
    problems: list[Problem] = []
    if role not in TEMPLATES:
        raise InputError(where, [Problem("role", role, f"one of {', '.join(TEMPLATES)}")])
    if not HOSTNAME_RE.match(hostname):
        problems.append(Problem("hostname", hostname, "a host name (letters, digits, '.', '-'; at most 63)"))
    local_ip: IPAddr | None = None
    if local is not None:
        try:
            local_ip = ipaddress.ip_address(local)
        except ValueError:
            problems.append(Problem("local", local, "an IPv4 or IPv6 address"))
    peers = list(evpn.peers)
    seen: set[IPAddr] = set()
    for i, peer in enumerate(peers):
        if peer in seen:
            problems.append(Problem(f"evpn.peers[{i}]", str(peer), "a peer listed once"))
        seen.add(peer)
    ranges: list[IPNet] = []
    neighbors: list[IPAddr] = []
    if role == "vtep":
        if not peers:
            problems.append(Problem("evpn.peers", [], "at least one route reflector (role vtep)"))
        if clients:
            problems.append(Problem("clients", clients, "no clients (only a route reflector has clients)"))
    else:
        if not clients:
            problems.append(Problem("clients", clients, "at least one client range or address (role route-reflector)"))
        for i, text in enumerate(clients or []):
            try:
                if "/" in text:
                    ranges.append(ipaddress.ip_network(text, strict=True))
                    continue
                addr = ipaddress.ip_address(text)
            except ValueError as exc:
                expected = "a prefix (listen range) or an address (neighbour)"
                if "host bits" in str(exc):
                    expected = f"a prefix without host bits, e.g. {ipaddress.ip_interface(text).network}"
                problems.append(Problem(f"clients[{i}]", text, expected))
                continue
            if addr in seen:
                problems.append(Problem(f"clients[{i}]", text, "an address not already a client or a peer"))
            seen.add(addr)
            neighbors.append(addr)
        if len(set(ranges)) != len(ranges):
            problems.append(Problem("clients", clients, "each listen range once"))
    if local_ip is not None:
        # The source must be of the family of every session we open; a
        # listening RR accepts on whatever address the client dialled.
        for what, addrs in (("evpn.peers", peers), ("clients", neighbors)):
            for addr in addrs:
                if addr.version != local_ip.version:
                    problems.append(Problem(what, str(addr), f"an IPv{local_ip.version} address like local {local}"))
    if problems:
        raise InputError(where, problems)
    context: dict[str, Any] = {
        "hostname": hostname,
        "asn": evpn.asn,
        "router_id": str(evpn.router_id),
        "local": str(local_ip) if local_ip is not None else None,
        "group": RR_GROUP,
        "clients_group": CLIENTS_GROUP,
        "connect_retry": CONNECT_RETRY,
        "coalesce_ms": COALESCE_MS,
        "listen_limit": LISTEN_LIMIT,
        "peers": [str(p) for p in peers],
        "ranges": [str(r) for r in ranges],
        "neighbors": [str(n) for n in neighbors],
    }
    return environment("hvrouter.overlay").get_template(TEMPLATES[role]).render(context)


def zebra_part(config_text: str) -> str:
    """The global lines of an integrated config (before the first `router`):
    what zebra reads at start. zebra knows no BGP command and would log
    every `router bgp` line as an error."""
    out: list[str] = []
    for line in config_text.splitlines(keepends=True):
        if line.startswith("router "):
            break
        out.append(line)
    return "".join(out)


def _run(cmd: list[str], timeout: float, what: str) -> subprocess.CompletedProcess[str]:
    """Run an FRR program; FrrError when it is missing or does not answer."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise FrrError(f"{cmd[0]}: not found (install frr)") from None
    except subprocess.TimeoutExpired:
        raise FrrError(f"{what}: no answer in {timeout:g} s") from None


def _message(out: subprocess.CompletedProcess[str]) -> str:
    return out.stderr.strip() or out.stdout.strip() or f"exit code {out.returncode}"


def check(config_text: str, vtysh: str = VTYSH) -> None:
    """Parse `config_text` with `vtysh -C` (every daemon's grammar, no daemon
    needed); raise FrrConfigError with vtysh's message. (`bgpd -C` exits 0
    even on unknown commands, so it is no check.)"""
    with tempfile.TemporaryDirectory(prefix="hvrouter-frr-") as tmp:
        path = Path(tmp) / "frr.conf"
        path.write_text(config_text)
        # vtysh reads <config_dir>/vtysh.conf: ours, not /etc/frr's.
        (Path(tmp) / "vtysh.conf").write_text("")
        cmd = [vtysh, "--config_dir", tmp, "-C", "-f", str(path)]
        out = _run(cmd, TIMEOUT, " ".join(cmd))
    if out.returncode != 0:
        raise FrrConfigError(_message(out).replace(str(path), "<config>"), config_text)


# -- running instances -------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    address: str
    state: str  # Established, Active, Connect, OpenSent...
    uptime_ms: int
    prefixes_received: int
    connections: int  # times established since bgpd started (a flap counts)


class Frr:
    """One FRR instance (zebra + bgpd) whose files all live in `directory/name`."""

    def __init__(
        self,
        directory: Path,
        name: str,
        *,
        netns: str | None = None,
        sbindir: Path = SBINDIR,
        vtysh: str = VTYSH,
    ) -> None:
        self.name = name
        self.path = Path(directory) / name
        self.netns = netns
        self.sbindir = sbindir
        self.vtysh_bin = vtysh
        longest = self.path / "zserv.api"
        if len(str(longest).encode()) > SUN_PATH_MAX:
            raise FrrError(
                f"FRR {self.path}: socket path {longest} is longer than {SUN_PATH_MAX} bytes (pick a shorter directory)"
            )

    # files ---------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / "frr.conf"

    def pidfile(self, daemon: str) -> Path:
        return self.path / f"{daemon}.pid"

    def logfile(self, daemon: str) -> Path:
        return self.path / f"{daemon}.log"

    @property
    def zserv(self) -> Path:
        return self.path / "zserv.api"

    def __repr__(self) -> str:
        return f"Frr({str(self.path)!r}, netns={self.netns!r})"

    # life cycle ----------------------------------------------------------------

    def start(self, config_text: str) -> None:
        """Check and write the config, start zebra then bgpd, wait until both
        answer. Both already running: same as apply(). Only one running (the
        other crashed): stopped and both started afresh, since bgpd re-learns
        everything from a new zebra only through a new session."""
        running = [d for d in DAEMONS if self.pid(d) is not None]
        if len(running) == len(DAEMONS):
            self.apply(config_text)
            return
        if running:
            log.warning("%s: only %s running; restarting all", self, ", ".join(running))
            self.stop()
        check(config_text, self.vtysh_bin)
        self._write(config_text)
        try:
            self._spawn("zebra", self.path / "zebra.conf")
            self._spawn("bgpd", self.config_path)
        except BaseException:
            self.stop()
            raise

    def _write(self, config_text: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        # vtysh (and frr-reload through it) reads <config_dir>/vtysh.conf:
        # ours, not /etc/frr's. Our host name goes there too: vtysh adds its
        # own `hostname` (the machine's) to `show running-config`, which
        # frr-reload would then "fix" with `no hostname ...` on every reload.
        install(self.path / "vtysh.conf", "".join(
            line for line in zebra_part(config_text).splitlines(keepends=True) if line.startswith("hostname ")
        ))
        install(self.path / "zebra.conf", zebra_part(config_text))
        # Last: apply() compares against this file, so a failure above is
        # retried on the next call.
        install(self.config_path, config_text)

    def _spawn(self, daemon: str, config: Path) -> None:
        group = VTY_GROUP
        try:
            grp.getgrnam(group)
        except KeyError:
            group = "root"  # FRR built without a vty group
        cmd = [
            str(self.sbindir / daemon), "-d",
            "-u", "root", "-g", group,
            "-f", str(config),
            "-i", str(self.pidfile(daemon)),
            "--vty_socket", str(self.path),
            "-z", str(self.zserv),
            "-P", "0",  # no TCP vty: the unix socket is enough
            "--log", f"file:{self.logfile(daemon)}", "--log-level", "info",
        ]
        if self.netns is not None:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        out = _run(cmd, TIMEOUT, f"FRR {self.path}: starting {daemon}")
        if out.returncode != 0:
            raise FrrError(f"FRR {self.path}: {' '.join(cmd)}: {_message(out)}")
        deadline = time.monotonic() + TIMEOUT
        while True:
            if self.pid(daemon) is not None and self._answers(daemon):
                return
            if time.monotonic() > deadline:
                raise FrrError(
                    f"FRR {self.path}: {daemon} does not answer on {self.path}/{daemon}.vty after {TIMEOUT:g} s "
                    f"(see {self.logfile(daemon)})"
                )
            time.sleep(0.02)

    def _answers(self, daemon: str) -> bool:
        try:
            self.vtysh("show version", daemon=daemon, timeout=2.0)
        except FrrError:
            return False
        return True

    def apply(self, config_text: str) -> bool:
        """Install a new config if it differs from the one in place; True if so.

        bgpd gets the difference through frr-reload (sessions stay up); if
        that fails bgpd is restarted on the new file. zebra is left alone:
        its part is global lines only, and frr-reload on zebra would turn
        `no ip forwarding` (which zebra reports, we do not write) into
        `ip forwarding`.
        """
        try:
            if self.config_path.read_text() == config_text:
                return False
        except FileNotFoundError:
            pass
        check(config_text, self.vtysh_bin)
        self._write(config_text)
        if self.pid("bgpd") is None:
            return True  # nothing to reload: start() will read the new file
        ok, message = self._reload()
        if not ok:
            log.warning("%s: frr-reload failed (%s); restarting bgpd", self, message)
            self._stop_daemon("bgpd")
            self._spawn("bgpd", self.config_path)
        return True

    def _reload(self) -> tuple[bool, str]:
        script = self.sbindir / "frr-reload.py"
        if not script.exists():
            return False, f"{script} not found"
        bindir = os.path.dirname(_which(self.vtysh_bin))
        cmd = [
            str(script), "--reload", "--stdout", "--daemon", "bgpd",
            "--bindir", bindir, "--confdir", str(self.path), "--rundir", str(self.path),
            "--vty_socket", str(self.path), str(self.config_path),
        ]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=6 * TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            return False, f"no answer in {6 * TIMEOUT:g} s"
        if out.returncode != 0:
            return False, (out.stderr.strip() or out.stdout.strip())[-2000:]
        return True, ""

    def alive(self) -> bool:
        """zebra and bgpd of this instance are running (by their pid files)."""
        return all(self.pid(d) is not None for d in DAEMONS)

    def pid(self, daemon: str) -> int | None:
        """The PID of `daemon` if it runs, is not a zombie, and is ours: its
        command line names our pid file (a recycled PID is someone else)."""
        try:
            pid = int(self.pidfile(daemon).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return None
        if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
            return None
        if str(self.pidfile(daemon)).encode() not in cmdline:
            return None
        return pid

    def stop(self) -> None:
        """Stop bgpd then zebra by PID (SIGTERM, then SIGKILL after a while)."""
        for daemon in reversed(DAEMONS):
            self._stop_daemon(daemon)

    def _stop_daemon(self, daemon: str) -> None:
        pid = self.pid(daemon)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.pid(daemon) is not None:
            if time.monotonic() > deadline:
                log.warning("%s: %s (pid %d) ignored SIGTERM; killing it", self, daemon, pid)
                os.kill(pid, signal.SIGKILL)
                time.sleep(0.1)
                break
            time.sleep(0.02)
        self.pidfile(daemon).unlink(missing_ok=True)

    # queries -------------------------------------------------------------------

    def vtysh(self, *commands: str, daemon: str | None = None, timeout: float = TIMEOUT) -> str:
        """Run vtysh commands against this instance; their output. vtysh
        talks over the unix sockets in our directory: no namespace needed."""
        cmd = [self.vtysh_bin, "--config_dir", str(self.path), "--vty_socket", str(self.path)]
        if daemon is not None:
            cmd += ["-d", daemon]
        for c in commands:
            cmd += ["-c", c]
        what = f"FRR {self.path}: vtysh {' / '.join(commands)}"
        out = _run(cmd, timeout, what)
        if out.returncode != 0:
            raise FrrError(f"{what}: {_message(out)}")
        return out.stdout

    def vtysh_json(self, command: str, daemon: str | None = None) -> Any:
        text = self.vtysh(command, daemon=daemon)
        try:
            return json.loads(text) if text.strip() else {}
        except ValueError:
            raise FrrError(f"FRR {self.path}: vtysh {command}: not JSON: {text[:200]!r}") from None

    def peers(self) -> dict[str, Peer]:
        return parse_summary(self.vtysh_json("show bgp l2vpn evpn summary json", daemon="bgpd"))

    def routes(self) -> dict[str, Any]:
        return parse_routes(self.vtysh_json("show bgp l2vpn evpn route json", daemon="bgpd"))

    def vnis(self) -> dict[int, dict[str, Any]]:
        return parse_vnis(
            self.vtysh_json("show evpn vni json", daemon="zebra"),
            self.vtysh_json("show evpn vni detail json", daemon="zebra"),
        )

    def status(self) -> dict[str, Any]:
        """Peers and their state, EVPN route counts, and the VNIs zebra knows."""
        if not self.alive():
            return {"name": self.name, "directory": str(self.path), "running": False}
        peers = self.peers()
        routes = self.routes()
        return {
            "name": self.name,
            "directory": str(self.path),
            "running": True,
            "pids": {d: self.pid(d) for d in DAEMONS},
            "peers": {a: vars(p) for a, p in peers.items()},
            "established": sum(1 for p in peers.values() if p.state == "Established"),
            **routes,
            "vnis": {str(k): v for k, v in self.vnis().items()},
        }


def _which(program: str) -> str:
    if "/" in program:
        return program
    for d in os.environ.get("PATH", "/usr/bin:/bin").split(":"):
        candidate = os.path.join(d, program)
        if os.access(candidate, os.X_OK):
            return candidate
    raise FrrError(f"{program}: not found in PATH (install frr)")


# -- parsing vtysh JSON (pure) -------------------------------------------------------


def parse_summary(data: Any) -> dict[str, Peer]:
    """`show bgp l2vpn evpn summary json` -> peers by address. Without a BGP
    instance or an l2vpn session FRR answers `{}`."""
    peers: dict[str, Any] = data.get("peers", {}) if isinstance(data, dict) else {}
    out: dict[str, Peer] = {}
    for address, p in sorted(peers.items()):
        out[address] = Peer(
            address=address,
            state=str(p.get("state", "unknown")),
            uptime_ms=int(p.get("peerUptimeMsec", 0)),
            prefixes_received=int(p.get("pfxRcd", 0) or 0),
            connections=int(p.get("connectionsEstablished", 0)),
        )
    return out


_PREFIX_RE = re.compile(r"^\[(\d)\]:")


def parse_routes(data: Any) -> dict[str, Any]:
    """`show bgp l2vpn evpn route json` -> counts of type-2 and type-3 routes
    (distinct prefixes over every route distinguisher), the MACs of the
    type-2 routes and the originators of the type-3 routes."""
    type2: set[tuple[str, str]] = set()
    type3: set[tuple[str, str]] = set()
    macs: set[str] = set()
    originators: set[str] = set()
    if isinstance(data, dict):
        for rd, table in data.items():
            if not isinstance(table, dict):
                continue  # numPrefix, numPaths
            for prefix, entry in table.items():
                m = _PREFIX_RE.match(prefix)
                if not m or not isinstance(entry, dict):
                    continue
                fields = [f.strip("[]") for f in prefix.split("]:[")]
                if m.group(1) == "2" and len(fields) >= 4:
                    type2.add((rd, prefix))
                    macs.add(fields[3].lower())
                elif m.group(1) == "3" and len(fields) >= 4:
                    type3.add((rd, prefix))
                    originators.add(fields[3])
    return {
        "type2": len(type2),
        "type3": len(type3),
        "type2_macs": sorted(macs),
        "type3_originators": sorted(originators, key=_ip_key),
    }


def _ip_key(text: str) -> tuple[int, int]:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return (9, 0)
    return (ip.version, int(ip))


def parse_vnis(summary: Any, detail: Any) -> dict[int, dict[str, Any]]:
    """`show evpn vni json` (dict by VNI) and `show evpn vni detail json`
    (a list in 8.4, where `numRemoteVteps` oddly holds the list) -> per VNI:
    vxlan device, bridge (SVI), local VTEP address, remote VTEPs, MACs."""
    out: dict[int, dict[str, Any]] = {}
    if isinstance(summary, dict):
        for key, v in summary.items():
            if not isinstance(v, dict):
                continue
            vni = int(v.get("vni") or key)
            out[vni] = {
                "type": v.get("type"),
                "vxlan": v.get("vxlanIf"),
                "macs": int(v.get("numMacs", 0)),
                "neighbours": int(v.get("numArpNd", 0)),
                "remote_vteps": sorted(v.get("remoteVteps", []), key=_ip_key),
            }
    details = detail if isinstance(detail, list) else list(detail.values()) if isinstance(detail, dict) else []
    for d in details:
        if not isinstance(d, dict) or "vni" not in d:
            continue
        entry = out.setdefault(int(d["vni"]), {"type": d.get("type"), "vxlan": d.get("vxlanInterface"),
                                                "macs": int(d.get("numMacs", 0)), "neighbours": 0,
                                                "remote_vteps": []})
        entry["bridge"] = d.get("sviInterface")
        entry["local_vtep"] = d.get("vtepIp")
    return dict(sorted(out.items()))
