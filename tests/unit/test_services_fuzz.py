"""Fuzzing the responder, one protocol at a time: generated and mutated
frames go through the dispatcher (the code the socket feeds).

Two layers, because of what they cost (measured, docs/services.md):
* a seeded mutator in a plain loop, HVROUTER_FUZZ_EXAMPLES frames per
  protocol (default 100,000: ~3 s each); bit flips, byte overwrites,
  truncations, insertions, deletions and random frames, applied both to
  whole frames and to the payload re-wrapped in valid headers (so mutations
  reach the DHCP/ND parsers past the checksums);
* hypothesis, HVROUTER_FUZZ_HYPOTHESIS examples per protocol (default 300),
  for structured messages and shrinking a failure to a small example. At
  ~0.6 ms an example, 100k hypothesis examples would take a minute per
  protocol.

Asserted: nothing escapes, nothing counts as an internal error (junk is
"malformed", "foreign MAC" or "no reply"), the counters add up, every reply
goes to the port's own VM (or broadcast/multicast) and hands out only the
port's addresses, and a valid request after the storm is answered.
HVROUTER_FUZZ_SEED picks the mutator's seed (printed on failure).
"""

from __future__ import annotations

import os
import random
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_services_logic import MAC1, MAC2, MAC3, OTHER, make_table

from hvrouter.services import client, dhcp4, dhcp6, fuzz
from hvrouter.services.dispatch import OUTCOMES, Dispatcher
from hvrouter.services.table import SERVER_DUID
from hvrouter.services.wire import icmp6_frame, parse_icmp6, parse_udp4, parse_udp6, udp4_frame

EXAMPLES = int(os.environ.get("HVROUTER_FUZZ_EXAMPLES", "100000"))
HYPOTHESIS = int(os.environ.get("HVROUTER_FUZZ_HYPOTHESIS", "300"))
SEED = int(os.environ.get("HVROUTER_FUZZ_SEED", "5"))
UNKNOWN_IFINDEX = 99
TABLE = make_table()
BY_MAC = {e.mac: (i, e) for i, e in TABLE.items()}
ADDR4 = {e.ifindex: e.dhcp4.address for e in TABLE.values() if e.dhcp4 is not None}
ADDR6 = {e.ifindex: set(e.dhcp6.addresses) for e in TABLE.values() if e.dhcp6 is not None}
V2 = socket.inet_pton(socket.AF_INET6, "2001:db8:5a::5")


# -- corpora: valid frames for every port ----------------------------------------------

GW = b"\xcb\x00\x71\xfe"
CORPORA = {
    "dhcp4": [
        f for mac in (MAC1, MAC2, MAC3) for f in fuzz.dhcp4_corpus(mac, ADDR4.get(BY_MAC[mac][0], b"\xcb\x00\x71\x06"), GW)
    ],
    "rs": [f for mac in (MAC1, MAC2, MAC3) for f in fuzz.rs_corpus(mac)],
    "dhcp6": [f for mac in (MAC1, MAC2, MAC3) for f in fuzz.dhcp6_corpus(mac, V2)],
}


def storm(rng: random.Random, proto: str) -> tuple[int, bytes]:
    """One fuzzed (ifindex, frame): mostly on the port of the frame's MAC,
    sometimes on an interface that is not a port."""
    frame = fuzz.fuzz_frame(rng, CORPORA[proto], fuzz.PROTOCOLS[proto], foreign_mac=OTHER)
    ifindex = BY_MAC.get(frame[6:12], (UNKNOWN_IFINDEX, None))[0]
    if ifindex == UNKNOWN_IFINDEX:
        ifindex = rng.choice(list(TABLE))
    if rng.random() < 0.02:
        ifindex = UNKNOWN_IFINDEX
    return ifindex, frame


