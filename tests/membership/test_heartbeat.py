"""Heartbeat: argument checks, misuse, a slow join, the revoke on exit, and its logs (the
renewals are in test_renewal.py)."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

from anyrdzv import (
    EtcdStore,
    Heartbeat,
    HeartbeatLost,
    Lease,
    LeaseExpired,
    LeaseStore,
    MemoryStore,
    StoreConnectionError,
    StoreError,
    StorePermissionError,
    members,
)
from anyrdzv.testing import FaultyStore
from tests._support.tcpproxy import TcpProxy

if TYPE_CHECKING:
    from tests._support.etcd_server import EtcdServer
from tests._support.heartbeat import LOGGER, FakeStore, listed, lost_in, warnings_of

pytestmark = pytest.mark.anyio


@pytest.fixture
def caplog(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """caplog, at WARNING for the heartbeat's logger unless a test lowers it."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    return caplog


# -- point 11: arguments are checked up front -----------------------------------------------


class TestArguments:
    @pytest.mark.parametrize(
        ("store", "message"),
        [
            (None, "got NoneType None"),
            ("localhost:2379", "got str 'localhost:2379'"),
            (object(), "got object <object object at"),
        ],
    )
    async def test_store_must_be_a_lease_store(self, store: Any, message: str) -> None:
        with pytest.raises(TypeError) as info:
            Heartbeat(store, "g", "m")
        assert str(info.value).startswith(
            "store must be a LeaseStore such as MemoryStore or EtcdStore, "
        )
        assert message in str(info.value)

    async def test_a_store_class_is_not_a_store(self) -> None:
        with pytest.raises(
            TypeError,
            match=r"^store must be a LeaseStore instance, such as MemoryStore\(\), "
            r"got the class MemoryStore$",
        ):
            Heartbeat(MemoryStore, "g", "m")  # type: ignore[arg-type]

    async def test_a_partial_store_names_what_it_lacks(self) -> None:
        class HalfStore:
            async def grant(self, ttl: int) -> Lease:
                raise NotImplementedError

            keep_alive = grant
            revoke = "not callable"

        with pytest.raises(TypeError, match=r"\(it has no revoke\(\), put\(\), get_prefix\(\)"):
            Heartbeat(HalfStore(), "g", "m")  # type: ignore[arg-type]

    async def test_a_bad_store_message_is_bounded(self) -> None:
        with pytest.raises(TypeError) as info:
            Heartbeat("x" * 100_000, "g", "m")  # type: ignore[arg-type]
        assert len(str(info.value)) < 400

    async def test_any_object_with_the_methods_is_a_store(self) -> None:
        class HeartbeatStore:  # a heartbeat's methods only, and no base class
            grant = keep_alive = revoke = put = get_prefix = watch_prefix = print

        assert Heartbeat(HeartbeatStore(), "g", "m").ttl == 15  # type: ignore[arg-type]
        assert Heartbeat(FakeStore(), "g", "m").ttl == 15

    @pytest.mark.parametrize("interval", [1e-9, 0.05, 0.0999])
    async def test_interval_has_a_floor(self, interval: float) -> None:
        with pytest.raises(ValueError, match=rf"interval must be at least 0\.1 s, got {interval}"):
            Heartbeat(MemoryStore(), "g", "m", interval=interval)

    async def test_the_floor_itself_is_allowed(self) -> None:
        assert Heartbeat(MemoryStore(), "g", "m", interval=0.1, max_missed=10).ttl == 1

    @pytest.mark.parametrize(
        ("interval", "max_missed", "shown"),
        [
            (1.0, 10**400, "max_missed=<an int of 1329 bits>"),
            (1.0, 10**5000, "max_missed=<an int of"),  # past str()'s 4,300-digit limit
            (1e300, 3, "interval=1e+300 and max_missed=3"),
            (1.0, 9_000_000_001, "interval=1.0 and max_missed=9000000001"),
            (3e9, 4, "interval=3000000000.0 and max_missed=4"),
        ],
        ids=["10**400", "10**5000", "interval-1e300", "max_missed-past-9e9", "just-past-9e9"],
    )
    async def test_ttl_is_bounded_by_etcds_maximum(
        self, interval: float, max_missed: int, shown: str
    ) -> None:
        with pytest.raises(ValueError, match="the lease TTL") as info:
            Heartbeat(MemoryStore(), "g", "m", interval=interval, max_missed=max_missed)
        message = str(info.value)
        assert message.startswith(
            "the lease TTL, interval * max_missed, must be at most 9000000000 s (etcd's maximum)"
        )
        assert shown in message
        assert len(message) < 300

    async def test_ttl_at_etcds_maximum_is_allowed(self) -> None:
        assert Heartbeat(MemoryStore(), "g", "m", interval=3e9, max_missed=3).ttl == 9_000_000_000
        beat = Heartbeat(MemoryStore(), "g", "m", interval=1, max_missed=9_000_000_000)
        assert beat.ttl == 9_000_000_000

    async def test_huge_negative_max_missed_message_is_bounded(self) -> None:
        with pytest.raises(ValueError, match=r"max_missed must be at least 1, got <an int of"):
            Heartbeat(MemoryStore(), "g", "m", max_missed=-(10**5000))

    @pytest.mark.parametrize(
        ("group", "member", "prefix", "name"),
        [
            ("\ud800", "m", "/anyrdzv", "group"),
            ("g", "\ud800", "/anyrdzv", "member"),
            ("g", "node-\udfff-0", "/anyrdzv", "member"),
            ("g", "m", "/p\ud800", "prefix"),
        ],
    )
    async def test_names_must_be_utf8(
        self, group: str, member: str, prefix: str, name: str
    ) -> None:
        with pytest.raises(ValueError, match=rf"^{name} must be encodable as UTF-8 \(surrogates"):
            Heartbeat(MemoryStore(), group, member, prefix=prefix)

    async def test_members_rejects_a_non_utf8_group_too(self) -> None:
        with pytest.raises(ValueError, match="group must be encodable as UTF-8"):
            await members(MemoryStore(), "\ud800")

    async def test_non_ascii_names_are_fine(self) -> None:
        store = MemoryStore()
        async with Heartbeat(store, "g", "nœud-é-🚀", interval=0.1, max_missed=10):
            assert await listed(store) == {"nœud-é-🚀"}

    @pytest.mark.parametrize(
        "bad", ["x/" * 50_000, "\ud800" * 50_000], ids=["slashes", "surrogates"]
    )
    async def test_bad_name_messages_are_bounded(self, bad: str) -> None:
        with pytest.raises(ValueError, match="^member must be") as info:
            Heartbeat(MemoryStore(), "g", bad)
        assert len(str(info.value)) < 400


