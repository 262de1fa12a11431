from __future__ import annotations

import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
import trustme
from cryptography.hazmat.primitives import serialization

import anyrdzv
from anyrdzv import EtcdStore, Heartbeat
from anyrdzv._cli._main import PASSWORD_VARIABLE, build_parser, log_level, main

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping
    from pathlib import Path

    from tests._support.etcd_cluster import EtcdCluster
    from tests._support.etcd_server import EtcdServer


def run_cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m anyrdzv ARGS`` in a subprocess, as a user would.

    :param env: variables to set, over a copy of this environment without the password
    """
    environment = {k: v for k, v in os.environ.items() if k != PASSWORD_VARIABLE}
    return subprocess.run(
        [sys.executable, "-m", "anyrdzv", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env={**environment, **(env or {})},
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], status: int, *parts: str) -> None:
    """The command failed with ``status`` and one line on stderr that has every part."""
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("anyrdzv members: error: "), lines[0]
    for part in parts:
        assert part in lines[0]


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


def test_members_takes_an_http_url(etcd_endpoint: str, key_prefix: str) -> None:
    args = members_args(f"http://{etcd_endpoint}", key_prefix)
    proc = run_cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["members"] == {}


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
        (["--etcd", "h", "--group", "g", "--user", "root"], 2, "--user 'root' needs a password"),
        (["--etcd", "h", "--group", "g", "--user", ":pw"], 2, "--user needs a user name before"),
        (["--etcd", "ftp://h", "--group", "g"], 2, "endpoint must be host[:port] or an http://"),
    ],
)
def test_members_errors(args: list[str], status: int, message: str) -> None:
    proc = run_cli("members", *args)
    assert proc.returncode == status
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert ":pw" not in proc.stderr  # a password is never echoed


# -- version and logging --------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"anyrdzv {anyrdzv.__version__}\n"


def test_version_in_a_subprocess() -> None:
    proc = run_cli("--version")
    assert (proc.returncode, proc.stdout) == (0, f"anyrdzv {anyrdzv.__version__}\n")


class TestLogLevel:
    @pytest.mark.parametrize(
        ("args", "level"),
        [
            (["parse"], logging.WARNING),
            (["-v", "parse"], logging.INFO),
            (["-vv", "parse"], logging.DEBUG),
            (["-vvv", "parse"], logging.DEBUG),
            (["parse", "-v"], logging.INFO),
            (["-v", "doctor", "--verbose"], logging.DEBUG),
            (["--log-level", "error", "parse"], logging.ERROR),
            (["members", "--etcd", "h", "--group", "g", "--log-level", "DEBUG"], logging.DEBUG),
            (["--log-level", "INFO", "parse", "--log-level", "CRITICAL"], logging.CRITICAL),
            (["-vv", "parse", "--log-level", "WARNING"], logging.WARNING),
        ],
    )
    def test_level_from_the_arguments(self, args: list[str], level: int) -> None:
        assert log_level(build_parser().parse_args(args)) == level

    def test_unknown_level_is_a_usage_error(self) -> None:
        proc = run_cli("--log-level", "LOUD", "parse")
        assert proc.returncode == 2
        assert "argument --log-level: must be one of DEBUG, INFO, WARNING" in proc.stderr
        assert "got 'LOUD'" in proc.stderr

    # The command is swapped for one that logs from a library logger, in a subprocess:
    # the CLI configures logging with basicConfig, which leaves pytest's logging alone.
    _LOGGING_PROGRAM = """
import logging, sys
import anyrdzv._cli._main as cli
def command(args, out):
    for level in (logging.DEBUG, logging.INFO, logging.WARNING):
        logging.getLogger("anyrdzv.x").log(level, "record at %s", logging.getLevelName(level))
    return 0
