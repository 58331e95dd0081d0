"""The responder on its own, for tests and the lab until the daemon runs it:

    python -m hvrouter.services.run --config hvrouter.yaml --ports ports.json \\
        [--stats stats.json] [--poll 0.5]

`ports.json` is a list of ports as `hvrouter port show --json` prints them.
The links of the namespace are re-read every --poll seconds and the ports
file whenever it changes (or on SIGHUP), and the table is updated in place,
as the daemon does after each pass. SIGUSR1 (and exit) writes the counters
to --stats; "ready" goes to stdout once the socket is open.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from ..config import Config, load_config
from ..errors import InputError
from ..kernel import NetlinkSocket, read_links
from ..model import Port
from ..ports import parse_port
from .responder import Responder


def load_ports(path: Path, cfg: Config) -> list[Port]:
    data = json.loads(path.read_text())
    ports = []
    problems = []
    for i, item in enumerate(data):
        port, probs = parse_port(item, cfg, f"ports[{i}]")
        problems += probs
        if port is not None:
            ports.append(port)
    if problems:
        raise InputError(str(path), problems)
    return ports


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hvrouter.services.run")
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--ports", type=Path, required=True)
    ap.add_argument("--stats", type=Path)
    ap.add_argument("--poll", type=float, default=0.5)
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")

    cfg = load_config(args.config)
    responder = Responder()
    nl = NetlinkSocket()
    wake = threading.Event()
    stop = threading.Event()
    dump = threading.Event()
    reload = threading.Event()

    def write_stats() -> None:
        if args.stats is not None:
            tmp = args.stats.with_suffix(".tmp")
            tmp.write_text(json.dumps(responder.stats(), indent=1, sort_keys=True))
            os.replace(tmp, args.stats)

    def on_signal(event: threading.Event) -> Callable[[int, object], None]:
        def handler(signum: int, frame: object) -> None:
            event.set()
            wake.set()

        return handler

    signal.signal(signal.SIGTERM, on_signal(stop))
    signal.signal(signal.SIGINT, on_signal(stop))
    signal.signal(signal.SIGHUP, on_signal(reload))
    signal.signal(signal.SIGUSR1, on_signal(dump))

    last: tuple[object, ...] | None = None
    mtime = -1
    ports: list[Port] = []

    def refresh() -> None:
        nonlocal last, mtime, ports
        st = args.ports.stat().st_mtime_ns
        if st != mtime or reload.is_set():
            reload.clear()
            ports, mtime = load_ports(args.ports, cfg), st
        links = read_links(nl)
        key = (tuple(ports), tuple(sorted((n, ln.index, ln.up) for n, ln in links.items())))
        if key != last:
            responder.update(cfg, ports, links)
            last = key

    refresh()
    responder.start()
    print("ready", flush=True)
    try:
        while not stop.is_set():
            wake.wait(args.poll)
            wake.clear()
            if stop.is_set():
                break
            refresh()
            if dump.is_set():
                dump.clear()
                write_stats()
                print("stats", flush=True)
    finally:
        write_stats()
        responder.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
