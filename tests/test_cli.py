from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

import anyio
import pytest

from anyrdzv import EtcdStore, Heartbeat
from anyrdzv._cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m anyrdzv ARGS`` in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "anyrdzv", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


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


def test_no_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_doctor_readable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--rdzv-endpoint", "127.0.0.1:1234"]) == 0
    out = capsys.readouterr().out
    assert "endpoint:   127.0.0.1:1234" in out
    assert "interfaces:" in out
    assert "decision:   this node HOSTS the store (matches=True)" in out
    assert "rule:       loopback: 127.0.0.1 is a loopback address" in out


def test_doctor_json_for_an_unresolvable_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["doctor", "--rdzv-endpoint", "no-such-host.invalid", "--timeout", "3", "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["endpoint"] == {
        "host": "no-such-host.invalid",
        "port": 29400,
        "str": "no-such-host.invalid:29400",
    }
    assert report["identity"]["interfaces"]
    assert report["decision"]["matches"] is False
    assert report["decision"]["rule"] in {"unresolvable", "timeout"}
    assert report["decision"]["elapsed"] >= 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rdzv-endpoint", "h:x"], "The port number of the rendezvous endpoint 'h:x'"),
        (["--rdzv-endpoint", "h", "--timeout", "-1"], "timeout must be positive or None"),
    ],
)
def test_doctor_bad_input_exits_2_without_traceback(args: list[str], message: str) -> None:
    proc = run_cli("doctor", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def etcd_endpoint(etcd_server: Any) -> str:
    endpoint: str = etcd_server.endpoint
    return endpoint


def members_args(etcd_endpoint: str, key_prefix: str) -> list[str]:
    """``anyrdzv members`` for group ``job`` under this test's own key prefix."""
    return ["members", "--etcd", etcd_endpoint, "--group", "job", "--prefix", key_prefix]


def test_members_lists_a_group(etcd_endpoint: str, key_prefix: str) -> None:
    async def put_members() -> None:
        async with EtcdStore(etcd_endpoint) as store:
            await store.put(f"{key_prefix}/job/members/node-1", b"pid 1")
            await store.put(f"{key_prefix}/job/members/node-0", b"pid 0")

    anyio.run(put_members)
    base = members_args(etcd_endpoint, key_prefix)
    proc = run_cli(*base)
    assert proc.returncode == 0, proc.stderr
    assert "group 'job' at revision" in proc.stdout
    assert "2 member(s)" in proc.stdout
    assert proc.stdout.index("node-0  pid 0") < proc.stdout.index("node-1  pid 1")
    proc = run_cli(*base, "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["members"] == {"node-0": "pid 0", "node-1": "pid 1"}


def test_members_watch_follows_events(etcd_endpoint: str, key_prefix: str) -> None:
    cmd = [sys.executable, "-m", "anyrdzv", *members_args(etcd_endpoint, key_prefix)]
    cmd += ["--watch", "--json"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["members"] == {}

        async def join_and_leave() -> None:
            async with (
                EtcdStore(etcd_endpoint) as store,
                Heartbeat(store, "job", "n1", interval=0.5, prefix=key_prefix),
            ):
                await anyio.sleep(0.2)

        anyio.run(join_and_leave)
        joined = json.loads(proc.stdout.readline())
        left = json.loads(proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert (joined["event"], joined["member"]) == ("JOINED", "n1")
    assert (left["event"], left["member"]) == ("LEFT", "n1")
    assert proc.returncode == 130
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--etcd", "127.0.0.1:1", "--group", "g", "--timeout", "1"], 1, "cannot reach etcd"),
        (["--etcd", "h:99999", "--group", "g"], 2, "The port number of the rendezvous endpoint"),
        (["--etcd", "h", "--group", "a/b"], 2, "group must be non-empty and contain no '/'"),
        (["--etcd", "h", "--group", "g", "--user", "root"], 2, "--user takes NAME:PASSWORD"),
    ],
)
def test_members_errors(args: list[str], status: int, message: str) -> None:
    proc = run_cli("members", *args)
    assert proc.returncode == status
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
