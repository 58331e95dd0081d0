"""The hvrouter nftables table: deterministic text, a rule set that does not
grow with the ports, the right set and map elements, and text the kernel
accepts (`nft -c` in a throwaway network namespace)."""

from __future__ import annotations

import hashlib
import os
import random
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

import pytest
from factories import SHARED, WIDE, example_dict, mac_of, make_config, wide_port

from hvrouter.config import Config
from hvrouter.firewall import FirewallError, check, fingerprint, render
from hvrouter.model import Port

VM1 = Port("vm1", "52:54:00:00:00:01", "public", ("203.0.113.4",), ("2001:db8:cb00:7101::/64",),
           nat=("203.0.113.11", "2001:db8:cb00:71ff::11"))
VM2 = Port("vm2", "52:54:00:00:00:02", "public", ("203.0.113.5", "203.0.113.6"), ("2001:db8:cb00:7102::/64",))


def lan_port(i: int, nat: bool = True) -> Port:
    """Port i of the SHARED config: /128 IPv6 addresses, NAT in both families."""
    v4 = IPv4Address(int(IPv4Address("198.51.100.1")) + i)
    v6 = IPv6Address(int(IPv6Address("2001:db8:aa::1")) + i)
    nats = (str(IPv4Address(int(IPv4Address("198.19.0.1")) + i)), str(IPv6Address(int(IPv6Address("2001:db8:ff::1")) + i)))
    return Port(f"lan{i}", mac_of(i + 1), "lan", (str(v4),), (f"{v6}/128", "2001:db8:aa::ffff/128"), nat=nats if nat else ())


def chains(text: str) -> dict[str, list[str]]:
    """Rules (with their comments) by chain, as rendered."""
    out: dict[str, list[str]] = {}
    for name, body in re.findall(r"^    chain (\w+) \{\n(.*?)^    \}", text, re.M | re.S):
        out[name] = [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith(("#", "type "))]
    return out


def elements(text: str, name: str) -> list[str]:
    """Elements of set or map `name`, as rendered (one per line)."""
    m = re.search(rf"^    (?:set|map) {name} \{{\n(.*?)^    \}}", text, re.M | re.S)
    assert m, f"no set or map {name}"
    inner = re.search(r"elements = \{\n(.*?)^        \}", m.group(1), re.M | re.S)
    return [] if inner is None else [line.strip().rstrip(",") for line in inner.group(1).splitlines()]


def test_render_is_deterministic_whatever_the_port_order(example_cfg: Config) -> None:
    ports = [wide_port(i) for i in range(50)] + [VM1, VM2]
    cfg = make_config(WIDE | {"networks": WIDE["networks"] + example_dict()["networks"]})
    text = render(cfg, ports)
    shuffled = list(ports)
    random.Random(7).shuffle(shuffled)
    assert render(cfg, shuffled) == text
    assert render(cfg, tuple(ports)) == text


def test_fingerprint_is_the_hash_of_the_text_and_follows_changes(example_cfg: Config) -> None:
    text = render(example_cfg, [VM1])
    fp = fingerprint(text)
    assert fp is not None and fp.startswith("hvrouter sha256:")
    assert f'comment "{fp}"' in text
    unhashed = text.replace(fp, "hvrouter sha256:" + "0" * 64)
    assert fp == "hvrouter sha256:" + hashlib.sha256(unhashed.encode()).hexdigest()
    assert fingerprint(render(example_cfg, [VM1, VM2])) != fp
    assert fingerprint(render(example_cfg, [replace(VM1, nat=("203.0.113.12",))])) != fp
    assert fingerprint("table inet hvrouter {}") is None


def test_rules_do_not_grow_with_ports_only_elements_do() -> None:
    cfg = make_config(SHARED)
    one = render(cfg, [lan_port(0)])
    many = render(cfg, [lan_port(i) for i in range(1000)])
    assert chains(one) == chains(many)
    assert sum(len(r) for r in chains(many).values()) == sum(len(r) for r in chains(one).values())
    for name in ("taps", "dnat4", "nat4_own", "dnat6", "nat6_own"):
        assert (len(elements(one, name)), len(elements(many, name))) == (1, 1000), name
    assert elements(one, "uplinks") == elements(many, "uplinks")