def check_reply(ifindex: int, reply: bytes) -> None:
    """A reply goes to the port's VM (or broadcast/multicast) and hands out
    only the port's addresses."""
    entry = TABLE[ifindex]
    dst = reply[0:6]
    assert dst == entry.mac or dst == b"\xff" * 6 or dst[:2] == b"\x33\x33", dst.hex()
    assert reply[6:12] == entry.tap_mac
    etype = reply[12:14]
    if etype == b"\x08\x00":
        _, m = client.decode_dhcp4(reply)
        assert m.yiaddr in (b"\0" * 4, ADDR4[ifindex])
    elif reply[20] == 17:
        _, m6 = client.decode_dhcp6(reply)
        if m6.ia_na and dhcp6.OPT_IA_NA in m6.options:
            raw = m6.options[dhcp6.OPT_IA_NA]
            for code, sub in dhcp6.iter_options(raw[12:]):
                if code == dhcp6.OPT_IAADDR and sub[20:24] != b"\0\0\0\0":
                    assert sub[:16] in ADDR6[ifindex]
    else:
        f = parse_icmp6(reply)
        assert f.payload[0] == 134


def check_counters(d: Dispatcher, received: int) -> dict[str, object]:
    s = d.stats()
    assert s["received"] == received
    assert sum(s[k] for k in OUTCOMES) == received  # type: ignore[misc]
    assert s["errors"] == 0
    served = s["served"]
    unanswered = s["unanswered"]
    assert isinstance(served, dict) and isinstance(unanswered, dict)
    assert sum(served.values()) == s["answered"]
    assert sum(unanswered.values()) == s["no_reply"]
    ports = s["ports"]
    assert isinstance(ports, dict)
    for k in ("answered", "no_reply", "ignored_foreign_mac", "malformed", "errors"):
        assert sum(p[k] for p in ports.values()) == s[k]
    return s


def still_served(d: Dispatcher, proto: str) -> None:
    if proto == "dhcp4":
        reply = d.handle(11, client.dhcp4_frame(MAC1, dhcp4.DISCOVER, 77))
        assert reply is not None
        _, m = client.decode_dhcp4(reply)
        assert (m.msg_type, m.xid, m.yiaddr) == (dhcp4.OFFER, 77, ADDR4[11])
    elif proto == "rs":
        reply = d.handle(12, client.rs_frame(MAC2))
        assert reply is not None
        assert client.decode_ra(reply)[1].managed
    else:
        reply = d.handle(12, client.dhcp6_frame(MAC2, dhcp6.SOLICIT, b"\x00\x00\x07",
                                                client_id=client.client_duid(MAC2), options=client.ia_na()))
        assert reply is not None
        _, m6 = client.decode_dhcp6(reply)
        assert m6.msg_type == dhcp6.ADVERTISE and m6.trid == b"\x00\x00\x07"


@pytest.mark.parametrize("proto", list(fuzz.PROTOCOLS))
def test_mutation_storm(proto: str) -> None:
    corpus = CORPORA[proto]
    seed = SEED * 1000 + list(fuzz.PROTOCOLS).index(proto)
    rng = random.Random(seed)
    d = Dispatcher()
    d.table = TABLE
    # The corpus itself is served.
    for frame in corpus:
        reply = d.handle(BY_MAC[frame[6:12]][0], frame)
        if reply is not None:
            check_reply(BY_MAC[frame[6:12]][0], reply)
    assert d.stats()["malformed"] == 0
    n = len(corpus)
    for i in range(EXAMPLES):
        ifindex, frame = storm(rng, proto)
        try:
            reply = d.handle(ifindex, frame)
            if reply is not None:
                check_reply(ifindex, reply)
        except BaseException:
            print(f"seed {seed}, example {i}: ifindex {ifindex}, frame {frame.hex()}")
            raise
        if d.total.outcomes["errors"]:
            pytest.fail(f"seed {seed}, example {i}: internal error on frame {frame.hex()}")
    s = check_counters(d, n + EXAMPLES)
    # The storm reached past the outer parsers.
    assert s["answered"] > EXAMPLES // 20 and s["malformed"] > EXAMPLES // 20
    still_served(d, proto)


# -- hypothesis: structured messages, shrinkable ----------------------------------------

