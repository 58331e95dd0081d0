"""birdc output parsers against output captured from BIRD 2.0.12 (a hypervisor
and a route reflector in namespaces, see tests/netns/test_bird_session.py),
and the Birdc client against a stand-in birdc."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from hvrouter.bird import Birdc, BirdControlError, ProtocolState
from hvrouter.bird.parse import (
    parse_bfd_sessions,
    parse_bgp_sessions,
    parse_protocols,
    parse_reply,
)

DATA = Path(__file__).parent / "data" / "birdc"


def captured(name: str) -> str:
    return (DATA / name).read_text()


def test_reply_lines_keep_codes_and_drop_the_welcome() -> None:
    lines = parse_reply(captured("hv-bfd-sessions.txt"))
    assert [ln.code for ln in lines] == [1020, 1020, 1020]
    assert lines[0].text == "bfd1:"
    assert lines[2].text.startswith("198.51.100.11 ")


def test_show_protocols() -> None:
    rows = parse_protocols(parse_reply(captured("hv-protocols.txt")))
    assert len(rows) == 13
    assert rows[0] == ProtocolState("device1", "Device", "---", "up", "16:15:36.795", "")
    by_name = {r.name: r for r in rows}
    assert by_name["k_local_out4"].table == "t_local_out4"  # wider than its column
    assert by_name["p_public_local_out6"].info == "t_public6 <=> t_local_out6"
    bgp = by_name["rr1_pub"]
    assert (bgp.proto, bgp.state, bgp.info, bgp.up) == ("BGP", "up", "Established", True)
    rr = {r.name: r for r in parse_protocols(parse_reply(captured("rr-protocols.txt")))}
    assert rr["hv_pub"].info == "Passive" and not rr["hv_pub"].up
    assert rr["hv_pub_1"].info == "Established"


def test_bgp_sessions_of_a_hypervisor() -> None:
    sessions = parse_bgp_sessions(parse_reply(captured("hv-protocols-all.txt")))
    assert len(sessions) == 1
    s = sessions[0]
    assert (s["name"], s["state"], s["bgp_state"], s["neighbor"]) == ("rr1_pub", "up", "Established", "198.51.100.11")
    assert s["last_error"] == ""
    assert sorted(s["channels"]) == ["ipv4", "ipv6"]
    v4, v6 = s["channels"]["ipv4"], s["channels"]["ipv6"]
    assert (v4["state"], v4["table"], v4["imported"], v4["exported"]) == ("UP", "t_public4", 0, 1)
    assert (v6["table"], v6["exported"]) == ("t_public6", 3)
    # IPv6 next hop over an IPv4 session: the interface's global address,
    # plus our link-local.
    assert v6["next_hop"].startswith("2001:db8:a::1 fe80::")


def test_bgp_sessions_of_a_route_reflector_skip_the_dynamic_template() -> None:
    sessions = parse_bgp_sessions(parse_reply(captured("rr-protocols-all.txt")))
    assert [s["name"] for s in sessions] == ["hv_pub_1"]
    s = sessions[0]
    assert s["bgp_state"] == "Established" and s["neighbor"] == "198.51.100.1"
    assert s["channels"]["ipv4"]["imported"] == 1
    assert s["channels"]["ipv6"]["imported"] == 3


def test_bgp_session_down_reports_state_and_last_error() -> None:
    (s,) = parse_bgp_sessions(parse_reply(captured("hv-down-protocols-all.txt")))
    assert (s["state"], s["bgp_state"]) == ("start", "Active")
    assert s["last_error"] == "Received: Administrative shutdown"
    assert s["info"] == "Active Received: Administrative shutdown"
    assert s["channels"]["ipv4"]["state"] == "DOWN"
    assert s["channels"]["ipv4"]["imported"] == 0


def test_bfd_sessions() -> None:
    assert parse_bfd_sessions(parse_reply(captured("hv-bfd-sessions.txt"))) == [
        {
            "protocol": "bfd1",
            "address": "198.51.100.11",
            "interface": "fa-pub",
            "state": "Up",
            "since": "16:16:39.137",
            "interval_s": 0.1,
            "timeout_s": 0.3,
        }
    ]
    (down,) = parse_bfd_sessions(parse_reply(captured("hv-down-bfd-sessions.txt")))
    assert down["state"] == "Down" and down["interval_s"] == 1.0


def test_long_time_format_is_parsed_too() -> None:
    out = "0001 BIRD 2.0.12 ready.\n2002-Name Proto Table State Since Info\n" \
          "1002-rr1_pub    BGP        ---        up     2024-05-01 12:00:00  Established   \n"
    (row,) = parse_protocols(parse_reply(out))
    assert (row.since, row.info) == ("2024-05-01 12:00:00", "Established")


# -- the client, against a stand-in birdc ------------------------------------------------


@pytest.fixture
def fake_birdc(tmp_path: Path) -> tuple[Path, Path]:
    """A birdc that prints <dir>/reply and exits with <dir>/rc; logs its argv."""
    script = tmp_path / "birdc"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {tmp_path}/argv\n'
        f"cat {tmp_path}/reply\n"
        f"exit $(cat {tmp_path}/rc)\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script, tmp_path


def _answer(where: Path, reply: str, rc: int = 0) -> None:
    (where / "reply").write_text(reply)
    (where / "rc").write_text(str(rc))


def test_client_runs_birdc_verbose_on_its_socket(fake_birdc: tuple[Path, Path]) -> None:
    script, where = fake_birdc
    client = Birdc(Path("/run/x/bird.ctl"), birdc=str(script))
    _answer(where, captured("hv-protocols.txt"))
    assert [p.name for p in client.protocols()][-1] == "rr1_pub"
    _answer(where, captured("hv-protocols-all.txt"))
    assert client.bgp_sessions()[0]["bgp_state"] == "Established"
    _answer(where, captured("hv-bfd-sessions.txt"))
    assert client.bfd_sessions()[0]["state"] == "Up"
    assert (where / "argv").read_text().splitlines() == [
        "-v -s /run/x/bird.ctl show protocols",
        "-v -s /run/x/bird.ctl show protocols all",
        "-v -s /run/x/bird.ctl show bfd sessions",
    ]


def test_configure(fake_birdc: tuple[Path, Path]) -> None:
    script, where = fake_birdc
    client = Birdc(Path("/run/x/bird.ctl"), birdc=str(script))
    _answer(where, "0001 BIRD 2.0.12 ready.\n0002-Reading configuration from /etc/bird.conf\n0003 Reconfigured\n")
    client.configure()
    # bird rejects the file: birdc exits 1, the reply code says why
    _answer(where, "0001 BIRD 2.0.12 ready.\n0002-Reading configuration from /etc/bird.conf\n"
                   "8002 /etc/bird.conf:174:1 syntax error, unexpected GARBAGE\n", rc=1)
    with pytest.raises(BirdControlError) as err:
        client.configure()
    assert str(err.value) == (
        "birdc -s /run/x/bird.ctl configure: /etc/bird.conf:174:1 syntax error, unexpected GARBAGE"
    )
    _answer(where, "0001 BIRD 2.0.12 ready.\n0006 Reconfiguration ignored, shutdown in progress\n")
    with pytest.raises(BirdControlError, match="shutdown in progress"):
        client.configure()


def test_alive(fake_birdc: tuple[Path, Path]) -> None:
    script, where = fake_birdc
    client = Birdc(Path("/run/x/bird.ctl"), birdc=str(script))
    _answer(where, "0001 BIRD 2.0.12 ready.\n1000-BIRD 2.0.12\n1011-Router ID is 198.18.15.1\n"
                   "0013 Daemon is up and running\n")
    assert client.alive()
    _answer(where, "", rc=1)
    assert not client.alive()


def test_no_bfd_protocol_means_no_bfd_sessions(fake_birdc: tuple[Path, Path]) -> None:
    script, where = fake_birdc
    _answer(where, "0001 BIRD 2.0.12 ready.\n9001 There is no BFD protocol running\n", rc=1)
    assert Birdc(Path("/run/x/bird.ctl"), birdc=str(script)).bfd_sessions() == []


def test_client_timeout_names_socket_and_command(tmp_path: Path) -> None:
    script = tmp_path / "birdc"
    script.write_text("#!/bin/sh\nexec sleep 5\n")
    script.chmod(0o755)
    client = Birdc(Path("/run/x/bird.ctl"), birdc=str(script), timeout=0.2)
    with pytest.raises(BirdControlError) as err:
        client.protocols()
    assert str(err.value) == "birdc -s /run/x/bird.ctl show protocols: no answer in 0.2 s"


@pytest.mark.skipif(shutil.which("birdc") is None, reason="birdc (bird2) is not installed")
def test_real_birdc_without_bird_names_the_socket(tmp_path: Path) -> None:
    sock = tmp_path / "none.ctl"
    client = Birdc(sock)
    assert not client.alive()
    with pytest.raises(BirdControlError) as err:
        client.bgp_sessions()
    assert str(err.value).startswith(f"birdc -s {sock} show protocols all: Unable to connect")
