"""The hvrouter nftables tables (inet and arp): deterministic text, a rule
set that does not grow with the ports, the right set, map and counter
elements, and text the kernel accepts (`nft -c` in a throwaway network
namespace)."""

from __future__ import annotations

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
from hvrouter.firewall import FirewallError, check, counter_name, fingerprint, port_of_counter, render
from hvrouter.firewall.apply import _render_memo, _with_counts
from hvrouter.firewall.render import input_fingerprint
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


def table(text: str, family: str = "inet") -> str:
    m = re.search(rf"^table {family} hvrouter \{{\n(.*?)^\}}", text, re.M | re.S)
    assert m, f"no table {family} hvrouter"
    return m.group(1)


def chains(text: str, family: str = "inet") -> dict[str, list[str]]:
    """Rules (with their comments) by chain of table `family`, as rendered."""
    out: dict[str, list[str]] = {}
    for name, body in re.findall(r"^    chain (\w+) \{\n(.*?)^    \}", table(text, family), re.M | re.S):
        out[name] = [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith(("#", "type "))]
    return out


def elements(text: str, name: str, family: str = "inet") -> list[str]:
    """Elements of set or map `name` of table `family`, as rendered (one per line)."""
    m = re.search(rf"^    (?:set|map) {name} \{{\n(.*?)^    \}}", table(text, family), re.M | re.S)
    assert m, f"no set or map {name}"
    inner = re.search(r"elements = \{\n(.*?)^        \}", m.group(1), re.M | re.S)
    return [] if inner is None else [line.strip().rstrip(",") for line in inner.group(1).splitlines()]


def counter_objects(text: str, family: str = "inet") -> list[str]:
    return re.findall(r"^    counter (\S+) \{ packets 0 bytes 0 \}$", table(text, family), re.M)


def test_render_is_deterministic_whatever_the_port_order(example_cfg: Config) -> None:
    ports = [wide_port(i) for i in range(50)] + [VM1, VM2]
    cfg = make_config(WIDE | {"networks": WIDE["networks"] + example_dict()["networks"]})
    text = render(cfg, ports)
    shuffled = list(ports)
    random.Random(7).shuffle(shuffled)
    assert render(cfg, shuffled) == text
    assert render(cfg, tuple(ports)) == text


def test_fingerprint_is_the_hash_of_the_inputs_and_follows_changes(example_cfg: Config) -> None:
    text = render(example_cfg, [VM1])
    fp = fingerprint(text)
    assert fp is not None and fp.startswith("hvrouter sha256:")
    assert f'comment "{fp}"' in text
    # Computed from the inputs, without rendering; the order of ports is irrelevant.
    assert fp == input_fingerprint(example_cfg, [VM1])
    assert input_fingerprint(example_cfg, [VM1, VM2]) == input_fingerprint(example_cfg, [VM2, VM1])
    assert fingerprint(render(example_cfg, [VM1, VM2])) != fp
    assert fingerprint(render(example_cfg, [replace(VM1, nat=("203.0.113.12",))])) != fp
    assert fingerprint(render(example_cfg, [replace(VM1, mac="52:54:00:00:00:0a")])) != fp
    assert fingerprint("table inet hvrouter {}") is None
    # Both tables, and the set the agent lists to read it cheaply, carry it.
    for family in ("inet", "arp"):
        assert re.search(rf'^    comment "{fp}"$', table(text, family), re.M), family
        assert re.search(rf'set fingerprint \{{\n        type ifname\n        comment "{fp}"\n    \}}', table(text, family))