cli._cmd_parse = command
sys.exit(cli.main(sys.argv[1:]))
"""

    @pytest.mark.parametrize(
        ("args", "shown"),
        [
            ([], {"WARNING"}),
            (["-v"], {"INFO", "WARNING"}),
            (["-vv"], {"DEBUG", "INFO", "WARNING"}),
            (["--log-level", "debug"], {"DEBUG", "INFO", "WARNING"}),
            (["--log-level", "ERROR"], set()),
        ],
    )
    def test_records_reach_stderr(self, args: list[str], shown: set[str]) -> None:
        proc = subprocess.run(
            [sys.executable, "-c", self._LOGGING_PROGRAM, *args, "parse"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == ""
        for level in ("DEBUG", "INFO", "WARNING"):
            line = f"{level} anyrdzv.x: record at {level}"
            assert (line in proc.stderr) == (level in shown), proc.stderr


# -- bad option values ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["parse", "doctor"])
@pytest.mark.parametrize("port", ["-5", "-1", "65536", "x", "1e3", ""])
def test_bad_default_port_is_a_usage_error(command: str, port: str) -> None:
    proc = run_cli(command, "--rdzv-endpoint", "h", "--default-port", port)
    assert proc.returncode == 2
    assert f"argument --default-port: must be a port number from 0 to 65535, got {port!r}" in (
        proc.stderr
    )
    assert proc.stdout == ""


@pytest.mark.parametrize("port", [0, 65535])
def test_default_port_range_ends_are_accepted(
    port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["parse", "--rdzv-endpoint", "h", "--default-port", str(port), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["port"] == port


_LONG = 100_000


@pytest.mark.parametrize(
    "args",
    [
        ["parse", "--rdzv-endpoint", "~" * _LONG],
        ["doctor", "--rdzv-endpoint", "h:" + "9" * _LONG],
        ["parse", "--rdzv-conf", "k" * _LONG],
        ["parse", "--default-port", "9" * _LONG],
        ["--log-level", "L" * _LONG, "parse"],
        ["parse", "--no-such-option", "x" * _LONG],
        ["members", "--etcd", "~" * _LONG, "--group", "g"],
        ["members", "--etcd", "h", "--group", "a/" + "g" * _LONG],
        ["members", "--etcd", "h", "--group", "g", "--cacert", "/" * _LONG],
        ["members", "--etcd", "h", "--group", "g", "--user", "u" * _LONG],
    ],
    ids=lambda args: " ".join(a[:12] for a in args),
)
def test_long_values_are_not_echoed_whole(args: list[str]) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "error: " in proc.stderr
    assert len(proc.stderr) < 2_000


def test_long_endpoint_is_cut_with_its_length() -> None:
    proc = run_cli("parse", "--rdzv-endpoint", "~" * _LONG)
    assert proc.stderr == (
        f"anyrdzv parse: error: The hostname of the rendezvous endpoint '{'~' * 300}... "
        f"({_LONG} characters)' must be a dot-separated list of labels, an IPv4 address, "
        "or an IPv6 address.\n"
    )


def test_error_with_a_newline_stays_on_one_line() -> None:
    proc = run_cli("parse", "--rdzv-endpoint", "a\nb:1")
    assert proc.returncode == 2
    assert proc.stderr == (
        "anyrdzv parse: error: The hostname of the rendezvous endpoint 'a\\nb:1' must be a "
        "dot-separated list of labels, an IPv4 address, or an IPv6 address.\n"
    )


# -- members: errors while running ----------------------------------------------------------


class TestMembersFailures:
    """Whatever goes wrong once the store is open is one line on stderr and status 1."""

    def test_bad_data_is_one_line(
        self,
        etcd_endpoint: str,
        key_prefix: str,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        async def bad_members(*args: object, **kwargs: object) -> object:
            raise ValueError("bad member data\nsecond line")

        monkeypatch.setattr("anyrdzv._cli._main.members", bad_members)
        assert main(members_args(etcd_endpoint, key_prefix)) == 1
        captured = capsys.readouterr()
        assert captured.err == "anyrdzv members: error: ValueError: bad member data\\nsecond line\n"

    def test_store_error_in_a_group_during_watch(
        self,
        etcd_endpoint: str,
        key_prefix: str,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        async def failing_watch(*args: object, **kwargs: object) -> AsyncIterator[object]:
            yield anyrdzv.MembersSnapshot(revision=7, members={"n": b"p"})

            async def fail() -> None:
                raise anyrdzv.StoreConnectionError("etcd went away")

            async with anyio.create_task_group() as group:  # raises an ExceptionGroup
                group.start_soon(fail)

        monkeypatch.setattr("anyrdzv._cli._main.watch_members", failing_watch)
        assert main([*members_args(etcd_endpoint, key_prefix), "--watch", "--json"]) == 1
        captured = capsys.readouterr()
        assert json.loads(captured.out)["members"] == {"n": "p"}
        assert captured.err == "anyrdzv members: error: etcd went away\n"

    def test_network_fault_that_escapes_the_store_is_one_line(
        self,
        etcd_endpoint: str,
        key_prefix: str,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        async def tls_fault(*args: object, **kwargs: object) -> object:
            raise ssl.SSLError(1, "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] bad certificate")

        monkeypatch.setattr("anyrdzv._cli._main.members", tls_fault)
        with caplog.at_level(logging.DEBUG, logger="anyrdzv._cli._main"):
            assert main(members_args(etcd_endpoint, key_prefix)) == 1
        assert capsys.readouterr().err == (
            "anyrdzv members: error: SSLError: [SSL: SSLV3_ALERT_BAD_CERTIFICATE] bad certificate\n"
        )
        # -vv shows the traceback too.
        [record] = [r for r in caplog.records if r.name == "anyrdzv._cli._main"]
        assert record.levelno == logging.DEBUG
        assert record.exc_info is not None

    def test_a_bug_still_shows_its_traceback(
        self, etcd_endpoint: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def buggy_members(*args: object, **kwargs: object) -> object:
            raise ZeroDivisionError("a bug")

        monkeypatch.setattr("anyrdzv._cli._main.members", buggy_members)
        with pytest.raises(ZeroDivisionError):
            main(members_args(etcd_endpoint, key_prefix))


# -- members: credentials -------------------------------------------------------------------

_PASSWORD = "s3cret"


@pytest.fixture(scope="module")
def auth_etcd(tmp_path_factory: pytest.TempPathFactory, need_etcd: None) -> Iterator[EtcdServer]:
    """An etcd with auth on, and the user root with password ``_PASSWORD``."""
    from tests._support.etcd_server import EtcdServer

    server = EtcdServer(tmp_path_factory.mktemp("etcd-auth"))
    server.start()
    server.enable_auth(_PASSWORD)
    yield server
    server.stop()


def auth_args(server: EtcdServer, *user: str) -> list[str]:
    return ["members", "--etcd", server.endpoint, "--group", "g", "--json", *user]


class TestCredentials:
    def test_password_from_the_environment(self, auth_etcd: EtcdServer) -> None:
        proc = run_cli(*auth_args(auth_etcd, "--user", "root"), env={PASSWORD_VARIABLE: _PASSWORD})
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["members"] == {}
        assert proc.stderr == ""

    def test_wrong_password_from_the_environment(self, auth_etcd: EtcdServer) -> None:
        proc = run_cli(*auth_args(auth_etcd, "--user", "root"), env={PASSWORD_VARIABLE: "wrong"})
        assert_one_line_error(proc, 1, "etcd refused")

    def test_name_colon_password_works_and_warns(self, auth_etcd: EtcdServer) -> None:
        proc = run_cli(*auth_args(auth_etcd, "--user", f"root:{_PASSWORD}"))
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["members"] == {}
        assert proc.stderr == (
            "anyrdzv members: warning: --user NAME:PASSWORD shows the password to everyone "
            f"on this node (ps); use --user NAME with ${PASSWORD_VARIABLE}, or at the prompt\n"
        )

    def test_name_colon_password_wins_over_the_environment(self, auth_etcd: EtcdServer) -> None:
        args = auth_args(auth_etcd, "--user", f"root:{_PASSWORD}")
        proc = run_cli(*args, env={PASSWORD_VARIABLE: "wrong"})
        assert proc.returncode == 0, proc.stderr

    @pytest.mark.parametrize("value", [None, ""])
    def test_no_password_and_no_terminal_is_a_clear_error(
        self, auth_etcd: EtcdServer, value: str | None
    ) -> None:
        env = {} if value is None else {PASSWORD_VARIABLE: value}
        proc = subprocess.run(
            [sys.executable, "-m", "anyrdzv", *auth_args(auth_etcd, "--user", "root")],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
            stdin=subprocess.DEVNULL,
            env={**{k: v for k, v in os.environ.items() if k != PASSWORD_VARIABLE}, **env},
        )
        assert_one_line_error(
            proc, 2, f"--user 'root' needs a password: set ${PASSWORD_VARIABLE}, or run on a"
        )

    def test_prompt_on_a_terminal(
        self,
        auth_etcd: EtcdServer,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        prompts: list[str] = []

        def fake_getpass(prompt: str) -> str:
            prompts.append(prompt)
            return _PASSWORD

        monkeypatch.delenv(PASSWORD_VARIABLE, raising=False)
        monkeypatch.setattr("sys.stdin.isatty", lambda: True)
        monkeypatch.setattr("getpass.getpass", fake_getpass)
        assert main(auth_args(auth_etcd, "--user", "root")) == 0
        assert prompts == ["etcd password for root: "]
        assert json.loads(capsys.readouterr().out)["members"] == {}

    @pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal is POSIX")
    def test_prompt_on_a_real_terminal(self, auth_etcd: EtcdServer) -> None:
        import pty

        controller, terminal = pty.openpty()
        environment = {k: v for k, v in os.environ.items() if k != PASSWORD_VARIABLE}
        cmd = [sys.executable, "-m", "anyrdzv", *auth_args(auth_etcd, "--user", "root")]
        # A new session has no controlling terminal, so getpass reads the one on stdin.
        with subprocess.Popen(
            cmd,
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=environment,
        ) as proc:
            os.close(terminal)
            assert proc.stderr is not None
            prompt = b""
            while not prompt.endswith(b"etcd password for root: "):
                chunk = os.read(proc.stderr.fileno(), 100)
                assert chunk, prompt
                prompt += chunk
            # Echo is off now, and input typed before it was flushed: type the password.
            os.write(controller, f"{_PASSWORD}\n".encode())
            out, err = proc.communicate(timeout=20)
        os.close(controller)
        assert proc.returncode == 0, err
        assert json.loads(out)["members"] == {}
        assert _PASSWORD.encode() not in prompt + err

    def test_the_environment_wins_over_the_prompt(
        self,
        auth_etcd: EtcdServer,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        def no_getpass(prompt: str) -> str:
            raise AssertionError("asked for the password")

        monkeypatch.setenv(PASSWORD_VARIABLE, _PASSWORD)
        monkeypatch.setattr("sys.stdin.isatty", lambda: True)
        monkeypatch.setattr("getpass.getpass", no_getpass)
        assert main(auth_args(auth_etcd, "--user", "root")) == 0

    def test_end_of_input_at_the_prompt(
        self,
        auth_etcd: EtcdServer,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        def eof_getpass(prompt: str) -> str:
            raise EOFError

        monkeypatch.delenv(PASSWORD_VARIABLE, raising=False)
        monkeypatch.setattr("sys.stdin.isatty", lambda: True)
        monkeypatch.setattr("getpass.getpass", eof_getpass)
        with pytest.raises(SystemExit) as info:
            main(auth_args(auth_etcd, "--user", "root"))
        assert info.value.code == 2
        assert capsys.readouterr().err == "anyrdzv members: error: no password given\n"

    def test_no_credentials_is_one_line(self, auth_etcd: EtcdServer) -> None:
        assert_one_line_error(run_cli(*auth_args(auth_etcd)), 1, "error: ")


# -- members: TLS files ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, etcd's server certificate, and client certificates, as PEM files."""
    workdir = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    files = {name: workdir / f"{name}.pem" for name in _PKI_FILES}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(files["server-cert"]))
    server.private_key_pem.write_to_path(str(files["server-key"]))
    client = ca.issue_cert("client.anyrdzv.test")
    client.cert_chain_pems[0].write_to_path(str(files["client-cert"]))
    client.private_key_pem.write_to_path(str(files["client-key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(files["client-both"]))
    other = ca.issue_cert("other.anyrdzv.test")
    other.private_key_pem.write_to_path(str(files["other-key"]))
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(_PASSPHRASE.encode()),
    )
    files["encrypted-key"].write_bytes(encrypted)
    stranger = trustme.CA().issue_cert("stranger.anyrdzv.test")
    stranger.private_key_and_cert_chain_pem.write_to_path(str(files["stranger-both"]))
    return files


_PKI_FILES = (
    "ca",
    "server-cert",
    "server-key",
    "client-cert",
    "client-key",
    "client-both",
    "other-key",
    "encrypted-key",
    "stranger-both",
)
_PASSPHRASE = "open sesame"


@pytest.fixture(scope="module")
def mtls_etcd(
    tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path], need_etcd: None
) -> Iterator[EtcdServer]:
    """An etcd on HTTPS that wants a client certificate signed by the CA in ``pki``.

    EtcdServer has no flags for client certificates; etcd reads the same settings
    from ETCD_* variables, which its process inherits. Its readiness check has no
    client certificate either, so this one polls with one.
    """
    from tests._support.etcd_server import EtcdServer

    class MutualTlsEtcdServer(EtcdServer):
        def wait_ready(self, timeout: float) -> None:
            context = ssl.create_default_context(cafile=str(pki["ca"]))
            context.load_cert_chain(pki["client-both"])
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"etcd exited: see {self.workdir / 'etcd.log'}")
                try:
                    httpx.get(f"{self.url}/health", verify=context, timeout=1)
                except httpx.HTTPError:
                    time.sleep(0.05)
                else:
                    return
            raise RuntimeError(f"etcd did not become ready within {timeout} s")

    server = MutualTlsEtcdServer(
        tmp_path_factory.mktemp("etcd-mtls"),
        cert=pki["server-cert"],
        key=pki["server-key"],
        ca_file=pki["ca"],
    )
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("ETCD_CLIENT_CERT_AUTH", "true")
            patch.setenv("ETCD_TRUSTED_CA_FILE", str(pki["ca"]))
            server.start()
        yield server
    finally:
        server.stop()


