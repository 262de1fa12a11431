from __future__ import annotations

import enum
import math
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

import anyio
import anyio.abc

from ._delay import backoff, delay
from ._periodic import check_interval, periodic
from ._store import (
    EventType,
    Lease,
    LeaseExpired,
    LeaseStore,
    StoreCompacted,
    StoreConnectionError,
)
from ._util import check_str

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterator
    from types import TracebackType

DEFAULT_PREFIX = "/anyrdzv"


class HeartbeatLost(Exception):
    """A member's lease is gone: the rest of the group now sees the member as left.

    :ivar group: the group
    :ivar member: the member whose heartbeat was lost
    """

    def __init__(self, message: str, group: str, member: str) -> None:
        super().__init__(message)
        self.group = group
        self.member = member


def _check_name(name: str, value: object) -> str:
    value = check_str(name, value)
    if not value or "/" in value:
        raise ValueError(f"{name} must be non-empty and contain no '/', got {value!r}")
    return value


def _check_prefix(prefix: object) -> str:
    return check_str("prefix", prefix).rstrip("/")


def members_prefix(group: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The store prefix under which ``group``'s members live: ``<prefix>/<group>/members/``."""
    return f"{_check_prefix(prefix)}/{_check_name('group', group)}/members/"


@final
class Heartbeat:
    """Keep a member present in a group, on a :class:`LeaseStore`, for the span of a block.

    ::

        async with Heartbeat(store, "job42", "node-0", interval=5, max_missed=3):
            await train()

    On entry it grants a lease with TTL ``ceil(interval * max_missed)`` and puts
    ``<prefix>/<group>/members/<member>`` under it; a task renews the lease every
    ``interval``. On exit it revokes the lease, so the member leaves at once.

    A failed renewal is retried with backoff for as long as the lease can still be
    alive. Once it cannot be, or the store says the lease is gone, :class:`HeartbeatLost`
    is raised out of the ``async with`` block (inside an exception group, as task
    groups raise): a heartbeat never dies silently.

    :param store: the store
    :param group: the group; non-empty, no ``/``
    :param member: this member's name; non-empty, no ``/``
    :param interval: seconds between renewals; positive
    :param max_missed: how many intervals without a renewal make the member dead; >= 1
    :param payload: the member's value in the store
    :param prefix: the key prefix of all groups
    :raises ValueError: if an argument is out of range
    :raises TypeError: if an argument has the wrong type
    """

    def __init__(
        self,
        store: LeaseStore,
        group: str,
        member: str,
        *,
        interval: float = 5.0,
        max_missed: int = 3,
        payload: bytes = b"",
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        #: the member's key in the store
        self.key: str = members_prefix(group, prefix) + _check_name("member", member)
        self.group: str = group
        self.member: str = member
        self.interval: float = check_interval(interval)
        if isinstance(max_missed, bool) or not isinstance(max_missed, int):
            raise TypeError(f"max_missed must be an int, got {type(max_missed).__qualname__}")
        if max_missed < 1:
            raise ValueError(f"max_missed must be at least 1, got {max_missed}")
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, got {type(payload).__qualname__}")
        #: the lease TTL, ``ceil(interval * max_missed)`` seconds
        self.ttl: int = math.ceil(self.interval * max_missed)
        self._store = store
        self._payload = payload
        self._lease: Lease | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        #: how many renewals succeeded
        self.renewals: int = 0
        #: how many renewals failed and were retried
        self.retries: int = 0

    @property
    def lease(self) -> Lease | None:
        """The member's lease while the heartbeat runs."""
        return self._lease

    async def __aenter__(self) -> Heartbeat:
        lease = await self._store.grant(self.ttl)
        alive_until = anyio.current_time() + lease.ttl
        try:
            await self._store.put(self.key, self._payload, lease=lease)
        except BaseException:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self._store.revoke(lease)
            raise
        self._lease = lease
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        task_group.start_soon(self._keep_alive, lease, alive_until, name=f"heartbeat {self.key}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        task_group, self._task_group = self._task_group, None
        assert task_group is not None
        task_group.cancel_scope.cancel()
        try:
            return await task_group.__aexit__(exc_type, exc_value, traceback)
        finally:
            lease, self._lease = self._lease, None
            if lease is not None:
                # Leave at once. If the store is unreachable, the lease expires on its own.
                with anyio.CancelScope(shield=True), anyio.move_on_after(self.interval):
                    try:
                        await self._store.revoke(lease)
                    except (StoreConnectionError, LeaseExpired):
                        pass

    def _lost(self, why: str) -> HeartbeatLost:
        return HeartbeatLost(
            f"heartbeat of member {self.member!r} in group {self.group!r} lost: {why}",
            self.group,
            self.member,
        )

    async def _keep_alive(self, lease: Lease, alive_until: float) -> None:
        async for _ in periodic(self.interval):
            retry: Iterator[float] | None = None  # made at the first failure
            while True:
                asked_at = anyio.current_time()
                try:
                    with anyio.move_on_after(max(alive_until - asked_at, 0.001)) as scope:
                        remaining = await self._store.keep_alive(lease)
                except LeaseExpired as exc:
                    raise self._lost(str(exc)) from exc
                except StoreConnectionError as exc:
                    if retry is None:
                        retry = backoff(min(0.05, self.interval), self.interval)
                    pause = next(retry)
                    if anyio.current_time() + pause >= alive_until:
                        raise self._lost(
                            f"the store was unreachable until the lease ran out: {exc}"
                        ) from exc
                    self.retries += 1
                    await delay(pause)
                    continue
                if scope.cancelled_caught:
                    raise self._lost("no renewal succeeded before the lease ran out")
                alive_until = asked_at + remaining
                self.renewals += 1
                break


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
