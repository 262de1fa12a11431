"""The etcd watch of a prefix: one watch stream at a time, re-created when it goes quiet,
and, with a cluster, resumed on the next member from the revision after the last event
within the store's timeout (a store-level failover: nothing lost, nothing repeated).

This is not :func:`~anyrdzv._stores._follow.follow`, the resilient watch that readers
build on any store: that one watches through ``watch_prefix``, resyncs after a
compaction and retries for the caller's ``retry_for``; this one *is* ``watch_prefix``
for etcd, raises a compaction, and moves between members within ``timeout``, retrying
at once on the next member before it backs off. Both back off with
:func:`~anyrdzv._core._delay.backoff`.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, final

import anyio

from .._core._delay import backoff
from .._exceptions import StoreCompacted, StoreConnectionError, StoreProtocolError
from . import _wire
from ._convert import key_text, store_event

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator

    from .._stores._model import StoreEvent
    from ._gateway import Gateway
    from ._members import Member

logger = logging.getLogger(__name__)

WATCH = "/v3/watch"


@final
class WatchConnection:
    """A watch stream open on one member: its lines, with a bound on each read."""

    def __init__(self, member: Member, lines: AsyncIterator[str]) -> None:
        self.member = member
        self.token = member.token
        self._lines = lines
        self._generation = member.generation

    def _check_member(self, moved_to: str) -> None:
        if self.member.generation != self._generation:
            raise StoreConnectionError(
                f"requests left etcd member {self.member.where} for {moved_to}; the watch moves too"
            )

    async def next_line(self, bound: float, moved_to: Callable[[], str]) -> str | None:
        """The next line, or ``None`` if none came within ``bound`` seconds.

        :raises StoreConnectionError: if the stream ended, or requests left its member
        """
        self._check_member(moved_to())
        with anyio.move_on_after(bound) as scope:
            self.member.reads.add(scope)
            try:
                return await self._lines.__anext__()
            except StopAsyncIteration:
                raise StoreConnectionError(
                    f"etcd at {self.member.where} closed the watch stream"
                ) from None
            finally:
                self.member.reads.discard(scope)
        self._check_member(moved_to())
        return None


@asynccontextmanager
async def _stream(gateway: Gateway, payload: dict[str, Any]) -> AsyncIterator[WatchConnection]:
    """Open a watch stream on the member that requests go to now.

    The connection must be made and the answer's head arrive within the member
    timeout; after that, the lines come as they come. A connection error, here or in
    the caller's block, moves requests to the next member.

    :raises StoreError: a subclass for what went wrong
    """
    member = gateway.members.current
    try:
        async with gateway.transport.stream(
            member.base_url + WATCH,
            _wire.encode(payload),
            token=member.token,
            where=member.where,
            limit=gateway.attempt_timeout,
        ) as answer:
            if answer.status != 200:
                content = await answer.read()
                _wire.read_answer(
                    WATCH,
                    answer.status,
                    content,
                    has_credentials=gateway.has_credentials,
                    request=payload,
                    user=gateway.username,
                )
                raise StoreProtocolError(f"HTTP {answer.status} on {WATCH} from {member.where}")
            yield WatchConnection(member, answer.lines)
    except StoreConnectionError as exc:
        gateway.members.leave(member, exc)
        raise


def _create_request(prefix: str, start_revision: int) -> dict[str, Any]:
    return {
        "create_request": {
            **_wire.prefix_range(prefix),
            "start_revision": str(start_revision),
            "progress_notify": True,
        }
    }


async def watch(
    gateway: Gateway,
    prefix: str,
    *,
    start_revision: int,
    on_open: Callable[[], object] | None,
    watch_idle: float,
) -> AsyncGenerator[StoreEvent, None]:
    """Yield every change under ``prefix`` from ``start_revision`` on, in order (both
    checked by the caller).

    :param on_open: called each time etcd confirms the watch
    :param watch_idle: how long a stream may hear nothing before it is made again
    :raises StoreCompacted: if ``start_revision`` has been compacted
    :raises StoreConnectionError: if the stream breaks, with one member; with several,
        once they have failed for the gateway's timeout with no watch confirmed
    """
    next_revision = start_revision
    renewed = False
    failing_since: float | None = None  # the first failure since the watch last opened
    pauses: Iterator[float] | None = None
    while True:
        connection: WatchConnection | None = None
        try:
            async with _stream(gateway, _create_request(prefix, next_revision)) as connection:
                created = False
                while True:
                    # Until etcd confirms the watch, it must answer in the member
                    # timeout; after, a quiet stream is checked by making it again.
                    bound = watch_idle if created else gateway.attempt_timeout
                    line = await connection.next_line(bound, lambda: gateway.member)
                    if line is None:
                        if not created:
                            raise StoreConnectionError(
                                f"etcd at {connection.member.where} did not confirm "
                                f"the watch on {prefix!r} within {bound} s"
                            )
                        logger.debug(
                            "watch on %r heard nothing for %s s; making it again to "
                            "check the connection",
                            prefix,
                            watch_idle,
                        )
                        break
                    if not line.strip():
                        continue
                    message = _wire.watch_line(
                        line,
                        has_credentials=gateway.has_credentials,
                        request=_wire.prefix_range(prefix),
                        user=gateway.username,
                    )
                    if message.compact_revision:
                        raise StoreCompacted(
                            f"revision {next_revision} has been compacted; "
                            f"the oldest kept is {message.compact_revision}",
                            message.compact_revision,
                        )
                    if message.canceled:
                        raise _wire.watch_cancelled(
                            message.cancel_reason,
                            has_credentials=gateway.has_credentials,
                            request=_wire.prefix_range(prefix),
                            user=gateway.username,
                        )
                    if message.created and not created:
                        created = True
                        if next_revision == 0 and message.revision:
                            # From now on: etcd created it at the header's revision, so
                            # a stream made anew resumes after that, missing nothing.
                            next_revision = message.revision + 1
                        renewed = False
                        failing_since = None
                        pauses = None
                        if on_open is not None:
                            on_open()
                    for event in message.events:
                        next_revision = event.kv.mod_revision + 1
                        what = f"the watch on {prefix!r}"
                        key = key_text(event.kv.key, what=what, server=gateway.where)
                        if key is not None:
                            yield store_event(event, key)
        except _wire.InvalidToken:
            if renewed or connection is None:
                raise
            renewed = True
            # Once for many watches: a login that another caller made meanwhile holds.
            deadline = anyio.current_time() + gateway.attempt_timeout
            await gateway.login(connection.member, connection.token, deadline=deadline)
        except StoreConnectionError as exc:
            # With a cluster, the stream resumes on the next member, from the next
            # revision: nothing is lost, nothing repeated. Once every member has failed
            # for the timeout, the caller hears of it.
            if not gateway.several:
                raise
            now = anyio.current_time()
            failing_since = now if failing_since is None else failing_since
            if now - failing_since >= gateway.timeout:
                raise
            pauses = pauses or backoff(0.05, 1.0)
            pause = next(pauses) if now - failing_since > gateway.attempt_timeout else 0.0
            logger.warning(
                "watch on %r resumes from revision %d on etcd at %s%s: %s",
                prefix,
                next_revision,
                gateway.member,
                f" in {pause:.2f} s" if pause else "",
                exc,
            )
            await anyio.sleep(pause)
