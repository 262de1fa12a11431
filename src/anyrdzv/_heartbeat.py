"""Heartbeat: one lease, kept alive, never silent."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, final

import anyio
import anyio.abc

from ._delay import backoff, delay
from ._keys import DEFAULT_PREFIX, check_name, members_prefix
from ._periodic import check_interval, periodic
from ._store import Lease, LeaseExpired, LeaseStore, StoreConnectionError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType


class HeartbeatLost(Exception):
    """A member's lease is gone: the rest of the group now sees the member as left.

    :ivar group: the group
    :ivar member: the member whose heartbeat was lost
    """

    def __init__(self, message: str, group: str, member: str) -> None:
        super().__init__(message)
        self.group = group
        self.member = member



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
        self.key: str = members_prefix(group, prefix) + check_name("member", member)
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
