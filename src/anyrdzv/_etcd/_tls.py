"""TLS client contexts for etcd, from the file names a user gives (CA, cert, key)."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from .._checks import echo

if TYPE_CHECKING:
    from collections.abc import Callable


def _read_error(option: str, path: str, exc: OSError) -> ValueError:
    if isinstance(exc, FileNotFoundError):
        what = "no such file"
    elif isinstance(exc, IsADirectoryError):
        what = "it is a directory, not a file"
    else:
        what = f"cannot read it: {exc.strerror or exc}"
    return ValueError(f"{option} {echo(path)}: {what}")


def _read_pem(option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise _read_error(option, path, exc) from None


def client_context(
    cacert: str | None,
    cert: str | None,
    key: str | None,
    *,
    names: tuple[str, str, str] = ("cacert", "cert", "key"),
    passphrase: Callable[[], str] | None = None,
) -> ssl.SSLContext | None:
    """Build the TLS context that a CA file, a client certificate and its key ask for.

    With none of them, return ``None``: the store itself then decides (TLS with the
    system's CAs for an ``https://`` endpoint, plain HTTP otherwise).

    :param cacert: the CA bundle (PEM) to verify etcd with, or ``None`` for the system's
    :param cert: the client certificate (PEM), which may hold its key too
    :param key: the client certificate's key (PEM)
    :param names: how the three are named in messages (``--cacert``, or a conf key)
    :param passphrase: called for the passphrase of an encrypted key
    :raises ValueError: naming the file, if one is missing, unreadable or not PEM, or a
        key comes without its certificate
    """
    ca_name, cert_name, key_name = names
    if key is not None and cert is None:
        raise ValueError(f"{key_name} needs {cert_name}: give the client certificate too")
    if cacert is None and cert is None:
        return None
    if cacert is None:
        context = ssl.create_default_context()  # the system's CAs
    else:
        _read_pem(ca_name, cacert)
        try:
            context = ssl.create_default_context(cafile=cacert)
        except ssl.SSLError:
            raise ValueError(f"{ca_name} {echo(cacert)}: holds no PEM certificate") from None
        except OSError as exc:
            raise _read_error(ca_name, cacert, exc) from None
    if cert is not None:
        pem = _read_pem(cert_name, cert)
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise ValueError(f"{cert_name} {echo(cert)}: holds no PEM certificate")
        if key is None:
            if b"PRIVATE KEY-----" not in pem:
                raise ValueError(
                    f"{cert_name} {echo(cert)}: holds no private key: give it with {key_name}"
                )
        elif b"PRIVATE KEY-----" not in _read_pem(key_name, key):
            raise ValueError(f"{key_name} {echo(key)}: holds no PEM private key")
        key_option, key_file = (cert_name, cert) if key is None else (key_name, key)
        asked: list[bool] = []

        def ask() -> str:
            asked.append(True)
            if passphrase is None:
                raise ValueError(f"{key_option} {echo(key_file)}: the key is encrypted")
            return passphrase()

        try:
            context.load_cert_chain(cert, key, ask)
        except OSError as exc:  # ssl.SSLError included
            if asked:
                raise ValueError(
                    f"{key_option} {echo(key_file)}: cannot decrypt the key: wrong passphrase?"
                ) from None
            files = f"{cert_name} {echo(cert)}"
            if key is not None:
                files += f" with {key_name} {echo(key)}"
            reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
            if reason == "KEY_VALUES_MISMATCH":
                reason = "the key is not the certificate's"
            raise ValueError(f"{files}: cannot use them: {reason}") from None
    return context
