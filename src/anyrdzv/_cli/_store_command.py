"""Running a command that reads etcd: the store opened, the keys read once or followed
(``--watch``) and shown, and what goes wrong turned into an exit status: a store failure
is one line on stderr (exit status 1), Ctrl-C exit status 130, SIGTERM under ``--watch``
exit status 143, a bug raised."""

from __future__ import annotations

import logging
import signal
import sys
from contextlib import aclosing
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.abc

from ._errors import describe_failure, is_interrupt, one_line, usage_errors
from ._options import etcd_store, tls_context

if TYPE_CHECKING:
    import argparse
    from collections.abc import AsyncGenerator, Awaitable, Callable
    from typing import TextIO

    from .._etcd._store import EtcdStore

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


def run_store_command(
    command: str,
    follow: Callable[[], Awaitable[int]],
    *,
    out: TextIO,
    describe: Callable[[BaseException], str | None] = describe_failure,
    context: str = "",
) -> int:
    """Run ``follow`` in a new event loop, and return its exit status.

    A failure that ``describe`` names is one line on stderr, after what ``out`` has
    been given (exit status 1, and the traceback logged at DEBUG); Ctrl-C is exit
    status 130; anything ``describe`` cannot name is a bug, raised.

    :param command: the command's name, for the message
    :param follow: what the command does with the store
    :param out: the command's output, flushed before the error is written
    :param describe: the message for a failure, or ``None`` for a bug
    :param context: put before the message, e.g. what the command was looking at
    :return: what ``follow`` returns; 1 after a failure ``describe`` names; 130 after
        Ctrl-C
    """
    try:
        return anyio.run(follow)
    except BaseException as exc:
        if is_interrupt(exc):
            return 130
        error = describe(exc)
        if error is None:
            raise
        logger.debug("anyrdzv %s failed", command, exc_info=exc)
        out.flush()
        sys.stderr.write(f"anyrdzv {command}: error: {context}{one_line(error)}\n")
        return 1


#: The signals that end ``--watch`` cleanly: what Kubernetes and Slurm send to stop a
#: process, and Ctrl-C.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def until_stopped(follow: Callable[[], Awaitable[None]]) -> int:
    """Run ``follow()`` until it returns, or until SIGTERM or SIGINT (Ctrl-C) arrives,
    which cancels it: it then ends as a cancellation does, its store closed.

    :return: 0 when ``follow`` returned; else 128 plus the signal's number, as a shell
        reports a process that a signal ended: 143 for SIGTERM, 130 for SIGINT
    :raises Exception: what ``follow`` raised, as it is
    """
    stopped_by: list[int] = []
    failed: list[Exception] = []

    async def stop_on_a_signal(
        scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
            task_status.started()
            async for signum in signals:
                stopped_by.append(signum)
                scope.cancel()
                return

    async with anyio.create_task_group() as tg:
        await tg.start(stop_on_a_signal, tg.cancel_scope)  # listening before any output
        try:
            await follow()
        except Exception as exc:  # noqa: BLE001 - raised as it is, below, not in a group
            failed.append(exc)
        tg.cancel_scope.cancel()
    if failed:
        raise failed[0]
    return 128 + stopped_by[0] if stopped_by else 0


def read_or_watch(
    args: argparse.Namespace,
    out: TextIO,
    *,
    check: Callable[[], object],
    read: Callable[[EtcdStore], Awaitable[_T]],
    watch: Callable[[EtcdStore], AsyncGenerator[_T, None]],
    show: Callable[[_T], None],
    describe: Callable[[BaseException], str | None] = describe_failure,
    context: str = "",
) -> int:
    """Open the store that the etcd options name and show what ``read`` returns; or,
    with ``--watch``, every item that ``watch`` yields, until SIGTERM or Ctrl-C. Each is
    flushed to ``out`` once shown.

    :param args: the parsed arguments: the command's name, the etcd options, ``--watch``
    :param check: checks the command's own options, raising ``ValueError`` or
        ``TypeError`` if one is bad (after the TLS files, before the password)
    :param show: writes one item to ``out``
    :param describe: as for :func:`run_store_command`
    :param context: as for :func:`run_store_command`
    :return: as :func:`run_store_command`; under ``--watch``, 143 after SIGTERM and 130
        after Ctrl-C (see :func:`until_stopped`)
    :raises UsageError: if an option is bad
    """
    tls = tls_context(args)
    with usage_errors(ValueError, TypeError):
        check()
    store = etcd_store(args, tls)

    async def follow() -> None:
        async with aclosing(watch(store)) as items:
            async for item in items:
                show(item)
                out.flush()

    async def read_or_follow() -> int:
        async with store:
            if not args.watch:
                show(await read(store))
                out.flush()
                return 0
            return await until_stopped(follow)

    return run_store_command(
        args.command, read_or_follow, out=out, describe=describe, context=context
    )