def tls_args(server: EtcdServer, pki: dict[str, Path], *files: str) -> list[str]:
    """``members`` on ``server``; ``files`` are option and pki name pairs."""
    args = ["members", "--etcd", server.endpoint, "--group", "g", "--json", "--timeout", "3"]
    for option, name in zip(files[::2], files[1::2], strict=True):
        args += [option, str(pki[name])]
    return args


class TestTls:
    def test_cert_and_key(self, mtls_etcd: EtcdServer, pki: dict[str, Path]) -> None:
        args = tls_args(mtls_etcd, pki, "--cacert", "ca", "--cert", "client-cert")
        proc = run_cli(*args, "--key", str(pki["client-key"]))
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["members"] == {}

    def test_cert_holding_its_key(self, mtls_etcd: EtcdServer, pki: dict[str, Path]) -> None:
        proc = run_cli(*tls_args(mtls_etcd, pki, "--cacert", "ca", "--cert", "client-both"))
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["members"] == {}

    def test_https_url(self, mtls_etcd: EtcdServer, pki: dict[str, Path]) -> None:
        args = tls_args(mtls_etcd, pki, "--cacert", "ca", "--cert", "client-both")
        args[args.index("--etcd") + 1] = f"https://{mtls_etcd.endpoint}"
        proc = run_cli(*args)
        assert proc.returncode == 0, proc.stderr

    def test_https_url_without_cacert_uses_the_system_cas(self, mtls_etcd: EtcdServer) -> None:
        # The test CA is not among the system's: the server is not trusted.
        proc = run_cli("members", "--etcd", mtls_etcd.url, "--group", "g", "--timeout", "3")
        assert_one_line_error(proc, 1, "TLS")

    def test_no_client_certificate_is_one_line(
        self, mtls_etcd: EtcdServer, pki: dict[str, Path]
    ) -> None:
        assert_one_line_error(run_cli(*tls_args(mtls_etcd, pki, "--cacert", "ca")), 1)

    def test_certificate_of_another_ca_is_one_line(
        self, mtls_etcd: EtcdServer, pki: dict[str, Path]
    ) -> None:
        args = tls_args(mtls_etcd, pki, "--cacert", "ca", "--cert", "stranger-both")
        assert_one_line_error(run_cli(*args), 1)

    def test_plain_http_url_with_cacert_is_a_usage_error(self, pki: dict[str, Path]) -> None:
        args = ["members", "--etcd", "http://h:1", "--group", "g", "--cacert", str(pki["ca"])]
        assert_one_line_error(run_cli(*args), 2, "says plain HTTP")


