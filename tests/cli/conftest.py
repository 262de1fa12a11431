"""Fixtures of the command-line tests: the certificates and the etcd that wants a client
certificate, shared by the TLS tests of the options and the passphrase tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests._support.cli import MutualTlsEtcdServer, make_pki, mutual_tls_variables

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, etcd's server certificate, and client certificates, as PEM files."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def mtls_etcd(
    tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path], need_etcd: None
) -> Iterator[MutualTlsEtcdServer]:
    """An etcd on HTTPS that wants a client certificate signed by the CA in ``pki``."""
    server = MutualTlsEtcdServer(tmp_path_factory.mktemp("etcd-mtls"), pki)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in mutual_tls_variables(pki).items():
                patch.setenv(name, value)
            server.start()
        yield server
    finally:
        server.stop()