HSETTINGS = settings(max_examples=HYPOTHESIS, deadline=None, suppress_health_check=list(HealthCheck))
macs = st.sampled_from([MAC1, MAC2, MAC3, OTHER])
dhcp4_options = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=8).map(
    lambda opts: b"".join(bytes((c, len(v))) + v if c not in (0, 255) else bytes((c,)) for c, v in opts)
)
dhcp6_options = st.lists(st.tuples(st.integers(0, 30), st.binary(max_size=40)), max_size=6).map(
    lambda opts: b"".join(dhcp6.option(c, v) for c, v in opts)
)


def run_one(d: Dispatcher, frame: bytes) -> None:
    ifindex = BY_MAC.get(frame[6:12], (UNKNOWN_IFINDEX, None))[0]
    before = d.received
    reply = d.handle(ifindex, frame)
    if reply is not None:
        check_reply(ifindex, reply)
    check_counters(d, before + 1)


@HSETTINGS
@given(mac=macs, mtype=st.one_of(st.none(), st.integers(0, 12)), broadcast=st.booleans(),
       ciaddr=st.sampled_from([b"\0" * 4, b"\xcb\x00\x71\x04", b"\xc6\x33\x64\x05", b"\x01\x02\x03\x04"]),
       requested=st.one_of(st.none(), st.binary(min_size=4, max_size=4)), options=dhcp4_options,
       cut=st.integers(0, 400))
def test_dhcp4_structured(mac: bytes, mtype: int | None, broadcast: bool, ciaddr: bytes, requested: bytes | None,
                          options: bytes, cut: int) -> None:
    d = Dispatcher()
    d.table = TABLE
    payload = client.dhcp4_payload(mac, mtype, broadcast=broadcast, ciaddr=ciaddr, requested=requested, options=options)
    for p in (payload, payload[:cut]):
        run_one(d, udp4_frame(mac, b"\xff" * 6, ciaddr, b"\xff" * 4, 68, 67, p))
    still_served(d, "dhcp4")


@HSETTINGS
@given(mac=macs, unspecified=st.booleans(), options=st.binary(max_size=64), code=st.integers(0, 3),
       hop=st.sampled_from([255, 254, 1]))
def test_rs_structured(mac: bytes, unspecified: bool, options: bytes, code: int, hop: int) -> None:
    d = Dispatcher()
    d.table = TABLE
    src = client.UNSPECIFIED if unspecified else client.link_local(mac)
    msg = struct.pack("!BBHI", 133, code, 0, 0) + options
    frame = icmp6_frame(mac, b"\x33\x33\x00\x00\x00\x02", src, client.ALL_ROUTERS, msg)
    run_one(d, frame[:21] + bytes((hop,)) + frame[22:])
    still_served(d, "rs")


@HSETTINGS
@given(mac=macs, mtype=st.integers(0, 14), trid=st.binary(min_size=3, max_size=3),
       client_id=st.one_of(st.none(), st.binary(max_size=20)),
       server_id=st.one_of(st.none(), st.just(SERVER_DUID), st.binary(max_size=20)),
       ia=st.lists(st.lists(st.binary(min_size=16, max_size=16), max_size=3), max_size=3), options=dhcp6_options)
def test_dhcp6_structured(mac: bytes, mtype: int, trid: bytes, client_id: bytes | None, server_id: bytes | None,
                          ia: list[list[bytes]], options: bytes) -> None:
    d = Dispatcher()
    d.table = TABLE
    ias = b"".join(client.ia_na(struct.pack("!I", n), tuple(addrs)) for n, addrs in enumerate(ia))
    run_one(d, client.dhcp6_frame(mac, mtype, trid, client_id=client_id, server_id=server_id, options=ias + options))
    still_served(d, "dhcp6")


def test_replies_parse_back() -> None:
    """The decoders used above accept what the handlers build (sanity for
    check_reply): every corpus frame of the right port gets a reply that
    round-trips."""
    d = Dispatcher()
    d.table = TABLE
    got = 0
    for corpus in CORPORA.values():
        for frame in corpus:
            reply = d.handle(BY_MAC[frame[6:12]][0], frame)
            if reply is not None:
                got += 1
                (parse_udp4 if reply[12:14] == b"\x08\x00" else parse_udp6 if reply[20] == 17 else parse_icmp6)(reply)
    assert got > 20

