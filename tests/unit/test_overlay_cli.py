"""`hvrouter overlay attach/detach/list` (store only) and port cascade."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from factories import example_dict

from hvrouter.cli import main

OVERLAY = {
    "vtep_id": "hv1",
    "networks": [{"name": "ov", "vni": 1001, "mode": "unicast-static-l2", "local": "198.51.100.1"}],
}


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = example_dict()
    cfg["overlay"] = OVERLAY
    path = tmp_path / "hv.yaml"
    path.write_text(yaml.safe_dump(cfg))

    def _run(*args: str) -> int:
        return main(["--config", str(path), "--state-dir", str(tmp_path / "state"), *args])

    return _run


def _list(run, capsys) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    assert run("overlay", "list", "--json") == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_attach_list_detach(run, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run("overlay", "attach", "vm1-ov", "--network", "ov", "--mac", "52:54:00:01:00:01",
               "--address", "198.19.250.1", "--address", "2001:db8:ee:0::1") == 0
    assert _list(run, capsys) == [{"interface": "vm1-ov", "network": "ov", "mac": "52:54:00:01:00:01",
                                   "addresses": ["198.19.250.1", "2001:db8:ee::1"], "port": None}]
    assert run("overlay", "detach", "vm1-ov") == 0
    assert _list(run, capsys) == []


def test_bad_attach_is_exit_2_and_changes_nothing(run, capsys) -> None:  # type: ignore[no-untyped-def]
    rc = run("overlay", "attach", "vm1-ov", "--network", "nope", "--mac", "ff:ff:ff:ff:ff:ff", "--address", "1.2.3.4/24")
    err = capsys.readouterr().err
    assert rc == 2
    assert "network: got 'nope'" in err and "mac" in err and "address" in err
    assert _list(run, capsys) == []


def test_duplicate_mac_and_unknown_port_rejected_atomically(run, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run("overlay", "attach", "a", "--network", "ov", "--mac", "52:54:00:01:00:01") == 0
    assert run("overlay", "attach", "b", "--network", "ov", "--mac", "52:54:00:01:00:01") == 2
    assert run("overlay", "attach", "c", "--network", "ov", "--mac", "52:54:00:01:00:03", "--port", "ghost") == 2
    assert run("overlay", "detach", "a", "ghost") == 2
    assert [a["interface"] for a in _list(run, capsys)] == ["a"]


def test_port_delete_takes_its_attachments(run, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run("port", "add", "vm1", "--mac", "52:54:00:00:00:01", "--network", "public", "--ipv4", "203.0.113.1") == 0
    assert run("overlay", "attach", "vm1-ov", "--network", "ov", "--mac", "52:54:00:01:00:01", "--port", "vm1") == 0
    assert run("overlay", "attach", "other", "--network", "ov", "--mac", "52:54:00:01:00:02") == 0
    assert run("port", "del", "vm1") == 0
    assert [a["interface"] for a in _list(run, capsys)] == ["other"]


def test_list_json_reimports_identically_and_bad_import_changes_nothing(run, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("overlay", "attach", "a", "--network", "ov", "--mac", "52:54:00:01:00:01", "--address", "198.19.250.1") == 0
    assert run("overlay", "attach", "b", "--network", "ov", "--mac", "52:54:00:01:00:02") == 0
    saved = _list(run, capsys)
    dump = tmp_path / "att.json"
    dump.write_text(json.dumps(saved))
    assert run("overlay", "detach", "a", "b") == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(saved + [{"interface": "c", "network": "ov", "mac": "zz", "addresses": []}]))
    capsys.readouterr()
    assert run("overlay", "import", str(bad)) == 2
    assert "[2].mac" in capsys.readouterr().err
    assert _list(run, capsys) == []
    assert run("overlay", "import", str(dump)) == 0
    assert _list(run, capsys) == saved


@pytest.mark.parametrize("argv", [
    ["bench", "miss", "--entries", "0"],
    ["bench", "miss", "--shell-seconds", "x"],
    ["bench", "overlay", "--attachments", "999"],
    ["lab", "measure", "--frames", "0"],
    ["lab", "up", "--topology", "vxlan", "--mode", "nope"],
])
def test_bad_bench_and_lab_arguments_exit_2(argv: list[str], capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "expected" in err or "invalid choice" in err


@pytest.mark.parametrize("argv, where", [
    (["lab", "up", "--name", "hvxnone", "--topology", "vxlan"], "--mode"),
    (["lab", "up", "--name", "hvxnone", "--mode", "multicast"], "--mode"),
])
def test_lab_up_option_mistakes_exit_2_before_building(argv: list[str], where: str, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(argv) == 2
    assert where in capsys.readouterr().err
