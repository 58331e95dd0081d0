"""BIRD configuration: every role renders, passes `bird -p`, and says what the
seed lab needs; install() is atomic and lazy; check() reports bird's words."""

from __future__ import annotations

import copy
import os
import re
import shutil
from pathlib import Path

import pytest
from bird_configs import EDGE, HV1, ROLE_DATA, RR1, config

from hvrouter.bird import ROLES, BirdConfigError, bird_table, check, install, render
from hvrouter.cli import main
from hvrouter.errors import InputError

needs_bird = pytest.mark.skipif(
    shutil.which("bird") is None and not os.environ.get("CI"), reason="bird (bird2) is not installed"
)


def block(text: str, header: str) -> str:
    """The body of the top-level `header { ... }` block of a BIRD config."""
    start = text.index(header + " {")
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    raise AssertionError(f"unterminated block {header}")


def protocols(text: str) -> list[str]:
    return [f"{kind} {name}" for kind, name in re.findall(r"^protocol (\w+) (\w+)", text, re.M)]


# -- every role ------------------------------------------------------------------


@needs_bird
@pytest.mark.parametrize("role", ROLES)
def test_every_role_passes_bird_parse(role: str) -> None:
    check(render(config(ROLE_DATA[role])))


@needs_bird
def test_graceful_restart_without_bfd_and_no_local_out_pass_bird_parse() -> None:
    data = copy.deepcopy(HV1)
    data["bgp"].update(bfd=None, graceful_restart=True)
    data["rules"]["local_out_table"] = None
    text = render(config(data))
    check(text)
    assert "graceful restart on;" in text
    assert "protocol bfd" not in text and "bfd on" not in text
    assert "protocol pipe" not in text and "k_local_out" not in text


@pytest.mark.parametrize("role", ROLES)
def test_rendering_is_deterministic_and_ignores_dict_order(role: str) -> None:
    data = ROLE_DATA[role]
    shuffled = copy.deepcopy(data)
    shuffled["tables"] = dict(reversed(list(data["tables"].items())))
    first = render(config(data))
    assert render(config(data)) == first
    assert render(config(shuffled)) == first
    assert first.endswith("}\n") and "\n\n\n" not in first


@pytest.mark.parametrize("role", ROLES)
def test_no_bird_table_is_called_public(role: str) -> None:
    text = render(config(ROLE_DATA[role]))
    # `public` is a reserved word in BIRD; tables are per net type.
    assert not re.search(r"\btable public\b", text)
    assert "ipv4 table t_public4;" in text and "ipv6 table t_public6;" in text


def test_bird_table_names() -> None:
    assert bird_table("local-out", 4) == "t_local_out4"
    assert bird_table("public", 6) == "t_public6"


def test_role_option_overrides_the_config() -> None:
    rr_text = render(config(RR1), "route-reflector")
    assert render(config(RR1)) == rr_text
    with pytest.raises(InputError) as err:
        render(config(RR1), "hypervisor")
    assert "bgp.peers" in str(err.value)


def test_missing_bgp_section_and_unknown_role_are_input_errors() -> None:
    cfg = config({k: v for k, v in HV1.items() if k not in ("bgp", "bird")})
    with pytest.raises(InputError) as err:
        render(cfg, "hypervisor")
    assert "bgp" in str(err.value)
    with pytest.raises(InputError) as err:
        render(config(HV1), "router")
    assert "one of hypervisor, route-reflector, edge" in str(err.value)


def test_session_names_may_not_clash_with_generated_ones() -> None:
    data = copy.deepcopy(HV1)
    data["bgp"]["peers"][1]["name"] = "k_public4"
    with pytest.raises(InputError) as err:
        render(config(data))
    assert "bgp.peers[1].name" in str(err.value)


# -- hypervisor -------------------------------------------------------------------------


def test_hypervisor_kernel_protocols_learn_our_routes_and_install_bgp() -> None:
    text = render(config(HV1))
    for name, kid in (("public", 90), ("private", 20)):
        for fam, default in ((4, "0.0.0.0/0"), (6, "::/0")):
            k = block(text, f"protocol kernel k_{name}{fam}")
            assert f"table t_{name}{fam};" in k and f"kernel table {kid};" in k
            assert "learn;" in k and "merge paths yes;" in k
            # our routes only, never our unreachable default
            assert f"import where krt_source = 211 && net != {default};" in k
            assert "export filter bgp_to_kernel;" in k
            # a local route must beat a BGP copy of it (anycast, migration)
            assert "preference 250;" in k


def test_hypervisor_local_out_is_built_from_the_other_tables() -> None:
    text = render(config(HV1))
    assert "export where net != 0.0.0.0/0;" in block(text, "protocol pipe p_public_local_out4")
    assert "export where net != ::/0;" in block(text, "protocol pipe p_public_local_out6")
    for fam in (4, 6):
        pipe = block(text, f"protocol pipe p_private_local_out{fam}")
        assert f"table t_private{fam};" in pipe and f"peer table t_local_out{fam};" in pipe
        assert "export all;" in pipe and "import none;" in pipe
        k = block(text, f"protocol kernel k_local_out{fam}")
        assert "kernel table 100;" in k and "export filter onlink_bgp;" in k and "learn" not in k


