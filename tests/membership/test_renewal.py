"""The renewals of a heartbeat's lease: retries while the lease lives, and a lost
heartbeat, never a silent one, once it cannot."""

from __future__ import annotations

import logging
import math
import time

import anyio
import pytest

from anyrdzv import (
    Heartbeat,
    HeartbeatLost,
    Lease,
    LeaseExpired,
    LeaseStore,
    StoreConnectionError,
    StoreError,
    StorePermissionError,
)
from tests._support.heartbeat import LOGGER, FakeStore, listed, lost_in, warnings_of

pytestmark = pytest.mark.anyio


@pytest.fixture
def caplog(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """caplog, at WARNING for the heartbeat's logger."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    return caplog


# -- point 5: what a keep-alive failure does ------------------------------------------------


@pytest.mark.slow
class TestRetries:
    async def test_a_short_run_of_connection_errors_is_retried(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        store = FakeStore()
        store.keep_alive_faults = [StoreConnectionError("connection refused (simulated)")] * 3
        async with Heartbeat(store, "g", "m", interval=0.1, max_missed=10) as beat:
            await store.wait_renewed(2)
            assert beat.retries == 3
            assert await listed(store) == {"m"}
        warnings = warnings_of(caplog)
        assert len(warnings) == 3
        for message in warnings:
            assert "renewing lease" in message
            assert "of member 'm' in group 'g' failed" in message
            assert "connection refused (simulated)" in message
            assert "s left on the lease" in message

    @pytest.mark.parametrize("kind", [StoreError, StoreConnectionError])
    async def test_a_store_error_is_retried_while_the_lease_lives(
        self, kind: type[StoreError], caplog: pytest.LogCaptureFixture
    ) -> None:
        error = kind("etcd answered 500: etcdserver: too many requests")
        store = FakeStore()
        store.keep_alive_faults = [error, error]
        async with Heartbeat(store, "g", "m", interval=0.1, max_missed=10) as beat:
            await store.wait_renewed(1)
            assert beat.retries == 2
        assert [str(error) in m for m in warnings_of(caplog)] == [True, True]

    @pytest.mark.parametrize(
        ("kind", "why"),
        [
            (StoreError, "the store kept failing until the lease ran out: simulated"),
            (StoreConnectionError, "the store was unreachable until the lease ran out: simulated"),
        ],
    )
    async def test_errors_until_the_lease_runs_out_are_heartbeat_lost(
        self, kind: type[StoreError], why: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        error = kind("simulated")
        store = FakeStore()
        store.keep_alive_fault = error
        with pytest.raises(HeartbeatLost) as caught:
            async with Heartbeat(store, "g", "m", interval=0.1, max_missed=10) as beat:
                await anyio.sleep(math.inf)
        lost = lost_in(caught)
        assert why in str(lost)
        assert lost.__cause__ is error
        assert (lost.group, lost.member) == ("g", "m")
        assert beat.retries >= 1
        assert len(warnings_of(caplog)) == beat.retries

    async def test_a_permission_error_is_heartbeat_lost_at_once(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        store = FakeStore()
        refused = StorePermissionError("etcd refused /v3/lease/keepalive: permission denied")
        store.keep_alive_fault = refused
        with pytest.raises(HeartbeatLost) as caught:
            async with Heartbeat(store, "g", "m", interval=0.1, max_missed=10) as beat:
                await anyio.sleep(math.inf)
        lost = lost_in(caught)
        assert "the store refused the renewal: etcd refused" in str(lost)
        assert lost.__cause__ is refused
        assert store.count("keep_alive") == 1
        assert beat.retries == 0
        assert warnings_of(caplog) == []
        assert store.count("revoke") == 1  # the lease may live: leave at once

    async def test_lease_expired_is_heartbeat_lost_at_once_without_a_revoke(self) -> None:
        store = FakeStore()
        gone = LeaseExpired("lease 1 has expired or was revoked")
        store.keep_alive_fault = gone
        with pytest.raises(HeartbeatLost) as caught:
            async with Heartbeat(store, "g", "m", interval=0.1, max_missed=10):
                await anyio.sleep(math.inf)
        assert lost_in(caught).__cause__ is gone
        assert store.count("keep_alive") == 1
        assert store.count("revoke") == 0

    async def test_a_hung_keep_alive_is_lost_with_a_timeout_as_cause(self) -> None:
        store = FakeStore()
        store.keep_alive_fault = "hang"
        start = anyio.current_time()
        with pytest.raises(HeartbeatLost) as caught:
            async with Heartbeat(store, "g", "m", interval=0.1, max_missed=10) as beat:
                await anyio.sleep(math.inf)
        lost = lost_in(caught)
        assert "no renewal succeeded before the lease ran out" in str(lost)
        assert isinstance(lost.__cause__, TimeoutError)
        assert "the renewal of lease" in str(lost.__cause__)
        assert "got no answer within" in str(lost.__cause__)
        assert lost.__cause__.__cause__ is None
        assert store.count("keep_alive") == 1
        assert anyio.current_time() - start >= beat.ttl - beat.interval  # it waited for it

    async def test_a_hang_after_an_error_keeps_the_error_under_the_timeout(self) -> None:
        store = FakeStore()
        odd = StoreError("etcd answered 503")
        store.keep_alive_faults = [odd]
        store.keep_alive_fault = "hang"
        with pytest.raises(HeartbeatLost) as caught:
            async with Heartbeat(store, "g", "m", interval=0.1, max_missed=10):
                await anyio.sleep(math.inf)
        cause = lost_in(caught).__cause__
        assert isinstance(cause, TimeoutError)
        assert cause.__cause__ is odd

    async def test_a_renewal_that_leaves_no_time_is_lost_with_a_timeout_as_cause(self) -> None:
        class NoTimeLeft(FakeStore):
            async def keep_alive(self, lease: Lease | int) -> int:
                await super().keep_alive(lease)
                return 0  # the lease runs out before the next renewal is due

        store = NoTimeLeft()
        with pytest.raises(HeartbeatLost) as caught:
            async with Heartbeat(store, "g", "m", interval=0.1, max_missed=10):
                await anyio.sleep(math.inf)
        lost = lost_in(caught)
        assert "no renewal succeeded before the lease ran out" in str(lost)
        assert isinstance(lost.__cause__, TimeoutError)
        assert "s after the lease ran out" in str(lost.__cause__)
        assert store.count("keep_alive") == 1

    async def test_keep_alives_do_not_busy_loop(self) -> None:
        store = FakeStore()
        async with Heartbeat(store, "g", "m", interval=0.1, max_missed=10):
            await anyio.sleep(0.35)
        assert store.count("keep_alive") <= 4  # one per 0.1 s at most

    async def test_revoked_behind_its_back_on_each_store(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        with pytest.raises(HeartbeatLost) as caught:
            async with Heartbeat(store, "g", "m", interval=0.1, prefix=key_prefix) as beat:
                assert beat.lease is not None
                await store.revoke(beat.lease)
                await anyio.sleep(math.inf)
        assert isinstance(lost_in(caught).__cause__, LeaseExpired)


class ExtendedByTheStore(FakeStore):
    """A store whose leases outlive what its answers say, as etcd's new leader extends
    every lease it takes over: each lease lives ten times the TTL it was granted, and
    each renewal answers the granted TTL. Keep-alive number ``late_at`` (from 1) answers
    ``delay`` seconds late, as one that waited for a new leader."""

    def __init__(self, *, late_at: int = 0, delay: float = 0.0) -> None:
        super().__init__()
        self.late_at = late_at
        self.delay = delay
        self.granted: dict[int, int] = {}

    async def grant(self, ttl: int) -> Lease:
        lease = await super().grant(ttl * 10)
        self.granted[lease.id] = ttl
        return Lease(lease.id, ttl)

    async def keep_alive(self, lease: Lease | int) -> int:
        if self.count("keep_alive") + 1 == self.late_at:
            await anyio.sleep(self.delay)
        await super().keep_alive(lease)
        return self.granted[lease if isinstance(lease, int) else lease.id]


@pytest.mark.slow
class TestLateAnswers:
    """A renewal answered after the end it proves (it waited for a new leader), or due
    after it (this process was paused), is not a loss: the store is asked, and decides."""

    async def test_an_answer_later_than_its_ttl_is_asked_again_not_taken_for_a_loss(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        # TTL 1 s; the first renewal answers 1.3 s after it was asked.
        store = ExtendedByTheStore(late_at=1, delay=1.3)
        async with Heartbeat(store, "g", "m", interval=0.5, max_missed=2) as beat:
            await store.wait_renewed(4)
            assert await listed(store) == {"m"}
            assert beat.renewals >= 4
        [warning] = [m for m in warnings_of(caplog) if "asking again" in m]
        assert "renewing lease" in warning
        assert "of member 'm' in group 'g' took 1.3" in warning
        assert "longer than the 1 s it gave" in warning

    async def test_a_lease_gone_by_then_is_heartbeat_lost(self) -> None:
        store = ExtendedByTheStore(late_at=1, delay=1.3)
        gone = LeaseExpired("lease 1 has expired or was revoked")
        store.keep_alive_faults = [None, gone]
        with pytest.raises(HeartbeatLost) as caught:
            async with Heartbeat(store, "g", "m", interval=0.5, max_missed=2):
                await anyio.sleep(math.inf)
        assert lost_in(caught).__cause__ is gone
        assert store.count("keep_alive") == 2

    async def test_no_answer_after_a_late_one_is_lost_within_the_grace(self) -> None:
        store = ExtendedByTheStore(late_at=1, delay=1.3)
        store.keep_alive_faults = [None]
        store.keep_alive_fault = "hang"
        entered = anyio.current_time()
        with pytest.raises(HeartbeatLost) as caught:
            async with Heartbeat(store, "g", "m", interval=0.5, max_missed=2):
                await anyio.sleep(math.inf)
        lost_after = anyio.current_time() - entered
        cause = lost_in(caught).__cause__
        assert isinstance(cause, TimeoutError)
        assert "got no answer within" in str(cause)
        # The late answer proved the lease until 0.5 + 1 s after entry; the grace is 1 s
        # (the TTL): the loss is heard then, not at once, and not never.
        assert 2.3 <= lost_after < 2.5 + 1.5
        assert store.count("keep_alive") == 2

    async def test_a_renewal_due_after_the_lease_ran_out_asks_the_store(self) -> None:
        store = ExtendedByTheStore()
        async with Heartbeat(store, "g", "m", interval=0.5, max_missed=2) as beat:
            await store.wait_renewed(1)
            # This process stalls (a VM pause, a long GC) past the lease's end by its
            # own clock, but within the grace: the store still holds the lease.
            time.sleep(1.4)  # noqa: ASYNC251 - the stall is the point
            await store.wait_renewed(3)
            assert beat.renewals >= 3
            assert await listed(store) == {"m"}
