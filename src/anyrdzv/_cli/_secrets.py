"""Secrets from the operator: the etcd password (``--user NAME:PASSWORD`` with its
warning, ``$ANYRDZV_ETCD_PASSWORD``, or a prompt) and the passphrase of a client key."""

from __future__ import annotations

import getpass
import os
import sys
from typing import TYPE_CHECKING

from .._checks import echo
from ._errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

PASSWORD_VARIABLE = "ANYRDZV_ETCD_PASSWORD"

#: Where the password of ``--user NAME`` comes from, for a command's description.
PASSWORD_SOURCES = (
    f"With --user NAME, the password comes from ${PASSWORD_VARIABLE}, or else "
    "from a prompt when stdin is a terminal."
)


def _on_a_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _ask(prompt: str, *, nothing: str) -> str:
    """Ask on the terminal, echo off; ``nothing`` is the error at the end of input."""
    try:
        return getpass.getpass(prompt)
    except EOFError:
        raise UsageError(nothing) from None


def credentials(user: str | None, command: str) -> tuple[str | None, str | None]:
    """Split ``--user`` into a name and a password, which may come from elsewhere.

    The password is, in order: after the first ``:`` (visible in ``ps``, so a warning
    says so), in ``$ANYRDZV_ETCD_PASSWORD``, or typed at a prompt if stdin is a TTY.

    :param user: the value of ``--user``, if given
    :param command: the command's name, for the warning
    :raises UsageError: if the name is empty, or no password can be found
    """
    if user is None:
        return None, None
    name, sep, password = user.partition(":")
    if not name:
        # Not echoed: what follows the ':' is a password.
        raise UsageError("--user needs a user name before any ':'")
    if sep:
        sys.stderr.write(
            f"anyrdzv {command}: warning: --user NAME:PASSWORD shows the password to everyone on "
            f"this node (ps); use --user NAME with ${PASSWORD_VARIABLE}, or at the prompt\n"
        )
        return name, password
    from_environment = os.environ.get(PASSWORD_VARIABLE)
    if from_environment:
        return name, from_environment
    if _on_a_terminal():
        return name, _ask(f"etcd password for {name}: ", nothing="no password given")
    raise UsageError(
        f"--user {echo(name)} needs a password: set ${PASSWORD_VARIABLE}, "
        "or run on a terminal to be asked for it"
    )


def key_passphrase(option: str, key_file: str) -> Callable[[], str]:
    """The function that asks for the passphrase of the encrypted key ``key_file``.

    It asks on the terminal rather than letting OpenSSL prompt, which waits on
    ``/dev/tty`` even in a job.

    :param option: the option that named the key (``--cert`` or ``--key``), for messages
    :param key_file: the key's file
    """

    def passphrase() -> str:
        if not _on_a_terminal():
            raise UsageError(
                f"{option} {echo(key_file)}: the key is encrypted, and stdin "
                "is not a terminal to ask for its passphrase"
            )
        return _ask(f"passphrase for {key_file}: ", nothing="no passphrase given")

    return passphrase
