"""The CLI without root: config check and the port commands (store only)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import yaml
from factories import example_dict

from hvrouter.cli import main
from hvrouter.config import example_text

Run = Callable[..., int]

GOOD_LINES = [
    {
        "name": "tap1",
        "mac": "52:54:00:00:00:01",
        "network": "public",
        "ipv4": ["203.0.113.10"],
        "ipv6": ["2001:db8:cb00:7101::/64"],
    },
    {
        "name": "tap2",
        "mac": "52:54:00:00:00:02",
        "network": "public",
        "ipv4": ["203.0.113.11", "203.0.113.12"],
        "extra": ["192.0.2.53/32", "2001:db8:ffff::53/128"],
    },
    {"name": "tap3", "mac": "52:54:00:00:00:03", "network": "public", "ipv6": ["2001:db8:cb00:7103::/64"]},
]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "hvrouter.yaml"
    path.write_text(example_text())
    return path


def runner(config: Path, state: Path) -> Run:
    def run(*args: str) -> int:
        return int(main(["--config", str(config), "--state-dir", str(state), *args]))

    return run


@pytest.fixture
def run(config_file: Path, tmp_path: Path) -> Run:
    return runner(config_file, tmp_path / "state")


def listed(run: Run, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    assert run("port", "list", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out, list)
    return out


def write_lines(path: Path, lines: Sequence[object]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_config_check_ok(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("config", "check") == 0
    assert "ok (1 network(s), 2 uplink(s))" in capsys.readouterr().out


def test_config_check_reports_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = example_dict()
    data["tables"]["main-again"] = 254
    data["networks"][0]["ipv4"]["gateway"] = "198.51.100.1"
    data["networks"][0]["ipv6"]["gateway"] = "2001:db8::1"
    data["networks"][0]["table"] = "nosuch"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    assert runner(bad, tmp_path / "state")("config", "check") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    for where in ("tables.main-again", "networks[0].ipv4.gateway", "networks[0].ipv6.gateway", "networks[0].table"):
        assert where in captured.err
    assert "'198.51.100.1'" in captured.err
    assert "4 problem(s)" in captured.err


def test_config_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert runner(tmp_path / "absent.yaml", tmp_path / "state")("config", "check") == 2
    assert "absent.yaml" in capsys.readouterr().err


def test_port_add_show_del(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run(
            "port",
            "add",
            "tap1",
            "--mac",
            "52-54-00-AA-BB-CC",
            "--network",
            "public",
            "--ipv4",
            "203.0.113.10",
            "--ipv6",
            "2001:db8:cb00:7101::/64",
        )
        == 0
    )
    capsys.readouterr()
    assert run("port", "show", "tap1", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert {k: shown[k] for k in ("name", "mac", "network", "ipv4", "ipv6")} == {
        "name": "tap1",
        "mac": "52:54:00:aa:bb:cc",
        "network": "public",
        "ipv4": ["203.0.113.10"],
        "ipv6": ["2001:db8:cb00:7101::/64"],
    }
    assert run("port", "del", "tap1") == 0
    assert listed(run, capsys) == []


def test_bad_port_add_changes_nothing(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    add = ("port", "add", "--network", "public")
    assert run(*add, "tap1", "--mac", "52:54:00:00:00:01", "--ipv4", "203.0.113.10") == 0
    before = listed(run, capsys)
    bad = ("--mac", "01:00:5e:00:00:01", "--ipv4", "198.51.100.1", "--ipv6", "2001:db8:cb00:7100::/60")
    assert run(*add, "tap2", *bad) == 2
    err = capsys.readouterr().err
    for where in ("port.mac", "port.ipv4[0]", "port.ipv6[0]"):
        assert where in err
    # Valid on its own, but its address belongs to tap1.
    assert run(*add, "tap2", "--mac", "52:54:00:00:00:02", "--ipv4", "203.0.113.10") == 2
    assert "203.0.113.10" in capsys.readouterr().err
    assert listed(run, capsys) == before


@pytest.mark.parametrize("command", [("port", "show", "nope"), ("port", "del", "nope")])
def test_unknown_port(run: Run, capsys: pytest.CaptureFixture[str], command: tuple[str, ...]) -> None:
    assert run(*command) == 2
    assert "nope" in capsys.readouterr().err


def test_import_with_one_bad_line_imports_nothing(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = dict(GOOD_LINES[2], mac="not-a-mac")
    path = write_lines(tmp_path / "ports.jsonl", [GOOD_LINES[0], GOOD_LINES[1], "", bad])
    assert run("port", "import", str(path)) == 2
    err = capsys.readouterr().err
    assert f"{path}:4.mac" in err
    assert "nothing imported" in err
    assert listed(run, capsys) == []


def test_import_of_conflicting_lines_imports_nothing(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clash = dict(GOOD_LINES[2], ipv4=GOOD_LINES[0]["ipv4"])
    path = write_lines(tmp_path / "ports.jsonl", [GOOD_LINES[0], clash])
    assert run("port", "import", str(path)) == 2
    assert listed(run, capsys) == []


def test_import_of_non_json_line(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_lines(tmp_path / "ports.jsonl", [GOOD_LINES[0], "{not json", "[1, 2]"])
    assert run("port", "import", str(path)) == 2
    err = capsys.readouterr().err
    assert f"{path}:2" in err and f"{path}:3" in err
    assert listed(run, capsys) == []


def test_export_reimports_identically(
    run: Run, config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("port", "import", str(write_lines(tmp_path / "in.jsonl", GOOD_LINES))) == 0
    original = listed(run, capsys)
    assert [p["name"] for p in original] == ["tap1", "tap2", "tap3"]
    assert run("port", "export") == 0
    exported = tmp_path / "out.jsonl"
    exported.write_text(capsys.readouterr().out)

    fresh = runner(config_file, tmp_path / "fresh-state")
    assert fresh("port", "import", str(exported)) == 0
    assert listed(fresh, capsys) == original
    assert fresh("port", "export") == 0
    assert capsys.readouterr().out == exported.read_text()


def test_config_example_passes_config_check(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("config", "example") == 0
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    assert runner(printed, tmp_path / "state")("config", "check") == 0
