"""Heartbeat: one lease, kept alive, never silent."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, final

import anyio
import anyio.abc

from .._checks import check_bytes, check_int, echo
from .._core._delay import backoff, delay
from .._core._periodic import check_interval, periodic
from .._exceptions import (
    HeartbeatLost,
    LeaseExpired,
    StoreConnectionError,
    StoreError,
    StorePermissionError,
)
from .._stores._protocol import LeaseStore, check_store
from ._keys import DEFAULT_PREFIX, check_name, members_prefix

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

    from .._stores._model import Lease

logger = logging.getLogger(__name__)

#: The shortest interval a heartbeat renews at, in seconds: shorter ones busy the store.
MIN_INTERVAL = 0.1
#: etcd's maximum lease TTL, in seconds.
MAX_TTL = 9_000_000_000
#: How long the revoke on leaving may take at most, in seconds (the TTL, if shorter).
REVOKE_TIMEOUT = 5.0
#: How long past the end of its lease, by this process's clock, a heartbeat still waits
#: for the store to answer a renewal, in seconds. When etcd's leader dies, no lease can
#: be renewed until a new one is elected: 1 to 3 s with etcd's default timing, measured
#: on a 3-member cluster. The new leader extends every lease it takes over, so a renewal
#: that succeeds late proves that the lease never lapsed and the member never left; one
#: that finds the lease gone, or no answer by then, is a lost heartbeat.
RENEWAL_GRACE = 2.0


@final
class Heartbeat:
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
    (:class:`StorePermissionError`), :class:`HeartbeatLost` is raised out of the
    ``async with`` block (inside an exception group, as task groups raise), with the
    last error as its ``__cause__``: a heartbeat never dies silently.

    A ``Heartbeat`` can be entered again after it has exited, and joins afresh with a
    new lease; it cannot be entered while it is already entered.

    Events go to the ``anyrdzv._heartbeat`` logger: retries and failed revokes at
    WARNING, with their cause; joins, renewals and leaves at DEBUG.

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
        self._store = check_store(store)
        #: the member's key in the store
        self.key: str = members_prefix(group, prefix) + check_name("member", member)
        self.group: str = group
        self.member: str = member
        self.interval: float = check_interval(interval)
        if self.interval < MIN_INTERVAL:
            raise ValueError(f"interval must be at least {MIN_INTERVAL} s, got {interval!r}")
        check_int("max_missed", max_missed, least=1)
        # Compared before multiplying: an int too big for a float would overflow.
        if max_missed > MAX_TTL / self.interval or math.ceil(self.interval * max_missed) > MAX_TTL:
            raise ValueError(
                f"the lease TTL, interval * max_missed, must be at most {MAX_TTL} s "
                f"(etcd's maximum), got interval={interval!r} and "
                f"max_missed={echo(max_missed)}"
            )
        check_bytes("payload", payload)
        #: the lease TTL, ``ceil(interval * max_missed)`` seconds
        self.ttl: int = math.ceil(self.interval * max_missed)
        self._payload = payload
        self._lease: Lease | None = None
        self._lease_gone = False  # the store said the lease is gone: nothing to revoke
        self._task_group: anyio.abc.TaskGroup | None = None
        self._entered = False
        #: how many renewals succeeded since the last entry
        self.renewals: int = 0
        #: how many renewals failed and were retried since the last entry
        self.retries: int = 0

    @property
    def lease(self) -> Lease | None:
        """The member's lease while the heartbeat runs."""
        return self._lease

    async def __aenter__(self) -> Heartbeat:
        if self._entered:
            raise RuntimeError(
                f"this Heartbeat of member {self.member!r} in group {self.group!r} is "
                f"already entered; make one Heartbeat per async with block"
            )
        self._entered = True
        try:
            return await self._join()
        except BaseException:
            self._entered = False
            raise

    async def _join(self) -> Heartbeat:
        self.renewals = self.retries = 0
        self._lease_gone = False
        lease = await self._store.grant(self.ttl)
        alive_until = anyio.current_time() + lease.ttl
        self._lease = lease
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        # Renewals start with the lease, not after the put: a put queued behind a burst of
        # joins must not let the lease age out before the member is even in.
        task_group.start_soon(self._keep_alive, lease, alive_until, name=f"heartbeat {self.key}")
        try:
            await self._store.put(self.key, self._payload, lease=lease)
        except BaseException as exc:
            task_group.cancel_scope.cancel()
            # A cancellation goes in, so that the task group can tell its own (the lease
            # was lost while the put waited: that loss is raised) from an outer one; the
            # put's own error comes out alone, not in a group.
            cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
            try:
                if cancelled:
                    await task_group.__aexit__(type(exc), exc, exc.__traceback__)
                else:
                    await task_group.__aexit__(None, None, None)
            finally:
                self._lease = None
                if not self._lease_gone:
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
        return self

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
        task_group.cancel_scope.cancel()
        try:
            return await task_group.__aexit__(exc_type, exc_value, traceback)
        finally:
            lease, self._lease = self._lease, None
            self._entered = False
            if lease is not None and not self._lease_gone:
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

    def _lost(self, why: str) -> HeartbeatLost:
        return HeartbeatLost(
            f"heartbeat of member {self.member!r} in group {self.group!r} lost: {why}",
            self.group,
            self.member,
        )

    def _gave_up(self, last_error: StoreError) -> HeartbeatLost:
        what = (
            "the store was unreachable"
            if isinstance(last_error, StoreConnectionError)
            else "the store kept failing"
        )
        return self._lost(f"{what} until the lease ran out: {last_error}")

    async def _keep_alive(self, lease: Lease, alive_until: float) -> None:
        alive_until = await self._catch_up(lease, alive_until)
        async for _ in periodic(self.interval):
            alive_until = await self._renew(lease, alive_until)
            alive_until = await self._catch_up(lease, alive_until)

    async def _catch_up(self, lease: Lease, alive_until: float) -> float:
        """Renew at once, not at the next tick, while the lease is over an interval old.

        A join that queued behind others (a burst of joins) has aged its lease by the
        time it is in; so has a renewal that took long to answer (a leader election):
        waiting a whole interval more could let the lease run out.
        """
        for _ in range(3):  # bounded: a store that grants less than asked cannot spin us
            if alive_until - anyio.current_time() >= lease.ttl - self.interval:
                break
            alive_until = await self._renew(lease, alive_until)
        return alive_until

    async def _renew(self, lease: Lease, alive_until: float) -> float:
        """Renew ``lease``, retrying until it succeeds or the lease runs out.

        :return: when the lease runs out now, at the latest
        """
        retry: Iterator[float] | None = None  # made at the first failure
        last_error: StoreError | None = None
        # A renewal that got no answer, or failed, may go on past the lease's end by this
        # process's clock for RENEWAL_GRACE: the store's word decides then.
        give_up_at = alive_until + min(RENEWAL_GRACE, float(lease.ttl))
        while True:
            asked_at = anyio.current_time()
            if last_error is None and asked_at >= alive_until:
                late = TimeoutError(
                    f"the renewal of lease {lease.id} was due {asked_at - alive_until:.3g} s "
                    "after the lease ran out"
                )
                raise self._lost("no renewal succeeded before the lease ran out") from late
            left = give_up_at - asked_at
            if left <= 0:
                assert last_error is not None
                raise self._gave_up(last_error) from last_error
            try:
                with anyio.move_on_after(left) as scope:
                    remaining = await self._store.keep_alive(lease)
            except LeaseExpired as exc:
                self._lease_gone = True
                raise self._lost(str(exc)) from exc
            except StorePermissionError as exc:
                raise self._lost(f"the store refused the renewal: {exc}") from exc
            except StoreError as exc:
                last_error = exc
                if retry is None:
                    retry = backoff(min(0.05, self.interval), self.interval)
                pause = next(retry)
                now = anyio.current_time()
                if now + pause >= give_up_at:
                    raise self._gave_up(exc) from exc
                self.retries += 1
                logger.warning(
                    "renewing lease %d of member %r in group %r failed; retrying in %.2f s, "
                    "%.2f s left on the lease: %s",
                    lease.id,
                    self.member,
                    self.group,
                    pause,
                    alive_until - now,
                    exc,
                )
                await delay(pause)
                continue
            if scope.cancelled_caught:
                timeout = TimeoutError(
                    f"the renewal of lease {lease.id} got no answer within {left:.3g} s, "
                    f"by when the lease had run out"
                )
                timeout.__cause__ = last_error
                raise self._lost("no renewal succeeded before the lease ran out") from timeout
            if asked_at > alive_until:
                logger.warning(
                    "renewed lease %d of member %r in group %r %.2f s after it would have "
                    "run out by this process's clock: the store kept it (a leader change)",
                    lease.id,
                    self.member,
                    self.group,
                    asked_at - alive_until,
                )
            self.renewals += 1
            logger.debug(
                "renewed lease %d of member %r in group %r: %d s to live",
                lease.id,
                self.member,
                self.group,
                remaining,
            )
            return asked_at + remaining