def test_rules_do_not_grow_with_ports_only_elements_do() -> None:
    cfg = make_config(SHARED)
    extra = ("198.18.200.0/28", "2001:db8:ee::/48")
    one = render(cfg, [replace(lan_port(0), extra=extra)])
    many = render(cfg, [replace(lan_port(i), extra=extra) for i in range(1000)])
    for family in ("inet", "arp"):
        assert chains(one, family) == chains(many, family), family
        assert sum(len(r) for r in chains(many, family).values()) == sum(len(r) for r in chains(one, family).values())
    assert sum(len(r) for f in ("inet", "arp") for r in chains(many, f).values()) == 41
    for name in ("taps", "dnat4", "nat4_own", "dnat6", "nat6_own", "port_mac", "port_ipv4", "port_net4", "port_net6",
                 "spoof_counters"):
        assert (len(elements(one, name)), len(elements(many, name))) == (1, 1000), name
    # Per port: its EUI-64 link-local and its two /128s.
    assert (len(elements(one, "port_ipv6")), len(elements(many, "port_ipv6"))) == (3, 3000)
    for name in ("taps", "port_mac", "port_ipv4", "port_net4", "spoof_counters"):
        assert (len(elements(one, name, "arp")), len(elements(many, name, "arp"))) == (1, 1000), name
    for family in ("inet", "arp"):
        assert (len(counter_objects(one, family)), len(counter_objects(many, family))) == (1, 1000)
        assert elements(many, "spoofers", family) == []
    assert elements(one, "uplinks") == elements(many, "uplinks")


def test_taps_include_every_port_and_uplinks_come_from_the_config(example_cfg: Config) -> None:
    absent = Port("vm-not-yet", "52:54:00:00:00:09", "public", ("203.0.113.9",))
    text = render(example_cfg, [VM2, absent, VM1])
    assert elements(text, "taps") == ['"vm-not-yet"', '"vm1"', '"vm2"']
    assert elements(text, "taps", "arp") == ['"vm-not-yet"', '"vm1"', '"vm2"']
    assert elements(text, "uplinks") == ['"eth0"', '"eth1"']
    # A port whose tap is not there yet is checked from its first packet.
    assert '"vm-not-yet" . 52:54:00:00:00:09' in elements(text, "port_mac")
    assert '"vm-not-yet" . 203.0.113.9' in elements(text, "port_ipv4", "arp")
    assert '"vm-not-yet" : spoof_vm-not-yet' in elements(text, "spoof_counters")


def test_each_port_may_send_from_its_mac_and_addresses_only(example_cfg: Config) -> None:
    anycast = replace(VM1, extra=("203.0.113.10/32", "198.51.100.16/28", "2001:db8:ffff::/48", "2001:db8:cb00:7101::5/128"))
    text = render(example_cfg, [VM2, anycast])
    mac = ['"vm1" . 52:54:00:00:00:01', '"vm2" . 52:54:00:00:00:02']
    assert elements(text, "port_mac") == mac and elements(text, "port_mac", "arp") == mac
    # Addresses and extra /32s hashed, extra prefixes in the interval set;
    # the NAT address 203.0.113.11 is no source: the VM sends from .4.
    v4 = ['"vm1" . 203.0.113.4', '"vm1" . 203.0.113.10', '"vm2" . 203.0.113.5', '"vm2" . 203.0.113.6']
    assert elements(text, "port_ipv4") == v4 and elements(text, "port_ipv4", "arp") == v4
    assert elements(text, "port_net4") == ['"vm1" . 198.51.100.16/28'] == elements(text, "port_net4", "arp")
    # The EUI-64 link-local of the MAC; the /128 extra inside the port's /64
    # is left out (nft refuses overlapping intervals); NAT is no source.
    assert elements(text, "port_ipv6") == ['"vm1" . fe80::5054:ff:fe00:1', '"vm2" . fe80::5054:ff:fe00:2']
    assert elements(text, "port_net6") == [
        '"vm1" . 2001:db8:cb00:7101::/64', '"vm1" . 2001:db8:ffff::/48', '"vm2" . 2001:db8:cb00:7102::/64']
    assert "71ff" not in table(text).split("set port_ipv6")[1].split("chain ")[0]


