"""members() and watch_members(): who is in a group, and who joins and leaves."""

from __future__ import annotations

import enum
import logging
import math
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from .._checks import check_number, echo
from .._core._delay import backoff, delay
from .._exceptions import StoreCompacted, StoreConnectionError
from .._stores._model import EventType
from .._stores._protocol import LeaseStore, check_store
from ._keys import DEFAULT_PREFIX, members_prefix

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterator

logger = logging.getLogger(__name__)


class MemberEventType(enum.Enum):
    """A change in a group's membership."""

    JOINED = "JOINED"
    LEFT = "LEFT"


@dataclass(frozen=True)
class MembersSnapshot:
    """The members of a group at one store revision: what :func:`watch_members` yields first.

    :ivar members: each member's name, mapped to its payload
    :ivar revision: the store revision of the snapshot
    """

    members: dict[str, bytes]
    revision: int


@dataclass(frozen=True)
class MemberEvent:
    """A member joined or left.

    :ivar type: ``JOINED`` or ``LEFT``
    :ivar member: the member's name
    :ivar payload: its payload (empty for ``LEFT``)
    :ivar revision: the store revision of the change
    """

    type: MemberEventType
    member: str
    payload: bytes
    revision: int


def _member_name(key: str, key_prefix: str) -> str | None:
    """The member a key stands for, or ``None`` (logged) for a key no member makes."""
    name = key[len(key_prefix) :]
    if name and "/" not in name:
        return name
    logger.warning("skipping key %s under %r: it names no member", echo(key), key_prefix)
    return None


async def members(
    store: LeaseStore, group: str, *, prefix: str = DEFAULT_PREFIX
) -> MembersSnapshot:
    """Return the current members of ``group``.

    Keys under the group's prefix that no member makes (written by someone else) are
    skipped, with a logged warning.

    :param store: the store
    :param group: the group; non-empty, no ``/``
    :param prefix: the key prefix of all groups
    :return: the members and the revision they were read at
    """
    key_prefix = members_prefix(group, prefix)
    found, revision = await check_store(store).get_prefix(key_prefix)
    named = {}
    for key, value in found.items():
        name = _member_name(key, key_prefix)
        if name is not None:
            named[name] = value
    return MembersSnapshot(named, revision)


async def watch_members(
    store: LeaseStore,
    group: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    retry_for: float = 30.0,
) -> AsyncGenerator[MembersSnapshot | MemberEvent, None]:
    """Follow the membership of ``group``: a snapshot first, then ``JOINED``/``LEFT`` events.

    Events come in revision order. When the watch stream drops, it is resumed from the
    revision after the last one seen, so no event is lost or repeated. If the store
    compacted that history meanwhile, a fresh snapshot is taken and the differences
    are reported as events. Keys that no member makes are skipped, with a warning.

    Use it with ``contextlib.aclosing`` if you may stop early::

        async with aclosing(watch_members(store, "job42")) as events:
            async for event in events:
                ...

    :param store: the store
    :param group: the group; non-empty, no ``/``
    :param prefix: the key prefix of all groups
    :param retry_for: how long to keep retrying an unreachable store before raising;
        every watch the store confirms starts the count afresh
    :raises StoreConnectionError: if the store stays unreachable for ``retry_for`` seconds
    """
    check_store(store)
    key_prefix = members_prefix(group, prefix)
    retry_for = check_number("retry_for", retry_for)
    if not (math.isfinite(retry_for) and retry_for >= 0):
        raise ValueError(f"retry_for must be a finite number >= 0, got {echo(retry_for)}")
    snapshot = await members(store, group, prefix=prefix)
    yield snapshot
    current = dict(snapshot.members)
    next_revision = snapshot.revision + 1
    failing_since: float | None = None
    retry: Iterator[float] | None = None

    def opened() -> None:
        nonlocal failing_since, retry
        if failing_since is not None:
            logger.warning(
                "watch on group %r resumed at revision %d after %.1f s",
                group,
                next_revision,
                anyio.current_time() - failing_since,
            )
        failing_since, retry = None, None

    while True:
        try:
            stream = store.watch_prefix(key_prefix, start_revision=next_revision, on_open=opened)
            async with aclosing(stream) as events:
                async for event in events:
                    next_revision = event.revision + 1
                    name = _member_name(event.key, key_prefix)
                    if name is None:
                        continue
                    if event.type is EventType.PUT:
                        if name not in current:
                            current[name] = event.value
                            yield MemberEvent(
                                MemberEventType.JOINED, name, event.value, event.revision
                            )
                        current[name] = event.value
                    elif name in current:
                        del current[name]
                        yield MemberEvent(MemberEventType.LEFT, name, b"", event.revision)
            raise StoreConnectionError("the watch stream ended")
        except StoreCompacted as exc:
            logger.warning("group %r: %s; reading the members afresh", group, exc)
            try:
                fresh = await members(store, group, prefix=prefix)
            except StoreConnectionError as error:
                cause: StoreConnectionError = error
            else:
                for name in sorted(current.keys() - fresh.members.keys()):
                    del current[name]
                    yield MemberEvent(MemberEventType.LEFT, name, b"", fresh.revision)
                for name in sorted(fresh.members.keys() - current.keys()):
                    current[name] = fresh.members[name]
                    yield MemberEvent(MemberEventType.JOINED, name, current[name], fresh.revision)
                next_revision = fresh.revision + 1
                continue
        except StoreConnectionError as error:
            cause = error
        now = anyio.current_time()
        failing_since = now if failing_since is None else failing_since
        if now - failing_since > retry_for:
            raise cause
        retry = retry or backoff(0.05, 2.0)
        pause = next(retry)
        logger.warning(
            "watch on group %r failed (%s); retrying in %.2f s, for %.1f s more",
            group,
            cause,
            pause,
            max(retry_for - (now - failing_since), 0),
        )
        await delay(pause)
