"""What the command-line tests share: running ``python -m anyrdzv`` as a user would, the
one-line error they expect, and the certificates and mutual-TLS etcd of the TLS tests."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import httpx
import trustme
from cryptography.hazmat.primitives import serialization

from anyrdzv._cli._secrets import PASSWORD_VARIABLE
from tests._support.etcd_server import EtcdServer

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

#: The passphrase of the ``encrypted-key`` of :func:`make_pki`.
PASSPHRASE = "open sesame"

#: The PEM files of :func:`make_pki`.
PKI_FILES = (
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


def environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the etcd password, and ``env`` over it."""
    environ = {k: v for k, v in os.environ.items() if k != PASSWORD_VARIABLE}
    return {**environ, **(env or {})}


def cli_command(*args: str) -> list[str]:
    """The command line of ``python -m anyrdzv ARGS``."""
    return [sys.executable, "-m", "anyrdzv", *args]


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, stdin: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m anyrdzv ARGS`` in a subprocess, as a user would.

    :param env: variables to set, over a copy of this environment without the password
    :param stdin: the subprocess's stdin (``subprocess.DEVNULL``: not a terminal)
    """
    return subprocess.run(
        cli_command(*args),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env=environment(env),
        stdin=stdin,
    )


def start_cli(*args: str) -> subprocess.Popen[str]:
    """Start ``python -m anyrdzv ARGS`` in a subprocess, its stdout and stderr piped as
    text: for a command that runs until it is stopped, as ``--watch`` does."""
    return subprocess.Popen(
        cli_command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )


def assert_one_line_error(
    proc: subprocess.CompletedProcess[str], status: int, *parts: str, command: str = "members"
) -> None:
    """The command failed with ``status`` and one line on stderr that has every part."""
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"anyrdzv {command}: error: "), lines[0]
    for part in parts:
        assert part in lines[0]


def make_pki(workdir: Path) -> dict[str, Path]:
    """A CA, etcd's server certificate, and client certificates, as PEM files in
    ``workdir``: each of :data:`PKI_FILES`, by name."""
    ca = trustme.CA()
    files = {name: workdir / f"{name}.pem" for name in PKI_FILES}
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
        serialization.BestAvailableEncryption(PASSPHRASE.encode()),
    )
    files["encrypted-key"].write_bytes(encrypted)
    stranger = trustme.CA().issue_cert("stranger.anyrdzv.test")
    stranger.private_key_and_cert_chain_pem.write_to_path(str(files["stranger-both"]))
    return files


def mutual_tls_variables(pki: dict[str, Path]) -> dict[str, str]:
    """The environment that makes etcd want a client certificate signed by ``pki``'s CA."""
    return {"ETCD_CLIENT_CERT_AUTH": "true", "ETCD_TRUSTED_CA_FILE": str(pki["ca"])}


class MutualTlsEtcdServer(EtcdServer):
    """An etcd on HTTPS that wants a client certificate signed by the CA in ``pki``.

    EtcdServer has no flags for client certificates; etcd reads the same settings from
    the ETCD_* variables of :func:`mutual_tls_variables`, which its process inherits: set
    them while it starts. Its readiness check has no client certificate either, so this
    one polls with one.
    """

    def __init__(self, workdir: Path, pki: dict[str, Path]) -> None:
        super().__init__(workdir, cert=pki["server-cert"], key=pki["server-key"], ca_file=pki["ca"])
        self.pki = pki

    def wait_ready(self, timeout: float) -> None:
        context = ssl.create_default_context(cafile=str(self.pki["ca"]))
        context.load_cert_chain(self.pki["client-both"])
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


def tls_args(server: EtcdServer, pki: dict[str, Path], *files: str) -> list[str]:
    """``members --json`` on ``server``; ``files`` are option and pki name pairs."""
    args = ["members", "--etcd", server.endpoint, "--group", "g", "--json", "--timeout", "3"]
    for option, name in zip(files[::2], files[1::2], strict=True):
        args += [option, str(pki[name])]
    return args