def test_shared_prefix_ports_send_from_their_128s() -> None:
    text = render(make_config(SHARED), [lan_port(3)])
    assert elements(text, "port_ipv6") == [
        '"lan3" . 2001:db8:aa::4', '"lan3" . 2001:db8:aa::ffff', '"lan3" . fe80::5054:ff:fe00:4']
    assert elements(text, "port_net6") == []
    assert elements(text, "port_ipv4") == ['"lan3" . 198.51.100.4']  # not the NAT address 198.19.0.4


def test_any_link_local_is_one_rule_before_the_check_not_elements(example_cfg: Config) -> None:
    text = render(example_cfg, [VM1], link_local="any")
    assert elements(text, "port_ipv6") == []
    rules = chains(text)["vm_source"]
    ll = next(i for i, r in enumerate(rules) if r.startswith("ip6 saddr fe80::/10 return"))
    check6 = next(i for i, r in enumerate(rules) if r.startswith("iifname . ip6 saddr != @port_ipv6"))
    assert ll < check6
    strict = chains(render(example_cfg, [VM1]))["vm_source"]
    assert len(strict) == len(rules)
    ll = next(i for i, r in enumerate(strict) if r.startswith("ip6 saddr fe80::/10 return"))
    assert ll > next(i for i, r in enumerate(strict) if r.startswith("iifname . ip6 saddr != @port_ipv6"))
    assert fingerprint(text) != fingerprint(render(example_cfg, [VM1]))


def test_overlapping_and_duplicate_sources_collapse_per_port(example_cfg: Config) -> None:
    port = replace(VM2, ipv4=("203.0.113.5", "203.0.113.5", "198.51.100.20"),
                   extra=("198.51.100.16/28", "198.51.100.0/24", "2001:db8:cb00:7102::/80", "fe80::/64"))
    text = render(example_cfg, [port])
    assert elements(text, "port_ipv4") == ['"vm2" . 203.0.113.5']
    assert elements(text, "port_net4") == ['"vm2" . 198.51.100.0/24']
    assert elements(text, "port_ipv6") == []  # the link-local is inside the extra fe80::/64
    assert elements(text, "port_net6") == ['"vm2" . 2001:db8:cb00:7102::/64', '"vm2" . fe80::/64']


def test_counter_names_are_nft_words_and_name_their_port() -> None:
    for name in ("vm1", "tap-1.5", "a@b:c+d", "UPPER_x", "ip", "counter"):
        cname = counter_name(name)
        assert re.fullmatch(r"spoof_[A-Za-z0-9/_.-]+", cname), cname
        assert port_of_counter(cname) == name
    assert counter_name("a@b:c+d") == "spoof_a/40b/3ac/2bd"
    assert port_of_counter("hits") is None


def test_every_port_has_a_counter_object_in_both_tables_and_a_map_entry(example_cfg: Config) -> None:
    odd = Port("v@m:3+", "52:54:00:00:00:03", "public", ("203.0.113.7",))
    text = render(example_cfg, [VM2, odd, VM1])
    names = ["spoof_v/40m/3a3/2b", "spoof_vm1", "spoof_vm2"]
    for family in ("inet", "arp"):
        assert counter_objects(text, family) == names
        assert elements(text, "spoof_counters", family) == [
            '"v@m:3+" : spoof_v/40m/3a3/2b', '"vm1" : spoof_vm1', '"vm2" : spoof_vm2']
        spoofed = chains(text, family)["spoofed"]
        assert [r.split(" comment")[0] for r in spoofed] == [
            "counter name iifname map @spoof_counters", "update @spoofers { iifname }", "drop"]