def test_taps_include_every_port_and_uplinks_come_from_the_config(example_cfg: Config) -> None:
    absent = Port("vm-not-yet", "52:54:00:00:00:09", "public", ("203.0.113.9",))
    text = render(example_cfg, [VM2, absent, VM1])
    assert elements(text, "taps") == ['"vm-not-yet"', '"vm1"', '"vm2"']
    assert elements(text, "uplinks") == ['"eth0"', '"eth1"']


def test_a_port_named_like_an_uplink_stays_out_of_the_taps(example_cfg: Config) -> None:
    text = render(example_cfg, [replace(VM2, name="eth0"), VM1])
    assert elements(text, "taps") == ['"vm1"']
    assert "# note: port eth0: has the name of an uplink" in text


def test_nat_maps_translate_to_the_first_address_of_the_family() -> None:
    cfg = make_config(SHARED)
    text = render(cfg, [lan_port(1), lan_port(0)])
    assert elements(text, "dnat4") == ["198.19.0.1 : 198.51.100.1", "198.19.0.2 : 198.51.100.2"]
    assert elements(text, "nat4_own") == ['"lan0" . 198.19.0.1', '"lan1" . 198.19.0.2']
    assert elements(text, "dnat6") == ["2001:db8:ff::1 : 2001:db8:aa::1", "2001:db8:ff::2 : 2001:db8:aa::2"]
    assert elements(text, "nat6_own") == ['"lan0" . 2001:db8:ff::1', '"lan1" . 2001:db8:ff::2']
    nat = chains(text)["dstnat"]
    assert nat[0].startswith("iifname . ip daddr != @nat4_own dnat ip to ip daddr map @dnat4")
    assert nat[1].startswith("iifname . ip6 daddr != @nat6_own dnat ip6 to ip6 daddr map @dnat6")


def test_prefix_per_port_ports_get_no_ipv6_nat_and_the_table_says_why(example_cfg: Config) -> None:
    text = render(example_cfg, [VM1, VM2])
    assert elements(text, "dnat4") == ["203.0.113.11 : 203.0.113.4"]
    assert elements(text, "nat4_own") == ['"vm1" . 203.0.113.11']
    assert elements(text, "dnat6") == []
    assert ("# note: port vm1: no NAT for 2001:db8:cb00:71ff::11: its IPv6 2001:db8:cb00:7101::/64 is a prefix, "
            "not an address to translate to") in text


def test_no_nat_chains_without_nat_addresses(example_cfg: Config) -> None:
    # NAT chains turn conntrack on for every connection of the host.
    text = render(example_cfg, [VM2])
    assert "dstnat" not in chains(text) and "dstnat_output" not in chains(text)
    assert not any(re.match(r"(.* )?ct ", rule) for rules in chains(text).values() for rule in rules)
    assert {"dstnat", "dstnat_output"} <= set(chains(render(example_cfg, [VM1])))


def test_a_nat_address_claimed_twice_is_kept_by_the_first_port(example_cfg: Config) -> None:
    twin = replace(VM2, nat=("203.0.113.11",))
    text = render(example_cfg, [twin, VM1])
    assert elements(text, "dnat4") == ["203.0.113.11 : 203.0.113.4"]
    assert "# note: port vm2: NAT address 203.0.113.11 already belongs to port vm1, skipped" in text


