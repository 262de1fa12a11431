"""members() and watch_members(): who is in a group, and who joins and leaves."""

from __future__ import annotations

import enum
import logging
import math
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._checks import check_number, echo
from .._stores._follow import Resynced, follow
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

    :ivar members: each member's name, mapped to its payload: the bytes it gave as
        ``payload`` (for a :class:`Rendezvous` node too, whose key holds a record of it)
    :ivar revision: the store revision of the snapshot
    """

    members: dict[str, bytes]
    revision: int


@dataclass(frozen=True)
class MemberEvent:
    """A member joined or left.

    :ivar type: ``JOINED`` or ``LEFT``
    :ivar member: the member's name
    :ivar payload: its payload, as :attr:`MembersSnapshot.members` gives it (empty for
        ``LEFT``)
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
    """Return the current members of ``group``, each with its payload.

    A payload is what the member gave: a :class:`Heartbeat`'s ``payload``, or for the
    nodes of a :class:`Rendezvous` run (whose heartbeat keys hold a JSON record of the
    node), the node's ``payload``, decoded. Keys under the group's prefix that no member
    makes (written by someone else) are skipped, with a logged warning.

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
    """Follow the membership of ``group``: a snapshot first, then ``JOINED``/``LEFT`` events,
    with payloads as :func:`members` gives them.

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

    async def reread() -> int:
        nonlocal snapshot
        snapshot = await members(store, group, prefix=prefix)
        return snapshot.revision

    changes = follow(
        store,
        key_prefix,
        start_revision=snapshot.revision + 1,
        what=f"group {group!r}",
        resync=reread,
        retry_for=retry_for,
        log=logger,
    )
    async with aclosing(changes):
        async for change in changes:
            if isinstance(change, Resynced):
                for event in _differences(current, snapshot):
                    yield event
                continue
            name = _member_name(change.key, key_prefix)
            if name is None:
                continue
            if change.type is EventType.PUT:
                payload = change.value
                if name not in current:
                    current[name] = payload
                    yield MemberEvent(MemberEventType.JOINED, name, payload, change.revision)
                current[name] = payload
            elif name in current:
                del current[name]
                yield MemberEvent(MemberEventType.LEFT, name, b"", change.revision)


def _differences(current: dict[str, bytes], fresh: MembersSnapshot) -> Iterator[MemberEvent]:
    """Bring ``current`` up to ``fresh``: the members that left, then those that joined."""
    for name in sorted(current.keys() - fresh.members.keys()):
        del current[name]
        yield MemberEvent(MemberEventType.LEFT, name, b"", fresh.revision)
    for name in sorted(fresh.members.keys() - current.keys()):
        current[name] = fresh.members[name]
        yield MemberEvent(MemberEventType.JOINED, name, current[name], fresh.revision)