def test_counts_are_carried_into_a_new_table(example_cfg: Config) -> None:
    text = render(example_cfg, [VM1, VM2])
    counts = {("inet", "spoof_vm1"): (3, 252), ("arp", "spoof_vm1"): (1, 28), ("inet", "spoof_vm2"): (0, 0),
              ("inet", "spoof_gone"): (9, 9)}
    out = _with_counts(text, counts)
    assert "    counter spoof_vm1 { packets 3 bytes 252 }" in table(out, "inet")
    assert "    counter spoof_vm1 { packets 1 bytes 28 }" in table(out, "arp")
    assert "    counter spoof_vm2 { packets 0 bytes 0 }" in table(out, "inet")
    assert "spoof_gone" not in out
    # Ports with a count stay in `spoofers`, so the next replacement carries them too.
    for family in ("inet", "arp"):
        assert re.search(r'set spoofers \{\n[^}]*elements = \{ "vm1" \}\n    \}', table(out, family)), family
    assert fingerprint(out) == fingerprint(text)
    assert _with_counts(text, {}) == text


def test_a_port_named_like_an_uplink_stays_out_of_the_taps(example_cfg: Config) -> None:
    text = render(example_cfg, [replace(VM2, name="eth0"), VM1])
    assert elements(text, "taps") == ['"vm1"']
    assert "# note: port eth0: has the name of an uplink" in text
    assert not any(e.startswith('"eth0"') for e in elements(text, "port_mac") + elements(text, "taps", "arp"))


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
    # A field that does not parse is no allowed source (fails closed), said in a note.
    assert elements(crossed, "port_ipv4") == []
    assert "# note: port vm2: IPv4 address '2001:db8::9' is not an IPv4 address or prefix, not an allowed source" in crossed
    assert elements(text, "port_net6") == []
    assert "# note: port vm2: IPv6 prefix '2001:db8::/64\\nflush ruleset' is not an IPv6 address or prefix" in text
    bad_mac = render(example_cfg, [replace(VM2, mac='52:54:00:00:00:02" }')])
    assert elements(bad_mac, "port_mac") == [] and elements(bad_mac, "port_ipv6") == []
    assert "is not a MAC address; everything it sends is dropped" in bad_mac


def test_the_policy_the_issue_asks_for(example_cfg: Config) -> None:
    c = chains(render(example_cfg, [VM1]))
    fwd = c["forward"]
    assert fwd[0].startswith("iifname @taps tcp dport 179 counter drop")
    assert fwd[1].startswith("iifname @taps udp dport { 3784, 3785, 4784 } counter drop")
    assert [r.split(" accept")[0] for r in fwd[2:6]] == [
        "iifname @taps oifname @uplinks", "iifname @uplinks oifname @taps", "iifname @taps oifname @taps",
        "iifname @overlay_bridges oifname @overlay_bridges"]
    assert fwd[6].startswith('counter limit rate 10/second log prefix "hvrouter drop: "')
    assert "policy drop" in render(example_cfg, []).split("chain forward {")[1].split("\n")[1]
    src = [r.split(" comment")[0] for r in c["vm_source"]]
    assert src == [
        "iifname . ether saddr != @port_mac counter goto spoofed",
        "ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 return",
        "ip saddr 0.0.0.0 ip daddr 224.0.0.0/24 ip protocol igmp return",
        "iifname . ip saddr != @port_ipv4 iifname . ip saddr != @port_net4 counter goto spoofed",
        "ip6 saddr :: ip6 daddr ff02::/16 icmpv6 type { nd-neighbor-solicit, nd-router-solicit, mld-listener-report, "
        "mld-listener-done, mld2-listener-report } return",
        "iifname . ip6 saddr != @port_ipv6 iifname . ip6 saddr != @port_net6 counter goto spoofed",
        "ip6 saddr fe80::/10 return",
        "fib saddr . iif oif missing counter goto spoofed",
    ]
    assert c["raw_prerouting"][0].startswith("iifname @taps jump vm_source")
    arp = chains(render(example_cfg, [VM1]), "arp")
    assert [r.split(" comment")[0] for r in arp["input"]] == [
        "iifname != @taps accept",
        "iifname . ether saddr != @port_mac counter goto spoofed",
        "iifname . arp saddr ether != @port_mac counter goto spoofed",
        "arp saddr ip 0.0.0.0 accept",
        "iifname . arp saddr ip != @port_ipv4 iifname . arp saddr ip != @port_net4 counter goto spoofed",
    ]
    assert "type filter hook input priority filter; policy accept;" in table(render(example_cfg, [VM1]), "arp")
    for chain in ("raw_prerouting", "raw_output"):
        assert [r.split(" counter")[0] for r in c[chain][-2:]] == [
            "udp dport { 3784, 3785, 4784 }", "udp sport { 3784, 3785, 4784 }"]
    assert any(r.startswith("icmpv6 type nd-redirect counter drop") for r in c["input"])
    assert any(r.startswith("icmpv6 type nd-redirect drop") for r in c["output"])
    for name, rules in (*c.items(), *(("arp " + k, v) for k, v in arp.items())):
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
    ns = f"hvas-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
    try:
        yield ("ip", "netns", "exec", ns, "nft")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


