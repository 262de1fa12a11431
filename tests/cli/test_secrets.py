"""Secrets: the etcd password (``$ANYRDZV_ETCD_PASSWORD``, the prompt, ``NAME:PASSWORD``
with its warning) against an etcd with auth on, and the passphrase of an encrypted key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from anyrdzv._cli._main import main
from anyrdzv._cli._secrets import PASSWORD_VARIABLE
from tests._support.cli import (
    PASSPHRASE,
    assert_one_line_error,
    cli_command,
    environment,
    run_cli,
    tls_args,
)
from tests._support.etcd_server import EtcdServer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

_PASSWORD = "s3cret"


@pytest.fixture(scope="module")
def auth_etcd(tmp_path_factory: pytest.TempPathFactory, need_etcd: None) -> Iterator[EtcdServer]:
    """An etcd with auth on, and the user root with password ``_PASSWORD``."""
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
        proc = run_cli(*auth_args(auth_etcd, "--user", "root"), env=env, stdin=subprocess.DEVNULL)
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
        cmd = cli_command(*auth_args(auth_etcd, "--user", "root"))
        # A new session has no controlling terminal, so getpass reads the one on stdin.
        with subprocess.Popen(
            cmd,
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=environment(),
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


class TestKeyPassphrase:
    """An encrypted client key: its passphrase is asked for on a terminal, never elsewhere."""

    def test_encrypted_key_without_a_terminal(self, pki: dict[str, Path]) -> None:
        cert, key = str(pki["client-cert"]), str(pki["encrypted-key"])
        args = ["members", "--etcd", "h", "--group", "g", "--cert", cert, "--key", key]
        proc = run_cli(*args, stdin=subprocess.DEVNULL)
        assert_one_line_error(
            proc, 2, f"--key {key!r}: the key is encrypted, and stdin is not a terminal"
        )

    @pytest.mark.parametrize(("typed", "works"), [(PASSPHRASE, True), ("wrong", False)])
    def test_encrypted_key_passphrase_at_the_prompt(
        self,
        mtls_etcd: EtcdServer,
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

        key = str(pki["encrypted-key"])
        monkeypatch.setattr("sys.stdin.isatty", lambda: True)
        monkeypatch.setattr("getpass.getpass", fake_getpass)
        args = tls_args(mtls_etcd, pki, "--cacert", "ca", "--cert", "client-cert")
        args += ["--key", key]
        if works:
            assert main(args) == 0  # and the decrypted key gets through to etcd
            assert json.loads(capsys.readouterr().out)["members"] == {}
        else:
            with pytest.raises(SystemExit) as info:
                main(args)
            assert info.value.code == 2
            assert capsys.readouterr().err == (
                f"anyrdzv members: error: --key {key!r}: cannot decrypt the key: "
                "wrong passphrase?\n"
            )
        assert prompts == [f"passphrase for {key}: "]