def test_hypervisor_has_one_mp_bgp_session_per_peer() -> None:
    text = render(config(HV1))
    assert [p for p in protocols(text) if p.startswith("bgp")] == [
        "bgp rr1_pub", "bgp rr1_priv", "bgp rr2_pub", "bgp rr2_priv"
    ]
    s = block(text, "protocol bgp rr2_priv")
    for line in (
        "local 198.18.15.129 as 65000;",
        "neighbor 198.18.15.139 as 65000;",
        'interface "fb-priv";',
        "direct;",
        "ttl security on;",
        "bfd on;",
        "graceful restart off;",
    ):
        assert line in s
    for fam in (4, 6):
        ch = block(s, f"ipv{fam}")
        assert f"table t_private{fam};" in ch
        assert "import all;" in ch and "export where source = RTS_INHERIT;" in ch
        assert "next hop self;" in ch and "add paths rx;" in ch
    bfd = block(text, "protocol bfd")
    assert "interval 100 ms;" in bfd and "multiplier 3;" in bfd


def test_hypervisor_config_depends_on_tables_not_on_networks() -> None:
    # Only tables matter: a second network in an existing table changes nothing.
    data = copy.deepcopy(HV1)
    data["networks"].append({"name": "more", "table": "public", "ipv4": {"subnet": "192.0.2.0/24",
                                                                          "gateway": "192.0.2.254"}})
    assert render(config(data)) == render(config(HV1))


# -- route reflector and edge --------------------------------------------------------


def test_route_reflector_accepts_client_ranges_dynamically() -> None:
    text = render(config(RR1))
    assert "protocol kernel" not in text and "protocol static" not in text
    s = block(text, "protocol bgp hv_priv")
    for line in (
        "neighbor range 198.18.15.0/25 as 65000;",
        "source address 198.18.15.11;",
        'dynamic name "hv_priv_";',
        "rr client;",
        "rr cluster id 0.0.0.2;",
        "direct;",
        "ttl security on;",
        "bfd on;",
    ):
        assert line in s
    for fam in (4, 6):
        ch = block(s, f"ipv{fam}")
        assert f"table t_private{fam};" in ch and "import all;" in ch and "export all;" in ch
        assert "add paths tx;" in ch and "next hop keep;" in ch
    assert "rr cluster id 0.0.0.1;" in block(text, "protocol bgp hv_pub")


def test_edge_announces_its_prefixes_and_installs_bgp_in_main() -> None:
    text = render(config(EDGE))
    s4, s6 = block(text, "protocol static s_public4"), block(text, "protocol static s_public6")
    assert "route 0.0.0.0/0 blackhole;" in s4 and "route 192.0.2.53/32 blackhole;" in s4
    assert "route ::/0 blackhole;" in s6 and "route 2001:db8:ffff::53/128 blackhole;" in s6
    for fam in (4, 6):
        k = block(text, f"protocol kernel k_main{fam}")
        assert "kernel table 254;" in k and "merge paths yes;" in k
        assert "export filter bgp_to_kernel;" in k and "learn" not in k
    s = block(text, "protocol bgp rr2_pub")
    assert "local 198.51.100.114 as 65000;" in s
    assert "export where source = RTS_STATIC;" in s and "next hop self;" in s and "import all;" in s


# -- check and install ----------------------------------------------------------------


@needs_bird
def test_check_raises_bird_config_error_with_birds_message() -> None:
    text = render(config(HV1)) + "\nprotocol kernel {\n  bogus option;\n}\n"
    with pytest.raises(BirdConfigError) as err:
        check(text)
    message = err.value.message
    assert "syntax error" in message and "<config>:" in message, message
    assert str(err.value).startswith("BIRD rejected the configuration:")
    assert err.value.text == text


def test_install_writes_once_and_atomically(tmp_path: Path) -> None:
    path = tmp_path / "bird.conf"
    assert install(path, "a;\n") is True
    assert path.read_text() == "a;\n"
    stat = path.stat()
    assert install(path, "a;\n") is False
    again = path.stat()
    assert (again.st_ino, again.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert install(path, "b;\n") is True
    assert path.read_text() == "b;\n"
    assert path.stat().st_ino != stat.st_ino  # a new file renamed over the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bird.conf"]


def test_install_failure_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bird.conf"
    install(path, "old;\n")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        install(path, "new;\n")
    assert path.read_text() == "old;\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bird.conf"]


# -- CLI ----------------------------------------------------------------------------------


def _write_config(tmp_path: Path, data: dict[str, object]) -> Path:
    import yaml

    path = tmp_path / "hvrouter.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@needs_bird
def test_cli_bird_config_prints_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_config(tmp_path, HV1)
    assert main(["--config", str(path), "bird-config", "--check"]) == 0
    assert capsys.readouterr().out == render(config(HV1))
    rr = _write_config(tmp_path, RR1)
    assert main(["--config", str(rr), "bird-config", "--role", "route-reflector"]) == 0
    assert "rr client;" in capsys.readouterr().out


@needs_bird
def test_cli_bird_config_check_failure_exits_1_with_birds_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = copy.deepcopy(HV1)
    data["bgp"]["peers"][0]["name"] = "bgp"  # a valid name for us, a keyword for BIRD
    path = _write_config(tmp_path, data)
    assert main(["--config", str(path), "bird-config", "--check"]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert "syntax error" in out.err and "BGP" in out.err