CASES = {
    "example, no ports": (example_dict(), []),
    "example, nat": (example_dict(), [VM1, VM2, Port("vm-absent", "52:54:00:00:00:09", "public")]),
    "example, odd names, extras, overlaps": (example_dict(), [
        Port("v@m:1+x.y_z-", "52:54:00:00:00:0a", "public", ("203.0.113.20", "203.0.113.20"), ("2001:db8:cb00:7110::/64",),
             extra=("198.51.100.0/25", "198.51.100.64/26", "203.0.113.21/32", "2001:db8:cb00:7110::1/128", "fe80::/10")),
        Port("ip", "52:54:00:00:00:0b", "public", ("203.0.113.22",), extra=("203.0.113.21/32",)),
    ]),
    "shared, 1000 ports": (SHARED, [lan_port(i) for i in range(1000)]),
    "wide, no uplinks": (WIDE | {"fabric": {"uplinks": []}}, [wide_port(i) for i in range(10)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_nft_accepts_every_rendered_table(case: str, nft_ns: tuple[str, ...]) -> None:
    data, ports = CASES[case]
    check(render(make_config(data), ports), nft=nft_ns)


def test_nft_accepts_any_link_local_and_carried_counts(example_cfg: Config, nft_ns: tuple[str, ...]) -> None:
    text = render(example_cfg, [VM1, VM2], link_local="any")
    check(_with_counts(text, {("inet", "spoof_vm1"): (3, 252), ("arp", "spoof_vm2"): (1, 28)}), nft=nft_ns)


def test_check_reports_nft_message_and_line(example_cfg: Config, nft_ns: tuple[str, ...]) -> None:
    text = render(example_cfg, [VM1]).replace("notrack", "notrak", 1)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "notrak" in t)
    with pytest.raises(FirewallError) as err:
        check(text, nft=nft_ns)
    assert err.value.command == "nft: check tables inet hvrouter and arp hvrouter"
    assert f"<hvrouter table>:{line}:" in err.value.message
    assert "hvrouter-fw-" not in str(err.value)  # temporary file names stay out of it


def test_missing_nft_is_a_typed_error(example_cfg: Config) -> None:
    with pytest.raises(FirewallError, match="not found"):
        check(render(example_cfg, []), nft=("/nonexistent/nft",))


def test_sync_renders_again_only_when_something_changed(example_cfg: Config) -> None:
    text = _render_memo(example_cfg, [VM1, VM2], "eui64")
    assert text == render(example_cfg, [VM1, VM2])
    assert _render_memo(example_cfg, [replace(VM1), replace(VM2)], "eui64") is text  # equal ports: remembered
    assert _render_memo(example_cfg, [VM1, replace(VM2, mac="52:54:00:00:00:0b")], "eui64") != text
    assert _render_memo(example_cfg, [VM1, VM2], "any") == render(example_cfg, [VM1, VM2], link_local="any")
    assert _render_memo(make_config(example_dict()), [VM1, VM2], "eui64") == text  # another config object: rendered again
