"""The options that several commands share (the rendezvous endpoint; etcd's members, TLS
files and user; a key prefix, ``--watch``, ``--json``, ``--timeout``), and the
:class:`~anyrdzv.EtcdStore` that the etcd options name."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .._checks import echo
from .._core._endpoint import try_parse_port
from .._etcd._store import EtcdStore
from .._etcd._tls import client_context
from ._errors import usage_errors
from ._secrets import PASSWORD_VARIABLE, credentials, key_passphrase

if TYPE_CHECKING:
    import ssl


def _port(text: str) -> int:
    port = try_parse_port(text.strip())
    if port is None or port > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {echo(text)}")
    return port


def add_endpoint_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--rdzv-endpoint`` and ``--default-port``, as torchrun takes them."""
    parser.add_argument(
        "--rdzv-endpoint",
        default="",
        metavar="HOST[:PORT]",
        help="the rendezvous endpoint, as torchrun takes it (default: localhost)",
    )
    parser.add_argument(
        "--default-port",
        type=_port,
        default=29400,
        metavar="PORT",
        help="the port when the endpoint names none (default: 29400, as the c10d backend)",
    )


def add_etcd_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """Add ``--etcd``, the TLS files ``--cacert``, ``--cert`` and ``--key``, and ``--user``."""
    parser.add_argument(
        "--etcd",
        required=required,
        metavar="LIST",
        help=(
            "etcd's members, comma-separated: HOST[:PORT] (default port 2379), "
            "http://HOST:PORT or https://HOST:PORT"
        ),
    )
    parser.add_argument(
        "--cacert", metavar="FILE", help="trust the CA certificates in this PEM file: use HTTPS"
    )
    parser.add_argument(
        "--cert",
        metavar="FILE",
        help="present this PEM client certificate (and its key, without --key): use HTTPS",
    )
    parser.add_argument("--key", metavar="FILE", help="the PEM private key of --cert")
    parser.add_argument(
        "--user",
        metavar="NAME",
        help=(
            f"the etcd user; the password comes from ${PASSWORD_VARIABLE} or a prompt "
            "(NAME:PASSWORD works too, but shows it to everyone in ps)"
        ),
    )


def add_reader_options(
    parser: argparse.ArgumentParser, subject: str, *, subject_help: str, watch: str, json: str
) -> None:
    """Add what a command that reads keys on etcd takes: the etcd options, its own
    ``subject`` (required), then ``--prefix``, ``--watch``, ``--json`` and ``--timeout``.

    :param subject: the option that names what it reads, e.g. ``--group``
    :param subject_help: the help of ``subject``
    :param watch: the help of ``--watch``
    :param json: the help of ``--json``
    """
    add_etcd_options(parser, required=True)
    parser.add_argument(subject, required=True, help=subject_help)
    parser.add_argument("--prefix", default="/anyrdzv", help="the key prefix (default /anyrdzv)")
    parser.add_argument(
        "--watch",
        action="store_true",
        help=f"{watch}, until SIGTERM (exit status 143) or Ctrl-C (130)",
    )
    parser.add_argument("--json", action="store_true", help=json)
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long any one request to etcd may take (default: 5)",
    )


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """Build the TLS context that ``--cacert``, ``--cert`` and ``--key`` ask for, if any.

    Without them, the store itself decides: TLS with the system's CAs for an
    ``https://`` endpoint, plain HTTP otherwise. An encrypted key's passphrase is asked
    for on the terminal.

    :raises UsageError: naming the file, if one is missing, unreadable or not PEM
    """
    key_option, key_file = ("--cert", args.cert) if args.key is None else ("--key", args.key)
    with usage_errors():
        return client_context(
            args.cacert,
            args.cert,
            args.key,
            names=("--cacert", "--cert", "--key"),
            passphrase=key_passphrase(key_option, key_file),
        )


def etcd_store(args: argparse.Namespace, tls: ssl.SSLContext | None) -> EtcdStore:
    """The store that ``--etcd``, ``--user`` and ``--timeout`` name, over ``tls``.

    :raises UsageError: if the endpoint list or an option is bad, or ``--user`` has
        no password
    """
    username, password = credentials(args.user, args.command)
    with usage_errors(ValueError, TypeError):
        return EtcdStore(
            args.etcd, ssl=tls, username=username, password=password, timeout=args.timeout
        )
