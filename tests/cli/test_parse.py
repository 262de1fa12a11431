"""``anyrdzv parse``: the endpoint and configuration, in words and as JSON."""

from __future__ import annotations

import json

import pytest

from anyrdzv._cli._main import main
from tests._support.cli import run_cli


def test_parse_readable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parse", "--rdzv-endpoint", "[::1]:29400", "--rdzv-conf", "a=1,b=2"]) == 0
    out = capsys.readouterr().out
    assert "host:     ::1" in out
    assert "port:     29400" in out
    assert "endpoint: [::1]:29400" in out
    assert "  a = 1" in out
    assert "  b = 2" in out


def test_parse_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["parse", "--rdzv-endpoint", "node1", "--rdzv-conf", "join_timeout=60", "--json"]
    assert main([*args, "--default-port", "2379"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "host": "node1",
        "port": 2379,
        "endpoint": "node1:2379",
        "config": {"join_timeout": "60"},
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rdzv-endpoint", "h:99999"], "The port number of the rendezvous endpoint 'h:99999'"),
        (["--rdzv-endpoint", "~"], "The hostname of the rendezvous endpoint '~'"),
        (["--rdzv-conf", "a"], "The rendezvous configuration option 'a' must have a value"),
    ],
)
def test_parse_bad_input_exits_2_without_traceback(args: list[str], message: str) -> None:
    proc = run_cli("parse", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("port", [0, 65535])
def test_default_port_range_ends_are_accepted(
    port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["parse", "--rdzv-endpoint", "h", "--default-port", str(port), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["port"] == port
