"""The options the commands share: the endpoint's ``--default-port``, and etcd's TLS
files, checked before any connection and used against an etcd that wants a client
certificate."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests._support.cli import assert_one_line_error, run_cli, tls_args

if TYPE_CHECKING:
    from pathlib import Path

    from tests._support.etcd_server import EtcdServer


@pytest.mark.parametrize("command", ["parse", "doctor"])
@pytest.mark.parametrize("port", ["-5", "-1", "65536", "x", "1e3", ""])
def test_bad_default_port_is_a_usage_error(command: str, port: str) -> None:
    proc = run_cli(command, "--rdzv-endpoint", "h", "--default-port", port)
    assert proc.returncode == 2
    assert f"argument --default-port: must be a port number from 0 to 65535, got {port!r}" in (
        proc.stderr
    )
    assert proc.stdout == ""


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

    def test_key_without_cert(self, pki: dict[str, Path]) -> None:
        args = ["members", "--etcd", "h", "--group", "g", "--key", str(pki["client-key"])]
        assert_one_line_error(run_cli(*args), 2, "--key needs --cert")

    def test_empty_path_is_a_missing_file(self) -> None:
        proc = run_cli("members", "--etcd", "h", "--group", "g", "--cacert", "")
        assert_one_line_error(proc, 2, "--cacert '': no such file")
