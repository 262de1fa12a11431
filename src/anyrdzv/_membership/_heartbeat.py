"""Heartbeat: a member's key in a group, under one lease, kept alive, never silent.

:class:`MemberLease` grants the lease, puts the member's key under it through a hook,
runs the :class:`~._renewal.Renewal` task and revokes the lease on the way out; the
public :class:`Heartbeat` checks its arguments and puts the key as it is. A
:class:`~anyrdzv.Rendezvous` builds on :class:`MemberLease` with a hook of its own (a
put-if-absent), so that the heartbeat's one put is the node's claim of its name.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, final

import anyio
import anyio.abc

from .._checks import check_bytes, check_int, echo
from .._core._groups import close_task_group
from .._core._periodic import check_interval
from .._exceptions import HeartbeatLost, LeaseExpired, StoreError
from .._stores._protocol import LeaseStore, check_store
from ._keys import DEFAULT_PREFIX, check_name, members_prefix
from ._renewal import Renewal

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import TracebackType

    from typing_extensions import Self

    from .._stores._model import Lease

logger = logging.getLogger(__name__)

#: The shortest interval a heartbeat renews at, in seconds: shorter ones busy the store.
MIN_INTERVAL = 0.1
#: etcd's maximum lease TTL, in seconds.
MAX_TTL = 9_000_000_000
#: How long the revoke on leaving may take at most, in seconds (the TTL, if shorter).
REVOKE_TIMEOUT = 5.0


def lease_ttl(seconds: float, max_missed: object, *, interval: object) -> int:
    """The TTL of a member's lease: ``ceil(seconds * max_missed)`` seconds.

    :param seconds: seconds between renewals, already checked
    :param max_missed: how many intervals without a renewal make the member dead
    :param interval: the interval as the caller gave it, for the message
    :raises TypeError: if ``max_missed`` is not an int
    :raises ValueError: if ``max_missed`` is below 1, or the TTL is over etcd's maximum
    """
    max_missed = check_int("max_missed", max_missed, least=1)
    # Compared before multiplying: an int too big for a float would overflow.
    if max_missed > MAX_TTL / seconds or math.ceil(seconds * max_missed) > MAX_TTL:
        raise ValueError(
            f"the lease TTL, interval * max_missed, must be at most {MAX_TTL} s "
            f"(etcd's maximum), got interval={echo(interval)} and "
            f"max_missed={echo(max_missed)}"
        )
    return math.ceil(seconds * max_missed)


class MemberLease:
    """Keep member ``member`` present in group ``group`` for the span of a block: on
    entry grant a lease of ``ttl`` seconds, renew it every ``interval`` as a task, and
    ``put(lease)`` the member's key under it; on exit revoke it. The arguments are taken
    as they are: :class:`Heartbeat` checks them.

    :param store: the store
    :param group: the group
    :param member: the member
    :param key: the member's key in the store
    :param interval: seconds between renewals
    :param ttl: the lease TTL, in seconds
    :param put: puts the member's key under the lease it is given, and returns the
        revision of the put
    """

    def __init__(
        self,
        store: LeaseStore,
        group: str,
        member: str,
        *,
        key: str,
        interval: float,
        ttl: int,
        put: Callable[[Lease], Awaitable[int]],
    ) -> None:
        self._store = store
        #: the member's key in the store
        self.key: str = key
        self.group: str = group
        self.member: str = member
        self.interval: float = interval
        #: the lease TTL, ``ceil(interval * max_missed)`` seconds
        self.ttl: int = ttl
        self._put = put
        self._lease: Lease | None = None
        self._renewal: Renewal | None = None  # the last entry's
        self._task_group: anyio.abc.TaskGroup | None = None
        self._entered = False
        self._loss: HeartbeatLost | None = None  # this entry's, once its lease is lost
        self._gone = False  # the store said this entry's lease is gone
        self._what = f"Heartbeat of member {member!r} in group {group!r}"

    @property
    def lease(self) -> Lease | None:
        """The member's lease while the heartbeat runs."""
        return self._lease

    @property
    def renewals(self) -> int:
        """How many renewals succeeded since the last entry."""
        return 0 if self._renewal is None else self._renewal.renewals

    @property
    def retries(self) -> int:
        """How many renewals failed and were retried since the last entry."""
        return 0 if self._renewal is None else self._renewal.retries

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError(
                f"this Heartbeat of member {self.member!r} in group {self.group!r} is "
                f"already entered; make one Heartbeat per async with block"
            )
        self._entered = True
        try:
            await self._join()
        except BaseException:
            self._entered = False
            raise
        return self

    async def _join(self) -> None:
        self._renewal = None
        self._loss = None
        self._gone = False
        lease = await self._store.grant(self.ttl)
        alive_until = anyio.current_time() + lease.ttl
        self._lease = lease
        renewal = self._renewal = Renewal(
            self._store,
            lease,
            interval=self.interval,
            group=self.group,
            member=self.member,
            log=logger,
        )
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        # Renewals start with the lease, not after the put: a put queued behind a burst of
        # joins must not let the lease age out before the member is even in.
        task_group.start_soon(self._keep, renewal, alive_until, name=f"heartbeat {self.key}")
        try:
            await self._put_key(lease)
        except BaseException as exc:
            # The put's own error leaves as itself; so does the lease lost while the put
            # waited (the renewal's HeartbeatLost, which cancelled the put).
            try:
                await close_task_group(
                    task_group, type(exc), exc, exc.__traceback__, what=self._what
                )
            finally:
                self._lease = None
                if not self._lease_gone():
                    with anyio.CancelScope(shield=True):
                        await self._revoke(lease)
            raise
        self._task_group = task_group
        logger.debug(
            "member %r joined group %r with lease %d (TTL %d s)",
            self.member,
            self.group,
            lease.id,
            lease.ttl,
        )

    async def _put_key(self, lease: Lease) -> None:
        try:
            await self._put(lease)
            return
        except LeaseExpired as exc:
            loss = self._lost(f"the store said its lease is gone: {exc}", exc)
        raise loss

    async def _keep(self, renewal: Renewal, alive_until: float) -> None:
        """Run the renewals; a loss that the node noticed first is raised as that one."""
        try:
            await renewal.run(alive_until)
        except HeartbeatLost as exc:
            if self._loss is None:
                self._loss = exc
                raise
            loss = self._loss
        raise loss

    def _lost(self, why: str, cause: BaseException) -> HeartbeatLost:
        """The loss of the member's lease, which the store reported as ``cause``, to be
        raised; the renewals raise the same object if they hear of it too, so that one
        loss is one error.

        :param why: why it is lost, for the message
        :param cause: the store's error
        :return: the :class:`HeartbeatLost` of this entry: a new one, with ``cause`` as
            its ``__cause__``, or the one already raised
        """
        if self._loss is None:
            loss = HeartbeatLost(
                f"heartbeat of member {self.member!r} in group {self.group!r} lost: {why}",
                self.group,
                self.member,
            )
            loss.__cause__ = cause
            self._loss = loss
        if isinstance(cause, LeaseExpired):
            self._gone = True
        return self._loss

    @property
    def loss(self) -> HeartbeatLost | None:
        """The loss of this entry's lease, once the renewals or a write under it heard of
        it; ``None`` until then."""
        return self._loss

    def _lease_gone(self) -> bool:
        return self._gone or (self._renewal is not None and self._renewal.lease_gone)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        task_group = self._task_group
        if task_group is None:
            raise RuntimeError(
                "Heartbeat.__aexit__ called without a matching __aenter__: "
                "use it as `async with Heartbeat(...):`"
            )
        self._task_group = None
        try:
            return await close_task_group(
                task_group, exc_type, exc_value, traceback, what=self._what
            )
        finally:
            lease, self._lease = self._lease, None
            self._entered = False
            if lease is not None and not self._lease_gone():
                with anyio.CancelScope(shield=True):
                    await self._revoke(lease)

    async def _revoke(self, lease: Lease) -> None:
        """Revoke ``lease`` so that the member leaves at once; if the store fails or is
        slow, log it and leave the lease to expire on its own."""
        # Past the TTL the lease is gone anyway; a tiny interval does not shorten this.
        timeout = min(REVOKE_TIMEOUT, float(lease.ttl))
        with anyio.move_on_after(timeout) as scope:
            try:
                await self._store.revoke(lease)
            except LeaseExpired:
                logger.debug("lease %d of member %r was already gone", lease.id, self.member)
                return
            except StoreError as exc:
                logger.warning(
                    "revoking lease %d of member %r in group %r failed, so the member stays "
                    "listed until the lease expires (TTL %d s): %s",
                    lease.id,
                    self.member,
                    self.group,
                    lease.ttl,
                    exc,
                )
                return
        if scope.cancelled_caught:
            logger.warning(
                "revoking lease %d of member %r in group %r got no answer within %.3g s, so "
                "the member stays listed until the lease expires (TTL %d s)",
                lease.id,
                self.member,
                self.group,
                timeout,
                lease.ttl,
            )
        else:
            logger.debug("member %r left group %r", self.member, self.group)


