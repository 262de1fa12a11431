"""Renewal: the task that keeps one lease alive, and never dies silently.

It renews the lease every interval, and at once while the lease is over an interval old.
A renewal that fails with a :class:`~anyrdzv.StoreError` is retried with backoff for as
long as the lease can still be alive, each retry logged at WARNING; once it cannot, or
the store says the lease is gone or refuses the credentials, the task raises
:class:`~anyrdzv.HeartbeatLost` with the last error as its cause. A renewal answered
after the end of the lease it proves (it waited for a new leader), or due after it (this
process stalled), is not a loss: the store is asked again within the grace, and decides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn, final

import anyio

from .._core._delay import backoff, delay
from .._core._periodic import periodic
from .._exceptions import (
    HeartbeatLost,
    LeaseExpired,
    StoreConnectionError,
    StoreError,
    StorePermissionError,
)

if TYPE_CHECKING:
    import logging
    from collections.abc import Iterator

    from .._stores._model import Lease
    from .._stores._protocol import LeaseStore

#: How long past the end of its lease, by this process's clock, a heartbeat still waits
#: for the store to answer a renewal, in seconds. When etcd's leader dies, no lease can
#: be renewed until a new one is elected: 1 to 3 s with etcd's default timing, measured
#: on a 3-member cluster. The new leader extends every lease it takes over, so a renewal
#: that succeeds late proves that the lease never lapsed and the member never left; one
#: that finds the lease gone, or no answer by then, is a lost heartbeat.
RENEWAL_GRACE = 2.0


@final
class Renewal:
    """The renewals of one lease of member ``member`` in group ``group``: :meth:`run`
    them as a task.

    :param store: the store
    :param lease: the lease
    :param interval: seconds between renewals
    :param group: the group, for messages
    :param member: the member, for messages
    :param log: the logger of the heartbeat whose lease it is
    """

    def __init__(
        self,
        store: LeaseStore,
        lease: Lease,
        *,
        interval: float,
        group: str,
        member: str,
        log: logging.Logger,
    ) -> None:
        self._store = store
        self._lease = lease
        self._interval = interval
        self._group = group
        self._member = member
        self._log = log
        #: how many renewals succeeded
        self.renewals = 0
        #: how many renewals failed and were retried
        self.retries = 0
        #: whether the store said the lease is gone: there is nothing to revoke
        self.lease_gone = False

    async def run(self, alive_until: float) -> NoReturn:
        """Renew the lease until cancelled, from when it runs out now, ``alive_until``
        (local time).

        :raises HeartbeatLost: once the lease cannot be kept
        """
        alive_until = await self._catch_up(alive_until)
        async for _ in periodic(self._interval):
            alive_until = await self._renew(alive_until)
            alive_until = await self._catch_up(alive_until)
        raise AssertionError("unreachable")  # pragma: no cover - periodic never ends

    def _lost(self, why: str) -> HeartbeatLost:
        return HeartbeatLost(
            f"heartbeat of member {self._member!r} in group {self._group!r} lost: {why}",
            self._group,
            self._member,
        )

    def _gave_up(self, last_error: StoreError) -> HeartbeatLost:
        what = (
            "the store was unreachable"
            if isinstance(last_error, StoreConnectionError)
            else "the store kept failing"
        )
        return self._lost(f"{what} until the lease ran out: {last_error}")

    async def _catch_up(self, alive_until: float) -> float:
        """Renew at once, not at the next tick, while the lease is over an interval old.

        A join that queued behind others (a burst of joins) has aged its lease by the
        time it is in; so has a renewal that took long to answer (a leader election):
        waiting a whole interval more could let the lease run out.
        """
        for _ in range(3):  # bounded: a store that grants less than asked cannot spin us
            if alive_until - anyio.current_time() >= self._lease.ttl - self._interval:
                break
            alive_until = await self._renew(alive_until)
        return alive_until

    async def _renew(self, alive_until: float) -> float:
        """Renew the lease, retrying until it succeeds or the lease runs out.

        ``alive_until`` is a lower bound of when the lease runs out: the time a renewal
        that succeeded was asked, plus the TTL it gave. Past it, by this process's clock,
        the lease may still live (etcd's new leader extends every lease it takes over), so
        the store is asked for RENEWAL_GRACE more: its word decides. An answer that comes
        after the bound it proves (the request waited for a new leader) proves that the
        lease lived when it was asked, not that it lives now, so the store is asked again.

        :return: when the lease runs out now, at the latest
        """
        lease, log = self._lease, self._log
        retry: Iterator[float] | None = None  # made at the first failure
        last_error: StoreError | None = None
        grace = min(RENEWAL_GRACE, float(lease.ttl))
        give_up_at = alive_until + grace
        while True:
            asked_at = anyio.current_time()
            left = give_up_at - asked_at
            if left <= 0:
                if last_error is not None:
                    raise self._gave_up(last_error) from last_error
                late = TimeoutError(
                    f"the renewal of lease {lease.id} was due {asked_at - alive_until:.3g} s "
                    "after the lease ran out"
                )
                raise self._lost("no renewal succeeded before the lease ran out") from late
            remaining: int | None = None  # None: no answer within `left`
            try:
                with anyio.move_on_after(left):
                    remaining = await self._store.keep_alive(lease)
            except LeaseExpired as exc:
                self.lease_gone = True
                raise self._lost(str(exc)) from exc
            except StorePermissionError as exc:
                raise self._lost(f"the store refused the renewal: {exc}") from exc
            except StoreError as exc:
                last_error = exc
                if retry is None:
                    retry = backoff(min(0.05, self._interval), self._interval)
                pause = next(retry)
                now = anyio.current_time()
                if now + pause >= give_up_at:
                    raise self._gave_up(exc) from exc
                self.retries += 1
                log.warning(
                    "renewing lease %d of member %r in group %r failed; retrying in %.2f s, "
                    "%.2f s left on the lease: %s",
                    lease.id,
                    self._member,
                    self._group,
                    pause,
                    alive_until - now,
                    exc,
                )
                await delay(pause)
                continue
            if remaining is None:
                timeout = TimeoutError(
                    f"the renewal of lease {lease.id} got no answer within {left:.3g} s, "
                    f"by when the lease had run out"
                )
                timeout.__cause__ = last_error
                raise self._lost("no renewal succeeded before the lease ran out") from timeout
            if remaining <= 0:
                empty = TimeoutError(
                    f"the renewal of lease {lease.id} left it {remaining} s to live: the "
                    f"next one would be due {self._interval:.3g} s after the lease ran out"
                )
                raise self._lost("no renewal succeeded before the lease ran out") from empty
            if asked_at > alive_until:
                log.warning(
                    "renewed lease %d of member %r in group %r %.2f s after it would have "
                    "run out by this process's clock: the store kept it (a leader change)",
                    lease.id,
                    self._member,
                    self._group,
                    asked_at - alive_until,
                )
            self.renewals += 1
            now = anyio.current_time()
            if asked_at + remaining <= now:
                # Renewed, but the answer came after the end it proves: the lease lived
                # when this renewal was asked; ask again whether it lives now.
                log.warning(
                    "renewing lease %d of member %r in group %r took %.2f s, longer than "
                    "the %d s it gave; asking again whether the lease still lives",
                    lease.id,
                    self._member,
                    self._group,
                    now - asked_at,
                    remaining,
                )
                alive_until = max(alive_until, asked_at + remaining)
                give_up_at = max(give_up_at, alive_until + grace)
                retry, last_error = None, None  # the store answered: errors start afresh
                continue
            log.debug(
                "renewed lease %d of member %r in group %r: %d s to live",
                lease.id,
                self._member,
                self._group,
                remaining,
            )
            return asked_at + remaining