# -- point 10: misuse -----------------------------------------------------------------------


class TestMisuse:
    async def test_nested_enter_is_a_runtime_error_and_the_first_runs_on(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        counting = FakeStore(store)
        beat = Heartbeat(counting, "g", "m", interval=0.1, max_missed=20, prefix=key_prefix)
        async with beat:
            lease = beat.lease
            calls_before = list(counting.calls)
            with pytest.raises(RuntimeError, match="is already entered"):
                async with beat:
                    pytest.fail("entered twice")
            assert counting.calls == calls_before  # no I/O: no second lease
            assert beat.lease == lease
            renewed = counting.renewed
            await counting.wait_renewed(renewed + 2)
            assert await listed(store, key_prefix) == {"m"}
        assert counting.count("grant") == 1
        assert counting.count("revoke") == 1
        assert await listed(store, key_prefix) == set()

    async def test_enter_while_another_task_is_entering_is_a_runtime_error(self) -> None:
        store = FakeStore()
        store.grant_may_finish = anyio.Event()
        beat = Heartbeat(store, "g", "m", interval=0.1, max_missed=10)
        errors: list[BaseException] = []

        async def enter_and_leave() -> None:
            async with beat:
                pass

        async def enter_again() -> None:
            try:
                async with beat:
                    pass
            except RuntimeError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(enter_and_leave)
            await store.grant_started.wait()
            await enter_again()
            store.grant_may_finish.set()
        assert [str(e) for e in errors] == [
            (
                "this Heartbeat of member 'm' in group 'g' is already entered; "
                "make one Heartbeat per async with block"
            )
        ]
        assert store.count("grant") == 1
        assert await listed(store.inner) == set()

    async def test_exit_without_enter_is_a_runtime_error(self) -> None:
        beat = Heartbeat(MemoryStore(), "g", "m")
        with pytest.raises(RuntimeError, match=r"__aexit__ called without a matching __aenter__"):
            await beat.__aexit__(None, None, None)

    async def test_exit_twice_is_a_runtime_error(self) -> None:
        beat = Heartbeat(MemoryStore(), "g", "m", interval=0.1, max_missed=10)
        await beat.__aenter__()
        await beat.__aexit__(None, None, None)
        with pytest.raises(RuntimeError, match="without a matching __aenter__"):
            await beat.__aexit__(None, None, None)

    async def test_reenter_after_exit_joins_afresh(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        beat = Heartbeat(store, "g", "m", interval=0.1, max_missed=20, prefix=key_prefix)
        leases = []
        for _ in range(2):
            async with beat:
                leases.append(beat.lease)
                assert await listed(store, key_prefix) == {"m"}
            assert beat.lease is None
            assert await listed(store, key_prefix) == set()
        assert leases[0] != leases[1]

    async def test_reenter_after_heartbeat_lost(self) -> None:
        store = FakeStore()
        store.keep_alive_faults = [LeaseExpired("gone")]
        beat = Heartbeat(store, "g", "m", interval=0.1, max_missed=10)
        with pytest.raises(HeartbeatLost):
            async with beat:
                await anyio.sleep(math.inf)
        async with beat:
            await store.wait_renewed(1)
            assert await listed(store.inner) == {"m"}

    async def test_reenter_after_a_failed_join(self) -> None:
        store = FakeStore()
        beat = Heartbeat(store, "g", "m", interval=0.1, max_missed=10)
        store.put_fault = StoreConnectionError("refused")
        with pytest.raises(StoreConnectionError):
            async with beat:
                pytest.fail("joined without a put")
        assert store.count("revoke") == 1  # the granted lease is not left behind
        store.put_fault = None
        async with beat:
            assert await listed(store.inner) == {"m"}


@pytest.mark.slow
class TestSlowJoin:
    async def test_the_lease_is_renewed_while_the_put_waits(self) -> None:
        """A put queued behind a burst of joins for longer than the TTL still joins."""
        store = FakeStore()
        store.put_delay = 2.5  # the TTL is 1 s
        async with Heartbeat(store, "g", "m", interval=0.25, max_missed=4) as beat:
            assert store.count("keep_alive") >= 5  # renewed all along the put
            assert await listed(store.inner) == {"m"}
            await anyio.sleep(0.6)
            assert beat.renewals >= 7

    async def test_a_lease_lost_while_the_put_waits_is_heartbeat_lost(self) -> None:
        store = FakeStore()
        store.put_fault = "hang"
        store.keep_alive_fault = LeaseExpired("lease 1 has expired or was revoked")
        with anyio.fail_after(5), pytest.raises(HeartbeatLost) as caught:
            async with Heartbeat(store, "g", "m", interval=0.25, max_missed=4):
                pytest.fail("joined without a put")
        assert isinstance(lost_in(caught).__cause__, LeaseExpired)
        assert store.count("revoke") == 0  # the lease is gone: nothing to revoke
        assert await listed(store.inner) == set()


# -- point 11 and 13: the revoke on exit ----------------------------------------------------


class TestRevokeOnExit:
    async def test_a_slow_revoke_is_not_cut_off_after_one_interval(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        slow = FakeStore(store)
        slow.revoke_delay = 0.5  # five intervals, well within the bound
        async with Heartbeat(slow, "g", "m", interval=0.1, max_missed=20, prefix=key_prefix):
            assert await listed(store, key_prefix) == {"m"}
        assert await listed(store, key_prefix) == set()

    async def test_a_cancelled_block_still_leaves(self, store: LeaseStore, key_prefix: str) -> None:
        with anyio.CancelScope() as scope:
            async with Heartbeat(store, "g", "m", interval=0.1, max_missed=20, prefix=key_prefix):
                scope.cancel()
                await anyio.sleep(math.inf)
        assert await listed(store, key_prefix) == set()

    async def test_a_hung_revoke_is_bounded_by_the_ttl_and_logged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        store = FakeStore()
        store.revoke_fault = "hang"
        with anyio.fail_after(30):  # a guard only: the bound is min(5 s, TTL) = 1 s
            async with Heartbeat(store, "g", "m", interval=0.1, max_missed=10):
                pass
        (warning,) = warnings_of(caplog)
        assert "revoking lease 1 of member 'm' in group 'g' got no answer within 1 s" in warning
        assert "until the lease expires (TTL 1 s)" in warning

    @pytest.mark.parametrize("kind", [StoreConnectionError, StorePermissionError, StoreError])
    async def test_a_failed_revoke_is_logged_not_raised(
        self, kind: type[StoreError], caplog: pytest.LogCaptureFixture
    ) -> None:
        error = kind("simulated")
        store = FakeStore()
        store.revoke_fault = error
        async with Heartbeat(store, "g", "m", interval=0.1, max_missed=10):
            pass
        (warning,) = warnings_of(caplog)
        assert warning.startswith("revoking lease 1 of member 'm' in group 'g' failed")
        assert warning.endswith(f": {error}")

    async def test_a_failed_revoke_does_not_hide_the_blocks_error(self) -> None:
        store = FakeStore()
        store.revoke_fault = StoreConnectionError("refused")
        with pytest.raises(KeyError, match="from the block"):
            async with Heartbeat(store, "g", "m", interval=0.1, max_missed=10):
                raise KeyError("from the block")


# -- point 13: logging ----------------------------------------------------------------------


class TestLogging:
    async def test_the_logger_has_no_handlers(self) -> None:
        assert logging.getLogger(LOGGER).handlers == []

    async def test_join_renewal_and_leave_are_debug(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG, logger=LOGGER)
        store = FakeStore()
        async with Heartbeat(store, "g", "m", interval=0.1, max_missed=10):
            await store.wait_renewed(1)
        records = [r for r in caplog.records if r.name == LOGGER]
        assert {r.levelno for r in records} == {logging.DEBUG}
        messages = [r.getMessage() for r in records]
        assert messages[0] == "member 'm' joined group 'g' with lease 1 (TTL 1 s)"
        assert messages[1] == "renewed lease 1 of member 'm' in group 'g': 1 s to live"
        assert messages[-1] == "member 'm' left group 'g'"


# -- on both stores, and outages -------------------------------------------------


class TestHeartbeatArguments:
    @pytest.mark.parametrize(
        ("group", "member", "kwargs", "message"),
        [
            ("", "m", {}, "group must be non-empty and contain no '/', got ''"),
            ("a/b", "m", {}, "group must be non-empty and contain no '/', got 'a/b'"),
            ("g", "", {}, "member must be non-empty and contain no '/', got ''"),
            ("g", "x/y", {}, "member must be non-empty and contain no '/'"),
            ("g", "m", {"interval": 0}, "interval must be positive and finite, got 0"),
            ("g", "m", {"interval": -1.0}, "interval must be positive and finite"),
            ("g", "m", {"interval": math.nan}, "interval must be positive and finite"),
            ("g", "m", {"max_missed": 0}, "max_missed must be at least 1, got 0"),
        ],
    )
    async def test_value_errors(
        self, group: str, member: str, kwargs: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            Heartbeat(MemoryStore(), group, member, **kwargs)

    @pytest.mark.parametrize(
        ("args", "kwargs", "message"),
        [
            ((1, "m"), {}, "group must be a str"),
            (("g", None), {}, "member must be a str"),
            (("g", "m"), {"max_missed": 2.5}, "max_missed must be an int"),
            (("g", "m"), {"payload": "text"}, "payload must be bytes"),
        ],
    )
    async def test_type_errors(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(TypeError, match=message):
            Heartbeat(MemoryStore(), *args, **kwargs)

    async def test_ttl_is_interval_times_max_missed_rounded_up(self) -> None:
        assert Heartbeat(MemoryStore(), "g", "m", interval=0.4, max_missed=3).ttl == 2
        assert Heartbeat(MemoryStore(), "g", "m").ttl == 15  # torch's 5 s x 3


class TestHeartbeat:
    async def test_renewals_happen(self, store: LeaseStore, key_prefix: str) -> None:
        async with Heartbeat(store, "g", "m", interval=0.2, prefix=key_prefix) as beat:
            await anyio.sleep(0.9)
            assert beat.renewals >= 3

    async def test_lease_revoked_behind_its_back_is_heartbeat_lost(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        with pytest.raises(HeartbeatLost, match="'m' in group 'g' lost"):
            async with Heartbeat(store, "g", "m", interval=0.2, prefix=key_prefix) as beat:
                assert beat.lease is not None
                await store.revoke(beat.lease)
                await anyio.sleep(10)


class TestExceptionsLeaveAsThemselves:
    """``try: async with Heartbeat(...)`` catches what it names, on both stores: nothing
    leaves in a group but errors that happen at once."""

    async def test_the_blocks_error(self, store: LeaseStore, key_prefix: str) -> None:
        error = ValueError("the block's own")
        with pytest.raises(ValueError, match="the block's own") as caught:
            async with Heartbeat(store, "g", "m", interval=0.1, prefix=key_prefix):
                raise error
        assert caught.value is error
        assert await listed(store, key_prefix) == set()  # it left all the same

    async def test_a_lost_heartbeat_cancels_the_block(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        cancelled = False
        with pytest.raises(HeartbeatLost) as caught:
            async with Heartbeat(store, "g", "m", interval=0.1, prefix=key_prefix) as beat:
                assert beat.lease is not None
                await store.revoke(beat.lease)
                try:
                    await anyio.sleep(10)
                except anyio.get_cancelled_exc_class():
                    cancelled = True
                    raise
        lost = caught.value
        assert isinstance(lost.__cause__, LeaseExpired)
        assert lost.__context__ is lost.__cause__  # not the block's cancellation
        assert cancelled

    async def test_errors_at_once_leave_together(self, store: LeaseStore, key_prefix: str) -> None:
        mine = ValueError("the block's own")
        with pytest.RaisesGroup(ValueError, HeartbeatLost) as caught:
            async with Heartbeat(store, "g", "m", interval=0.1, prefix=key_prefix) as beat:
                assert beat.lease is not None
                await store.revoke(beat.lease)
                try:
                    await anyio.sleep(10)
                finally:
                    raise mine  # as it handles the cancellation the loss caused
        assert caught.value.exceptions[0] is mine
        assert str(caught.value).startswith(
            "Heartbeat of member 'm' in group 'g': errors in the block and in its "
            "background tasks at once"
        )

    async def test_an_outer_cancellation(self, store: LeaseStore, key_prefix: str) -> None:
        with anyio.move_on_after(0.3) as scope:
            async with Heartbeat(store, "g", "m", interval=0.1, prefix=key_prefix):
                await anyio.sleep(10)
        assert scope.cancelled_caught
        assert await listed(store, key_prefix) == set()

    async def test_keyboard_interrupt(self, store: LeaseStore, key_prefix: str) -> None:
        with pytest.raises(KeyboardInterrupt):
            async with Heartbeat(store, "g", "m", interval=0.1, prefix=key_prefix):
                raise KeyboardInterrupt
        assert await listed(store, key_prefix) == set()

    async def test_the_puts_error_when_joining(self) -> None:
        store = FakeStore()
        store.put_fault = StoreConnectionError("refused")
        with pytest.raises(StoreConnectionError, match="refused"):
            async with Heartbeat(store, "g", "m", interval=0.1, max_missed=10):
                pytest.fail("joined without a put")

    async def test_a_lease_gone_when_joining_is_heartbeat_lost(self) -> None:
        store = FakeStore()
        gone = LeaseExpired("lease 1 has expired or was revoked")
        store.put_fault = gone
        with pytest.raises(HeartbeatLost, match="the store said its lease is gone") as caught:
            async with Heartbeat(store, "g", "m", interval=0.1, max_missed=10):
                pytest.fail("joined without a put")
        assert caught.value.__cause__ is gone
        assert store.count("revoke") == 0  # the lease is gone: nothing to revoke


@pytest.mark.slow
class TestHeartbeatOutage:
    async def test_short_outage_is_retried(self) -> None:
        store = FaultyStore(MemoryStore())
        async with Heartbeat(store, "g", "m", interval=0.2, max_missed=5) as beat:
            await anyio.sleep(0.3)
            store.fail("keep_alive")
            await anyio.sleep(0.5)  # well under the 1 s TTL
            store.heal()
            await anyio.sleep(0.5)
            assert beat.retries >= 1
        assert (await members(store.inner, "g")).members == {}

    async def test_outage_longer_than_ttl_memory(self) -> None:
        store = FaultyStore(MemoryStore())
        start = anyio.current_time()
        with pytest.raises(HeartbeatLost, match="unreachable"):
            async with Heartbeat(store, "g", "m", interval=0.25, max_missed=4):
                store.fail("keep_alive")
                await anyio.sleep(30)
        # TTL 1 s, then the renewal grace (the TTL, when under 2 s), plus one retry at most
        assert anyio.current_time() - start <= 1 + 1 + 0.5

    async def test_outage_longer_than_ttl_etcd(
        self, etcd_server: EtcdServer, key_prefix: str
    ) -> None:
        async with (
            TcpProxy("127.0.0.1", etcd_server.client_port) as proxy,
            EtcdStore(proxy.endpoint, timeout=1) as store,
        ):
            start = anyio.current_time()
            with pytest.raises(HeartbeatLost):
                async with Heartbeat(
                    store, "g", "m", interval=0.5, max_missed=4, prefix=key_prefix
                ):
                    proxy.refusing = True
                    proxy.cut()
                    await anyio.sleep(30)
            assert anyio.current_time() - start <= 2 + 2 + 1.5  # TTL, renewal grace, retry
