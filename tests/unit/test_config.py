"""Host config validation: every problem at once, each naming field, value, expectation."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
from factories import example_dict

from hvrouter.config import example_text, load_config, parse_config
from hvrouter.errors import InputError, Problem


def problems_of(data: object) -> list[Problem]:
    with pytest.raises(InputError) as info:
        parse_config(data)
    assert info.value.exit_code == 2
    return info.value.problems


def find(problems: list[Problem], where: str) -> Problem:
    hits = [p for p in problems if p.where == where]
    assert hits, f"no problem at {where}; got {[str(p) for p in problems]}"
    return hits[0]


def semantic_mistakes() -> dict[str, Any]:
    """Structurally valid, but wrong in five independent ways."""
    data = example_dict()
    data["tables"]["main-again"] = 254  # reserved (main)
    public = data["networks"][0]
    public["ipv4"]["gateway"] = "198.51.100.1"  # outside 203.0.113.0/24
    public["ipv6"]["gateway"] = "2001:db8::1"  # not link-local
    data["networks"].append(
        {"name": "public", "table": "nosuch", "ipv4": {"subnet": "192.0.2.0/24", "gateway": "192.0.2.1"}}
    )
    return data


# One (where, value, fragment of `expected`) per mistake in semantic_mistakes().
SEMANTIC_EXPECTED = [
    ("networks[0].ipv4.gateway", "198.51.100.1", "203.0.113.0/24"),
    ("networks[0].ipv6.gateway", "2001:db8::1", "link-local"),
    ("networks[1].name", "public", "once"),
    ("networks[1].table", "nosuch", "public"),
    ("tables.main-again", 254, "252-255"),
]


def test_example_validates() -> None:
    cfg = parse_config(example_dict())
    public = cfg.network_by_name["public"]
    assert public.ipv4 is not None
    assert public.ipv4.subnet == IPv4Network("203.0.113.0/24")
    assert public.ipv4.gateway == IPv4Address("203.0.113.254")
    assert cfg.table_id(public.table) == 90
    assert [u.interface for u in cfg.fabric.uplinks] == ["eth0", "eth1"]


def test_example_text_loads_from_file(tmp_path: Path) -> None:
    path = tmp_path / "hv.yaml"
    path.write_text(example_text())
    assert load_config(path) == parse_config(example_dict())


def test_semantic_mistakes_are_all_reported() -> None:
    problems = problems_of(semantic_mistakes())
    assert len(problems) == len(SEMANTIC_EXPECTED)
    for where, value, expected in SEMANTIC_EXPECTED:
        p = find(problems, where)
        assert p.value == value
        assert expected in p.expected


def test_rendered_error_names_every_problem() -> None:
    with pytest.raises(InputError) as info:
        parse_config(semantic_mistakes(), "config /etc/hv.yaml")
    text = str(info.value)
    assert text.startswith("config /etc/hv.yaml: 5 problem(s)")
    for where, value, _ in SEMANTIC_EXPECTED:
        assert f"{where}: got {value!r}" in text


@pytest.mark.parametrize(
    ("path", "key"),
    [((), "fabrik"), (("networks", 0, "ipv4"), "gatway"), (("rules",), "priorty")],
)
def test_unknown_key_is_reported_with_its_path(path: tuple[Any, ...], key: str) -> None:
    data: Any = example_dict()
    node = data
    for part in path:
        node = node[part]
    node[key] = 1
    (problem,) = problems_of(data)
    expected_where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in (*path, key)).lstrip(".")
    assert problem.where == expected_where
    assert problem.value == 1
    assert "no such field" in problem.expected


def test_type_errors_are_all_reported() -> None:
    data = example_dict()
    data["rtproto"] = "two-eleven"
    data["networks"][0]["ipv4"]["subnet"] = "203.0.113.0/33"
    data["networks"][0]["ipv6"]["mode"] = "per-port"
    problems = problems_of(data)
    assert {p.where for p in problems} >= {
        "rtproto",
        "networks[0].ipv4.subnet",
        "networks[0].ipv6.mode",
    }
    assert "prefix-per-port" in find(problems, "networks[0].ipv6.mode").expected


def test_typo_and_semantic_mistakes_are_reported_together() -> None:
    data = semantic_mistakes()
    data["fabrik"] = {}
    problems = problems_of(data)
    assert find(problems, "fabrik").value == {}
    for where, value, _ in SEMANTIC_EXPECTED:
        assert find(problems, where).value == value


def test_duplicate_table_id_and_overlapping_networks() -> None:
    data = example_dict()
    data["tables"]["again"] = 90
    data["networks"].append(
        {"name": "inner", "table": "public", "ipv4": {"subnet": "203.0.113.128/25", "gateway": "203.0.113.129"}}
    )
    problems = problems_of(data)
    assert find(problems, "tables.again").value == 90
    assert "203.0.113.0/24" in find(problems, "networks.inner").expected


def test_non_mapping_document() -> None:
    (problem,) = problems_of(["a", "list"])
    assert problem.where == "(top level)"
    assert problem.expected == "a mapping"


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("tables:\n  public: 90\nnetworks: [\n  {name: public\n")
    with pytest.raises(InputError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.where.startswith("line ")
    assert problem.expected == "valid YAML"
    assert str(path) in info.value.context


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(InputError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.where == "file"
    assert problem.value == str(path)
    assert info.value.exit_code == 2