@final
class Heartbeat(MemberLease):
    """Keep a member present in a group, on a :class:`LeaseStore`, for the span of a block.

    ::

        async with Heartbeat(store, "job42", "node-0", interval=5, max_missed=3):
            await train()

    On entry it grants a lease with TTL ``ceil(interval * max_missed)`` and puts
    ``<prefix>/<group>/members/<member>`` under it; a task renews the lease every
    ``interval``. On exit it revokes the lease, so the member leaves at once; the revoke
    may take at most 5 s (or the TTL, if shorter), after which the lease is left to
    expire on its own.

    A renewal that fails with a :class:`StoreError` (a connection error, or any other
    odd answer) is retried with backoff for as long as the lease can still be alive,
    and each retry is logged at WARNING. Once the lease cannot be alive any more, or the
    store says it is gone (:class:`LeaseExpired`) or refuses the credentials
    (:class:`StorePermissionError`), the block is cancelled and :class:`HeartbeatLost`
    leaves it, as itself, with the last error as its ``__cause__``: a heartbeat never
    dies silently.

    Exceptions leave the block as themselves: one raised in the block leaves unchanged,
    and :class:`HeartbeatLost` alone, so ``except HeartbeatLost:`` around the ``async
    with`` works. Only when the block raises at the moment the heartbeat is lost (before
    the loss could cancel it, or while it handles that cancellation) do the two leave
    together, in an exception group.

    A ``Heartbeat`` can be entered again after it has exited, and joins afresh with a
    new lease; it cannot be entered while it is already entered.

    Events go to the ``anyrdzv._membership._heartbeat`` logger: retries and failed
    revokes at WARNING, with their cause; joins, renewals and leaves at DEBUG.

    :param store: the store
    :param group: the group; non-empty, no ``/``, valid UTF-8
    :param member: this member's name; non-empty, no ``/``, valid UTF-8
    :param interval: seconds between renewals; at least 0.1
    :param max_missed: how many intervals without a renewal make the member dead; >= 1.
        ``interval * max_missed`` is the lease TTL, at most 9,000,000,000 s (etcd's limit)
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
        store = check_store(store)
        key = members_prefix(group, prefix) + check_name("member", member)
        seconds = check_interval(interval)
        if seconds < MIN_INTERVAL:
            raise ValueError(f"interval must be at least {MIN_INTERVAL} s, got {echo(interval)}")
        ttl = lease_ttl(seconds, max_missed, interval=interval)
        payload = check_bytes("payload", payload)

        async def put(lease: Lease) -> int:
            return await store.put(key, payload, lease=lease)

        super().__init__(store, group, member, key=key, interval=seconds, ttl=ttl, put=put)