def test_odd_port_fields_cannot_inject_ruleset_text(example_cfg: Config) -> None:
    evil = Port('x"; flush ruleset', "52:54:00:00:00:07", "public", ("203.0.113.7",))
    sneaky = replace(VM2, ipv6=("2001:db8::/64\nflush ruleset",), nat=("2001:db8::5",))
    text = render(example_cfg, [evil, sneaky])
    assert elements(text, "taps") == ['"vm2"']
    assert not any(line.startswith("flush") for line in text.splitlines())
    # A target of the wrong family would make nft refuse the whole table.
    crossed = render(example_cfg, [replace(VM2, ipv4=("2001:db8::9",), nat=("203.0.113.12",))])
    assert elements(crossed, "dnat4") == []
    assert "# note: port vm2: NAT target '2001:db8::9' is not an IPv4 address, skipped" in crossed


def test_the_policy_the_issue_asks_for(example_cfg: Config) -> None:
    c = chains(render(example_cfg, [VM1]))
    fwd = c["forward"]
    assert fwd[0].startswith("iifname @taps tcp dport 179 counter drop")
    assert fwd[1].startswith("iifname @taps udp dport { 3784, 3785, 4784 } counter drop")
    assert [r.split(" accept")[0] for r in fwd[2:5]] == [
        "iifname @taps oifname @uplinks", "iifname @uplinks oifname @taps", "iifname @taps oifname @taps"]
    assert fwd[5].startswith('counter limit rate 10/second log prefix "hvrouter drop: "')
    assert "policy drop" in render(example_cfg, []).split("chain forward {")[1].split("\n")[1]
    assert any(r.startswith("fib saddr . iif oif missing counter drop") for r in c["vm_source"])
    assert c["raw_prerouting"][0].startswith("iifname @taps jump vm_source")
    for chain in ("raw_prerouting", "raw_output"):
        assert [r.split(" counter")[0] for r in c[chain][-2:]] == [
            "udp dport { 3784, 3785, 4784 }", "udp sport { 3784, 3785, 4784 }"]
    assert any(r.startswith("icmpv6 type nd-redirect counter drop") for r in c["input"])
    assert any(r.startswith("icmpv6 type nd-redirect drop") for r in c["output"])
    for name, rules in c.items():
        for rule in rules:
            assert re.search(r' comment "[^"]{10,128}"$', rule), f"{name}: {rule} needs a short comment saying why"


# -- the kernel's opinion -------------------------------------------------------------

def _need_root() -> None:
    missing = [tool for tool in ("nft", "ip") if shutil.which(tool) is None]
    reason = f"{', '.join(missing)} not installed" if missing else "nft -c needs root"
    if missing or os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must not skip the nft checks")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def nft_ns() -> Iterator[tuple[str, ...]]:
    """`nft` inside a fresh network namespace: the check never sees (or
    touches) the machine's own ruleset."""
    _need_root()
    ns = f"hvfw-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
    try:
        yield ("ip", "netns", "exec", ns, "nft")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


CASES = {
    "example, no ports": (example_dict(), []),
    "example, nat": (example_dict(), [VM1, VM2, Port("vm-absent", "52:54:00:00:00:09", "public")]),
    "shared, 1000 ports": (SHARED, [lan_port(i) for i in range(1000)]),
    "wide, no uplinks": (WIDE | {"fabric": {"uplinks": []}}, [wide_port(i) for i in range(10)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_nft_accepts_every_rendered_table(case: str, nft_ns: tuple[str, ...]) -> None:
    data, ports = CASES[case]
    check(render(make_config(data), ports), nft=nft_ns)


def test_check_reports_nft_message_and_line(example_cfg: Config, nft_ns: tuple[str, ...]) -> None:
    text = render(example_cfg, [VM1]).replace("notrack", "notrak", 1)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "notrak" in t)
    with pytest.raises(FirewallError) as err:
        check(text, nft=nft_ns)
    assert err.value.command == "nft: check table inet hvrouter"
    assert f"<hvrouter table>:{line}:" in err.value.message
    assert "hvrouter-fw-" not in str(err.value)  # temporary file names stay out of it


def test_missing_nft_is_a_typed_error(example_cfg: Config) -> None:
    with pytest.raises(FirewallError, match="not found"):
        check(render(example_cfg, []), nft=("/nonexistent/nft",))
