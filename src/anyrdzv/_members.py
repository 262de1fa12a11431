"""members() and watch_members(): who is in a group, and who joins and leaves."""

from __future__ import annotations

import enum
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from ._delay import backoff, delay
from ._keys import DEFAULT_PREFIX, members_prefix
from ._store import EventType, LeaseStore, StoreCompacted, StoreConnectionError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator


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


async def members(
    store: LeaseStore, group: str, *, prefix: str = DEFAULT_PREFIX
) -> MembersSnapshot:
    """Return the current members of ``group``.

    :param store: the store
    :param group: the group; non-empty, no ``/``
    :param prefix: the key prefix of all groups
    :return: the members and the revision they were read at
    """
    key_prefix = members_prefix(group, prefix)
    found, revision = await store.get_prefix(key_prefix)
    return MembersSnapshot({k[len(key_prefix) :]: v for k, v in found.items()}, revision)


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
    are reported as events.

    Use it with ``contextlib.aclosing`` if you may stop early::

        async with aclosing(watch_members(store, "job42")) as events:
            async for event in events:
                ...

    :param store: the store
    :param group: the group; non-empty, no ``/``
    :param prefix: the key prefix of all groups
    :param retry_for: how long to keep retrying an unreachable store before raising
    :raises StoreConnectionError: if the store stays unreachable for ``retry_for`` seconds
    """
    key_prefix = members_prefix(group, prefix)
    snapshot = await members(store, group, prefix=prefix)
    yield snapshot
    current = dict(snapshot.members)
    next_revision = snapshot.revision + 1
    failing_since: float | None = None
    retry = backoff(0.05, 2.0)
    while True:
        try:
            stream = store.watch_prefix(key_prefix, start_revision=next_revision)
            async with aclosing(stream) as events:
                async for event in events:
                    failing_since = None
                    retry = backoff(0.05, 2.0)
                    next_revision = event.revision + 1
                    name = event.key[len(key_prefix) :]
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
        except StoreCompacted:
            fresh = await members(store, group, prefix=prefix)
            for name in sorted(current.keys() - fresh.members.keys()):
                del current[name]
                yield MemberEvent(MemberEventType.LEFT, name, b"", fresh.revision)
            for name in sorted(fresh.members.keys() - current.keys()):
                current[name] = fresh.members[name]
                yield MemberEvent(MemberEventType.JOINED, name, current[name], fresh.revision)
            next_revision = fresh.revision + 1
            continue
        except StoreConnectionError:
            now = anyio.current_time()
            failing_since = now if failing_since is None else failing_since
            if now - failing_since > retry_for:
                raise
        await delay(next(retry))