class TestTlsFiles:
    """Bad files are refused before any connection, with one line naming the file."""

    @pytest.mark.parametrize(
        ("option", "path", "problem"),
        [
            ("--cacert", "/nonexistent/ca.pem", "no such file"),
            ("--cacert", "/etc/passwd", "holds no PEM certificate"),
            ("--cacert", "/", "it is a directory, not a file"),
            ("--cert", "/nonexistent/cert.pem", "no such file"),
            ("--cert", "/etc/passwd", "holds no PEM certificate"),
        ],
    )
    def test_bad_file(self, option: str, path: str, problem: str) -> None:
        proc = run_cli("members", "--etcd", "h", "--group", "g", option, path)
        assert_one_line_error(proc, 2, f"{option} {path!r}: {problem}")

    def test_private_key_as_cacert(self, pki: dict[str, Path]) -> None:
        path = str(pki["client-key"])
        proc = run_cli("members", "--etcd", "h", "--group", "g", "--cacert", path)
        assert_one_line_error(proc, 2, f"--cacert {path!r}: holds no PEM certificate")

    def test_cert_without_its_key(self, pki: dict[str, Path]) -> None:
        path = str(pki["client-cert"])
        proc = run_cli("members", "--etcd", "h", "--group", "g", "--cert", path)
        assert_one_line_error(proc, 2, f"--cert {path!r}: holds no private key: give it with --key")

    @pytest.mark.parametrize(
        ("key", "problem"),
        [
            ("/nonexistent/key.pem", "no such file"),
            ("/etc/passwd", "holds no PEM private key"),
            ("/", "it is a directory, not a file"),
        ],
    )
    def test_bad_key(self, pki: dict[str, Path], key: str, problem: str) -> None:
        args = ["members", "--etcd", "h", "--group", "g", "--cert", str(pki["client-cert"])]
        assert_one_line_error(run_cli(*args, "--key", key), 2, f"--key {key!r}: {problem}")

    def test_key_of_another_certificate(self, pki: dict[str, Path]) -> None:
        cert, key = str(pki["client-cert"]), str(pki["other-key"])
        args = ["members", "--etcd", "h", "--group", "g", "--cert", cert, "--key", key]
        assert_one_line_error(
            run_cli(*args),
            2,
            f"--cert {cert!r} with --key {key!r}: cannot use them: the key is not",
        )

    def test_encrypted_key_without_a_terminal(self, pki: dict[str, Path]) -> None:
        cert, key = str(pki["client-cert"]), str(pki["encrypted-key"])
        args = ["members", "--etcd", "h", "--group", "g", "--cert", cert, "--key", key]
        proc = subprocess.run(
            [sys.executable, "-m", "anyrdzv", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        assert_one_line_error(
            proc, 2, f"--key {key!r}: the key is encrypted, and stdin is not a terminal"
        )

    @pytest.mark.parametrize(("typed", "works"), [(_PASSPHRASE, True), ("wrong", False)])
    def test_encrypted_key_passphrase_at_the_prompt(
        self,
        pki: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        typed: str,
        works: bool,
    ) -> None:
        prompts: list[str] = []

        def fake_getpass(prompt: str) -> str:
            prompts.append(prompt)
            return typed

        def fake_run(*args: object) -> int:
            return 0  # the TLS context is built: stop before connecting

        cert, key = str(pki["client-cert"]), str(pki["encrypted-key"])
        monkeypatch.setattr("sys.stdin.isatty", lambda: True)
        monkeypatch.setattr("getpass.getpass", fake_getpass)
        monkeypatch.setattr("anyio.run", fake_run)
        args = ["members", "--etcd", "h", "--group", "g", "--cert", cert, "--key", key]
        if works:
            assert main(args) == 0
        else:
            with pytest.raises(SystemExit) as info:
                main(args)
            assert info.value.code == 2
            assert capsys.readouterr().err == (
                f"anyrdzv members: error: --key {key!r}: cannot decrypt the key: "
                "wrong passphrase?\n"
            )
        assert prompts == [f"passphrase for {key}: "]

    def test_key_without_cert(self, pki: dict[str, Path]) -> None:
        args = ["members", "--etcd", "h", "--group", "g", "--key", str(pki["client-key"])]
        assert_one_line_error(run_cli(*args), 2, "--key needs --cert")

    def test_empty_path_is_a_missing_file(self) -> None:
        proc = run_cli("members", "--etcd", "h", "--group", "g", "--cacert", "")
        assert_one_line_error(proc, 2, "--cacert '': no such file")


@pytest.mark.slow
class TestDoctorEtcd:
    """``anyrdzv doctor --etcd LIST`` on a real 3-member cluster."""

    def test_a_healthy_cluster(self, etcd_cluster: EtcdCluster) -> None:
        result = run_cli("doctor", "--etcd", etcd_cluster.endpoint_list)
        assert result.returncode == 0, result.stderr
        leader = etcd_cluster.endpoints[etcd_cluster.leader_index()]
        assert f"quorum: yes (3 of 3 members answer; leader {leader})" in result.stdout
        for endpoint in etcd_cluster.endpoints:
            assert f"{endpoint}  yes" in result.stdout
        assert "3.4" in result.stdout
        report = json.loads(
            run_cli("doctor", "--json", "--etcd", etcd_cluster.endpoint_list).stdout
        )
        assert report["quorum"] is True
        assert report["leader"] == leader
        assert [m["leader"] for m in report["members"]].count(True) == 1
        assert all(m["reachable"] and m["db_size"] > 0 for m in report["members"])
        assert all(m["raft_term"] >= 1 and m["latency_ms"] > 0 for m in report["members"])

    def test_no_quorum_exits_non_zero(self, etcd_cluster: EtcdCluster) -> None:
        leader = etcd_cluster.leader_index()
        other = (leader + 1) % 3
        etcd_cluster.kill(leader)
        etcd_cluster.kill(other)
        started = time.monotonic()
        result = run_cli("doctor", "--etcd", etcd_cluster.endpoint_list, "--timeout", "2")
        assert time.monotonic() - started < 15
        assert result.returncode == 1
        assert "quorum: NO (1 of 3 members answer" in result.stdout
        assert f"{etcd_cluster.endpoints[leader]}: cannot reach etcd" in result.stdout
        # The survivor still names the dead leader until its election timeout, then
        # reports "no leader": a minority either way.

    def test_nothing_answers(self, etcd_cluster: EtcdCluster) -> None:
        etcd_cluster.close()
        result = run_cli("doctor", "--json", "--etcd", etcd_cluster.endpoint_list)
        assert result.returncode == 1
        report = json.loads(result.stdout)
        assert report["quorum"] is False
        assert not any(m["reachable"] for m in report["members"])

    def test_members_takes_the_list(self, etcd_cluster: EtcdCluster) -> None:
        etcd_cluster.kill(0)
        result = run_cli("members", "--etcd", etcd_cluster.endpoint_list, "--group", "g")
        assert result.returncode == 0, result.stderr
        assert "group 'g' at revision" in result.stdout

    @pytest.mark.parametrize(
        ("etcd", "message"),
        [
            ("h1:2379,,h3", "empty member (number 2)"),
            ("h1,h2:99999", "etcd member 'h2:99999' in the list"),
            ("h1,h1:2379", "lists etcd member 'h1:2379' twice"),
        ],
    )
    def test_a_bad_list_is_a_usage_error(self, etcd: str, message: str) -> None:
        result = run_cli("doctor", "--etcd", etcd)
        assert result.returncode == 2
        assert message in result.stderr
