"""Keep-alives from many callers, sent together: as etcd's own client shares one
keep-alive stream across leases, concurrent ``keep_alive()`` calls share a request."""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, final

import anyio

from .._exceptions import LeaseExpired, StoreConnectionError, StoreError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection

logger = logging.getLogger(__name__)

# The most keep-alives one request carries. The gateway answers a request's keep-alives
# one after another, and under a burst of writes etcd 3.4 makes each wait for the
# applied index, so one request of 500 took over 2 s while 1,000 members joined; several
# smaller requests in flight wait side by side. In steady state requests carry about 14.
MAX_RENEWALS = 100
# How long a keep-alive waits for others to share its request, in seconds: 5 ms, on a
# lease of at least 1 s. With 1,000 leases renewed each second it makes requests of
# about 14 keep-alives instead of 1.35, and takes this process from 58 % of a core to
# 15 % (docs/benchmarks.md).
RENEWAL_LINGER = 0.005


@final
class _Renewal:
    """One caller's keep-alive, waiting to ride in a batch."""

    __slots__ = ("error", "lease_id", "sending", "ttl", "woken")

    def __init__(self, lease_id: int) -> None:
        self.lease_id = lease_id
        self.sending = False  # in a request now in flight
        self.ttl: int | None = None
        self.error: StoreError | None = None
        self.woken: anyio.Event | None = None  # set when this caller has news

    @property
    def answered(self) -> bool:
        return self.ttl is not None or self.error is not None

    def wake(self) -> None:
        if self.woken is not None:
            self.woken.set()


@final
class KeepAliveBatcher:
    """Gathers the keep-alives that arrive within ``linger`` seconds into one ``send``.

    One caller gathers at a time; its request then flies while the next batch gathers.
    Leases that ``send`` leaves unanswered go first in the next batch. Each caller is
    woken only when it has news (its answer, or its turn to gather), so a thousand
    waiting callers cost nothing per batch.

    :param send: renews the given leases in one request, and returns the TTL of each
        lease it got an answer for (0 for a gone lease)
    :param timeout: how long one ``keep_alive`` may wait with no batch answered
    :param where: how error messages name the server
    :param linger: how long a batch waits for more keep-alives
    :param max_batch: the most leases in one ``send``
    """

    def __init__(
        self,
        send: Callable[[Collection[int]], Awaitable[dict[int, int]]],
        *,
        timeout: float,
        where: str,
        linger: float = RENEWAL_LINGER,
        max_batch: int = MAX_RENEWALS,
    ) -> None:
        self._send = send
        self._timeout = timeout
        self._where = where
        self._linger = linger
        self._max_batch = max_batch
        # Keep-alives waiting for the next request, and whether a caller is gathering them.
        self._renewals: list[_Renewal] = []
        self._gathering = False
        self._last_answer = -float("inf")  # when a batch was last answered

    @property
    def waiting(self) -> int:
        """How many keep-alives wait for a request (not those in one in flight)."""
        return len(self._renewals)

    @property
    def gathering(self) -> bool:
        """Whether a caller is gathering the next batch now."""
        return self._gathering

    def _wake_next_gatherer(self) -> None:
        """If keep-alives wait and nobody gathers them, wake the first to do it."""
        if self._renewals and not self._gathering:
            self._renewals[0].wake()

    async def _send_batch(self) -> None:
        self._gathering = True
        try:
            await anyio.sleep(self._linger)  # let the keep-alives due about now join in
        finally:
            self._gathering = False
        batch = self._renewals[: self._max_batch]
        del self._renewals[: self._max_batch]
        self._wake_next_gatherer()  # those beyond this batch gather the next
        if not batch:
            return  # every caller gave up meanwhile
        for renewal in batch:
            renewal.sending = True
        try:
            try:
                renewed = await self._send(list(dict.fromkeys(r.lease_id for r in batch)))
                self._last_answer = anyio.current_time()
            except StoreError as exc:
                for renewal in batch:
                    renewal.error = exc
            else:
                for renewal in batch:
                    renewal.ttl = renewed.get(renewal.lease_id)
        finally:
            # Unanswered ones (the server stopped reading, or this task was cancelled)
            # go first in the next request.
            unanswered = [r for r in batch if not r.answered]
            for renewal in unanswered:
                renewal.sending = False
            self._renewals[:0] = unanswered
            for renewal in batch:
                renewal.wake()

    async def keep_alive(self, lease_id: int) -> int:
        """Renew one lease, in a batch with the others due now; return its TTL.

        :raises LeaseExpired: if the lease is gone
        :raises StoreConnectionError: if no answer came within the timeout
        :raises StoreError: what the batch's request raised, as this caller's own copy
        """
        renewal = _Renewal(lease_id)
        self._renewals.append(renewal)
        started = anyio.current_time()
        try:
            while not renewal.answered:
                if renewal.sending or self._gathering:
                    renewal.woken = anyio.Event()
                    with anyio.move_on_after(self._timeout):
                        await renewal.woken.wait()
                    renewal.woken = None
                else:
                    with anyio.move_on_after(self._timeout):
                        await self._send_batch()
                # Behind a burst of keep-alives, wait on while the batches ahead are
                # answered; give up when nothing has been answered for the timeout.
                now = anyio.current_time()
                if not renewal.answered and now - max(self._last_answer, started) >= (
                    self._timeout
                ):
                    queued = (
                        f" (queued {now - started:.1f} s)" if now - started > self._timeout else ""
                    )
                    raise StoreConnectionError(
                        f"etcd at {self._where} did not renew lease {lease_id} within "
                        f"{self._timeout} s{queued}"
                    )
        finally:
            if not renewal.answered and not renewal.sending:
                self._renewals.remove(renewal)
                self._wake_next_gatherer()
        if renewal.error is not None:
            raise copy.copy(renewal.error) from renewal.error
        if not renewal.ttl or renewal.ttl <= 0:
            raise LeaseExpired(f"lease {lease_id} has expired or was revoked")
        return renewal.ttl
