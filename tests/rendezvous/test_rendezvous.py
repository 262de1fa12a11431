"""Rendezvous: rounds completing, late arrivals, re-rendezvous, closing, changes(), the
run's keys and their clean-up, argument checks, and randomized and multi-process runs."""

from __future__ import annotations

import json
import logging
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from contextlib import AsyncExitStack, aclosing
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import pytest

from anyrdzv import (
    EtcdStore,
    Heartbeat,
    HeartbeatLost,
    Lease,
    LeaseExpired,
    LeaseStore,
    MemoryStore,
    Rendezvous,
    RendezvousClosed,
    RendezvousError,
    RendezvousInfo,
    RendezvousTimeout,
    StorePermissionError,
    members,
    read_run,
)
from anyrdzv._rendezvous import _rules as rules
from anyrdzv.testing import CountingStore, FaultyStore
from tests._support.heartbeat import FakeStore
from tests._support.rendezvous import (
    NODE_PROCESS,
    PREFIX,
    WatchedStore,
    all_next,
    check_agreement,
    doomed,
    eventually,
    joins,
    kill,
    make,
    run_keys,
    waiting_is,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from tests._support.etcd_server import EtcdServer

pytestmark = pytest.mark.anyio


async def last_join_to_all_ranked(store: LeaseStore, run_id: str) -> float:
    """Four nodes, min = max = 4: three join and wait; then the time from the fourth's
    call (its join completes the round) until every node holds its info."""
    held: list[float] = []

    async def wait(rdzv: Rendezvous) -> None:
        await rdzv.next_rendezvous()
        held.append(anyio.current_time())

    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                make(store, run_id, f"n{i}", min_nodes=4, max_nodes=4, last_call_timeout=30)
            )
            for i in range(4)
        ]
        async with anyio.create_task_group() as tg:
            for rdzv in nodes[:3]:
                tg.start_soon(wait, rdzv)
            with anyio.fail_after(10):
                # Polled: no event tells the test that a join key is in.
                while len((await store.get_prefix_kv(f"{PREFIX}/{run_id}/{rules.JOIN}"))[0]) < 3:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            start = anyio.current_time()
            await wait(nodes[3])
    assert len(held) == 4
    return max(held) - start


class TestCompletion:
    async def test_max_nodes_completes_at_once(self, store: LeaseStore, run_id: str) -> None:
        async with AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(
                    make(store, run_id, name, last_call_timeout=30, payload=name.encode())
                )
                for name in ("n2", "n0", "n1")
            ]
            start = anyio.current_time()
            infos = await all_next(*nodes)
            assert anyio.current_time() - start < 5  # no last call of 30 s
        info = check_agreement(infos)
        assert info.round == 0
        assert info.participants == ("n0", "n1", "n2")
        assert info.payloads == {"n0": b"n0", "n1": b"n1", "n2": b"n2"}
        assert {name: i.rank for name, i in infos.items()} == {"n0": 0, "n1": 1, "n2": 2}

    async def test_a_round_completes_within_the_bound_of_its_last_join(
        self, store: LeaseStore, run_id: str
    ) -> None:
        """Event-driven: from the last node's call (its join is the completing
        condition) until every node holds its info, within 100 ms on MemoryStore and
        300 ms on etcd. The median of five runs is held to it, so that one run slowed by
        a loaded machine does not fail the test; a node polling every second could not
        pass it."""
        bound = 0.1 if isinstance(store, MemoryStore) else 0.3
        times = sorted([await last_join_to_all_ranked(store, f"{run_id}-{i}") for i in range(5)])
        assert times[2] < bound, f"last join to all ranked, s: {times}"

    async def test_min_nodes_complete_after_the_last_call(
        self, store: LeaseStore, run_id: str
    ) -> None:
        async with (
            make(store, run_id, "a", max_nodes=4) as a,
            make(store, run_id, "b", max_nodes=4) as b,
        ):
            start = anyio.current_time()
            infos = await all_next(a, b)
            elapsed = anyio.current_time() - start
        assert check_agreement(infos).participants == ("a", "b")
        assert 0.25 <= elapsed < 5

    async def test_below_min_nodes_never_completes(self, store: LeaseStore, run_id: str) -> None:
        async with make(store, run_id, "a", join_timeout=0.8) as a:
            start = anyio.current_time()
            with pytest.raises(RendezvousTimeout, match="join_timeout"):
                await a.next_rendezvous()
            assert 0.7 <= anyio.current_time() - start < 0.8 + 1
            # The node withdrew its join: nothing of it but its lease key is left.
            assert await run_keys(store, run_id) == [
                f"{PREFIX}/{run_id}/nodes/a",
                f"{PREFIX}/{run_id}/state",
                f"{PREFIX}/{run_id}/state.coordinator",
            ]
        assert await run_keys(store, run_id) == []

    async def test_ranks_follow_sorted_names_not_join_order(
        self, store: LeaseStore, run_id: str
    ) -> None:
        names = ["zeta", "alpha", "mid", "Beta"]
        async with AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(make(store, run_id, n, max_nodes=4)) for n in names
            ]
            infos = await all_next(*nodes)
        info = check_agreement(infos)
        assert info.participants == ("Beta", "alpha", "mid", "zeta")


class TestLateArrivals:
    async def test_a_late_node_waits_is_counted_and_joins_the_next_round(
        self, store: LeaseStore, run_id: str
    ) -> None:
        async with make(store, run_id, "a") as a, make(store, run_id, "b") as b:
            first = check_agreement(await all_next(a, b))
            assert await a.num_nodes_waiting() == 0
            async with (
                make(store, run_id, "c", last_call_timeout=30) as c,
                anyio.create_task_group() as tg,
            ):
                late: list[RendezvousInfo] = []

                async def wait_c() -> None:
                    late.append(await c.next_rendezvous())

                tg.start_soon(wait_c)

                await eventually(lambda: waiting_is(a, 1))
                await eventually(lambda: waiting_is(b, 1))
                assert await a.num_nodes_waiting() == 1
                assert await b.num_nodes_waiting() == 1
                assert not late  # it waits while the round runs
                start = anyio.current_time()
                infos = await all_next(a, b)
                # D6: every live node of the round, and the waiting one: no last call
                assert anyio.current_time() - start < 5
            infos["c"] = late[0]
            second = check_agreement(infos)
        assert second.round == first.round + 1
        assert second.participants == ("a", "b", "c")

    async def test_nodes_beyond_max_nodes_are_not_counted(
        self, store: LeaseStore, run_id: str
    ) -> None:
        watched = WatchedStore(store)
        async with (
            make(watched, run_id, "a", max_nodes=2) as a,
            anyio.create_task_group() as holder,
        ):
            # b is killed below: its block ends with its lost heartbeat.
            b = await holder.start(doomed, make(watched, run_id, "b", max_nodes=2))
            check_agreement(await all_next(a, b))
            async with (
                make(watched, run_id, "c", max_nodes=2) as c,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(c.next_rendezvous)
                await watched.until_seen(f"{PREFIX}/{run_id}/join/c")  # as a's view shows
                assert (await joins(store, run_id))["c"][0] == 1
                assert await a.num_nodes_waiting() == 0
                assert await b.num_nodes_waiting() == 0
                await kill(store, run_id, "b")
                # Fewer participants than max_nodes now: c is counted.
                await eventually(lambda: waiting_is(a, 1))
                assert await a.num_nodes_waiting() == 1
                infos = await all_next(a)
                assert infos["a"].participants == ("a", "c")
                tg.cancel_scope.cancel()


class TestReRendezvous:
    async def test_d6_survivors_complete_without_the_last_call(
        self, store: LeaseStore, run_id: str
    ) -> None:
        slow = {"last_call_timeout": 30}
        async with make(store, run_id, "a", **slow) as a, make(store, run_id, "b", **slow) as b:
            async with anyio.create_task_group() as tg:
                c = await tg.start(doomed, make(store, run_id, "c", **slow))
                check_agreement(await all_next(a, b, c))
                await kill(store, run_id, "c")
            start = anyio.current_time()
            infos = await all_next(a, b)
            assert anyio.current_time() - start < 5
        info = check_agreement(infos)
        assert (info.round, info.participants) == (1, ("a", "b"))

    async def test_d6_after_a_node_leaves(self, store: LeaseStore, run_id: str) -> None:
        slow = {"last_call_timeout": 30}
        async with make(store, run_id, "a", **slow) as a, make(store, run_id, "b", **slow) as b:
            async with make(store, run_id, "c", **slow) as c:
                check_agreement(await all_next(a, b, c))
            start = anyio.current_time()
            infos = await all_next(a, b)
            assert anyio.current_time() - start < 5
        assert check_agreement(infos).participants == ("a", "b")

    async def test_a_slow_survivor_is_dropped_after_the_last_call(
        self, store: LeaseStore, run_id: str
    ) -> None:
        async with (
            make(store, run_id, "a") as a,
            make(store, run_id, "b") as b,
            make(store, run_id, "c") as c,
        ):
            check_agreement(await all_next(a, b, c))
            start = anyio.current_time()
            infos = await all_next(a, b)  # c never comes back
            assert 0.25 <= anyio.current_time() - start < 5
            assert check_agreement(infos).participants == ("a", "b")
            # c comes late: it waits, and joins the next round.
            async with anyio.create_task_group() as tg:
                tg.start_soon(c.next_rendezvous)
                await eventually(lambda: waiting_is(a, 1))
                tg.cancel_scope.cancel()


class TestClose:
    async def test_close_ends_pending_and_later_rounds(
        self, store: LeaseStore, run_id: str
    ) -> None:
        watched = WatchedStore(store)
        async with (
            make(watched, run_id, "a", min_nodes=3) as a,
            make(watched, run_id, "b", min_nodes=3) as b,
        ):
            errors: list[BaseException] = []

            async def pending(rdzv: Rendezvous) -> None:
                try:
                    await rdzv.next_rendezvous()
                except RendezvousClosed as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(pending, a)
                tg.start_soon(pending, b)
                for node in ("a", "b"):  # both joined, as a's view shows
                    await watched.until_seen(f"{PREFIX}/{run_id}/join/{node}")
                assert {node: join[0] for node, join in (await joins(store, run_id)).items()} == {
                    "a": 0,
                    "b": 0,
                }
                assert not await a.is_closed()
                start = anyio.current_time()
                await b.set_closed()
            assert anyio.current_time() - start < 5
            assert len(errors) == 2
            assert await a.is_closed()
            await b.set_closed()  # closing twice is fine
            with pytest.raises(RendezvousClosed):
                await a.next_rendezvous()
            async with make(store, run_id, "c", min_nodes=3) as c:
                with pytest.raises(RendezvousClosed):
                    await c.next_rendezvous()

    async def test_a_closed_run_is_gone_when_its_nodes_leave(
        self, store: LeaseStore, run_id: str
    ) -> None:
        async with make(store, run_id, "a") as a, make(store, run_id, "b") as b:
            check_agreement(await all_next(a, b))
            await a.set_closed()
            assert await run_keys(store, run_id)
        assert await run_keys(store, run_id) == []
        # A rerun with the same id works.
        async with make(store, run_id, "a") as a, make(store, run_id, "b") as b:
            info = check_agreement(await all_next(a, b))
        assert info.round == 0
        assert await run_keys(store, run_id) == []

    async def test_a_state_no_live_node_holds_is_dropped(
        self, store: LeaseStore, run_id: str
    ) -> None:
        # The last node of a run was killed: its state is left behind, closed.
        async with make(store, run_id, "a") as a:
            await a.set_closed()
            state = await store.get(f"{PREFIX}/{run_id}/state")
        assert state is not None
        await store.put(state.key, state.value)
        async with make(store, run_id, "a") as a, make(store, run_id, "b") as b:
            assert not await a.is_closed()
            check_agreement(await all_next(a, b))


async def changes_latencies(store: LeaseStore, run_id: str) -> dict[str, float]:
    """a, b and c hold round 0 (max_nodes 4, after the last call); a follows changes().
    Then, one at a time: d arrives, c is killed, b asks for a new round, a closes the
    run; the time from each cause until a's changes() yields its reason."""
    yielded: dict[str, float] = {}
    async with AsyncExitStack() as stack:
        tg = await stack.enter_async_context(anyio.create_task_group())
        a = await stack.enter_async_context(make(store, run_id, "a", max_nodes=4))
        b = await stack.enter_async_context(make(store, run_id, "b", max_nodes=4))
        c_gone = anyio.Event()

        async def hold_c(*, task_status: anyio.abc.TaskStatus[Rendezvous]) -> None:
            try:
                await doomed(make(store, run_id, "c", max_nodes=4), task_status=task_status)
            finally:
                c_gone.set()

        c = await tg.start(hold_c)
        d = await stack.enter_async_context(make(store, run_id, "d", max_nodes=4))
        check_agreement(await all_next(a, b, c))

        async def follow() -> None:
            async with aclosing(a.changes()) as changes:
                async for change in changes:
                    yielded[change] = anyio.current_time()

        async def until(change: str, cause: Callable[[], Awaitable[object]]) -> float:
            await anyio.wait_all_tasks_blocked()
            start = anyio.current_time()
            await cause()
            await eventually(lambda: change in yielded)
            return yielded[change] - start

        async def until_closed(call: Callable[[], Awaitable[object]]) -> None:
            with pytest.raises(RendezvousClosed):
                await call()

        async def in_background(call: Callable[[], Awaitable[object]]) -> None:
            tg.start_soon(until_closed, call)  # it waits on, until a closes the run

        tg.start_soon(follow)
        latencies = {"waiting": await until("waiting", lambda: in_background(d.next_rendezvous))}
        latencies["lost"] = await until("lost", lambda: kill(store, run_id, "c"))
        await c_gone.wait()
        latencies["new_round"] = await until("new_round", lambda: in_background(b.next_rendezvous))
        latencies["closed"] = await until("closed", a.set_closed)
        tg.cancel_scope.cancel()
    return latencies


class TestChanges:
    async def test_changes_yield_within_the_bound_of_their_cause(
        self, store: LeaseStore, run_id: str
    ) -> None:
        """Each reason is yielded within 100 ms (MemoryStore) or 300 ms (etcd) of its
        cause: the median of five runs is held to it."""
        bound = 0.1 if isinstance(store, MemoryStore) else 0.3
        runs = [await changes_latencies(store, f"{run_id}-{i}") for i in range(5)]
        for change in ("waiting", "lost", "new_round", "closed"):
            times = sorted(run[change] for run in runs)
            assert times[2] < bound, f"{change}: cause to changes() yielding it, s: {times}"

    async def test_changes_on_waiting_lost_new_round_and_closed(
        self, store: LeaseStore, run_id: str
    ) -> None:
        async with (
            make(store, run_id, "a") as a,
            make(store, run_id, "b") as b,
            make(store, run_id, "c") as c,
        ):
            check_agreement(await all_next(a, b))
            seen: list[str] = []

            async def follow() -> None:
                async for change in a.changes():
                    seen.append(change)

            infos: dict[str, RendezvousInfo] = {}

            async def next_of(rdzv: Rendezvous) -> None:
                infos[rdzv.node] = await rdzv.next_rendezvous()

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                tg.start_soon(next_of, c)
                await eventually(lambda: seen == ["waiting"])
                # b asks for a new round (it joins c there)
                tg.start_soon(next_of, b)
                await eventually(lambda: "new_round" in seen)
                await next_of(a)
                await eventually(lambda: len(infos) == 3)
                assert check_agreement(infos).participants == ("a", "b", "c")
                seen.clear()
                await c.set_closed()
                await eventually(lambda: seen == ["closed"])
                tg.cancel_scope.cancel()

    async def test_changes_on_a_lost_participant(self, store: LeaseStore, run_id: str) -> None:
        async with (
            make(store, run_id, "a") as a,
            make(store, run_id, "b") as b,
            anyio.create_task_group() as tg,
        ):
            c = await tg.start(doomed, make(store, run_id, "c"))
            check_agreement(await all_next(a, b, c))
            seen: list[str] = []

            async def follow() -> None:
                async for change in b.changes():
                    seen.append(change)

            async with anyio.create_task_group() as watchers:
                watchers.start_soon(follow)
                await anyio.sleep(0.05)
                assert seen == []
                start = anyio.current_time()
                await kill(store, run_id, "c")
                await eventually(lambda: seen == ["lost"])
                assert anyio.current_time() - start < 2
                watchers.cancel_scope.cancel()


class TestStore:
    async def test_no_key_is_left(self, store: LeaseStore, run_id: str) -> None:
        async with make(store, run_id, "a") as a, make(store, run_id, "b") as b:
            check_agreement(await all_next(a, b))
            check_agreement(await all_next(a, b))
            keys = await run_keys(store, run_id)
            assert f"{PREFIX}/{run_id}/state" in keys
        assert await run_keys(store, run_id) == []

    async def test_state_is_json(self, store: LeaseStore, run_id: str) -> None:
        async with (
            make(store, run_id, "a", payload=b"\x80\x00") as a,
            make(store, run_id, "b") as b,
        ):
            check_agreement(await all_next(a, b))
            kvs, _ = await store.get_prefix_kv(f"{PREFIX}/{run_id}/")
            import json

            for kv in kvs:
                assert isinstance(json.loads(kv.value), dict)

    @pytest.mark.parametrize(
        "value",
        [
            b"\x80\x04\x95pickle",
            b"[1, 2]",
            b'{"layout": 2, "round": -1}',
            (
                b'{"layout":2,"round":0,"complete":false,"closed":false,"min_nodes":3,'
                b'"max_nodes":2,"size":0,"waiting":0,"lost":false}'
            ),
        ],
    )
    async def test_a_malformed_state_is_an_error(
        self, store: LeaseStore, run_id: str, value: bytes
    ) -> None:
        await store.put(f"{PREFIX}/{run_id}/state", value)
        try:
            async with make(store, run_id, "a") as a:
                with pytest.raises(RendezvousError, match="malformed"):
                    await a.next_rendezvous()
        finally:
            await store.delete(f"{PREFIX}/{run_id}/state")

    async def test_a_state_of_another_key_layout_names_both(
        self, store: LeaseStore, run_id: str
    ) -> None:
        # What an anyrdzv of key layout 1 wrote: no "layout", its participants inside.
        old = (
            b'{"round":0,"complete":true,"closed":false,"min_nodes":1,"max_nodes":2,'
            b'"participants":["x"],"payloads":{"x":""},"previous":null}'
        )
        await store.put(f"{PREFIX}/{run_id}/state", old)
        try:
            async with make(store, run_id, "a") as a:
                with pytest.raises(RendezvousError, match=r"key layout 1 .*key layout 2"):
                    await a.next_rendezvous()
        finally:
            await store.delete(f"{PREFIX}/{run_id}/state")

    async def test_a_malformed_join_is_skipped(
        self, store: LeaseStore, run_id: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        # A node key no node wrote is no node: the coordinator skips it, with a warning
        # naming it, and the run goes on.
        caplog.set_level(logging.WARNING, "anyrdzv._rendezvous._coordinator")
        await store.put(f"{PREFIX}/{run_id}/join/x", b"not json")
        try:
            async with make(store, run_id, "a") as a, make(store, run_id, "b") as b:
                check_agreement(await all_next(a, b))
        finally:
            await store.delete(f"{PREFIX}/{run_id}/join/x")
        assert any("join/x" in r.getMessage() for r in caplog.records)

    async def test_nodes_that_disagree_on_min_or_max_nodes_do_not_meet(
        self, store: LeaseStore, run_id: str
    ) -> None:
        watched = WatchedStore(store)
        async with (
            make(watched, run_id, "a") as a,
            make(watched, run_id, "b", max_nodes=4) as b,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(a.next_rendezvous)
            await watched.until_seen(f"{PREFIX}/{run_id}/state")  # a made it, and a's view has it
            with pytest.raises(RendezvousError, match="max_nodes=4"):
                await b.next_rendezvous()
            tg.cancel_scope.cancel()

    async def test_num_nodes_waiting_asks_nothing_of_the_store(self, run_id: str) -> None:
        counting = CountingStore(MemoryStore())
        async with make(counting, run_id, "a") as a, make(counting, run_id, "b") as b:
            check_agreement(await all_next(a, b))
            before = counting.requests()
            for _ in range(100):
                assert await a.num_nodes_waiting() == 0
                assert not await a.is_closed()
            assert counting.requests() == before


class TestDataSubtree:
    async def test_data_prefix(self, store: LeaseStore, run_id: str) -> None:
        rdzv = make(store, run_id, "a")
        assert rdzv.data_prefix == f"{PREFIX}/{run_id}/store/"
        custom = Rendezvous(store, run_id, min_nodes=1, max_nodes=1, prefix="/x/y")
        assert custom.data_prefix == f"/x/y/{run_id}/store/"

    async def test_the_last_node_deletes_it(self, store: LeaseStore, run_id: str) -> None:
        async with make(store, run_id, "a") as a, make(store, run_id, "b") as b:
            check_agreement(await all_next(a, b))
            await store.put(a.data_prefix + "k", b"v")
            await store.put(a.data_prefix + "deep/k", b"v")
        assert await run_keys(store, run_id) == []

    async def test_it_goes_without_a_state_too(self, store: LeaseStore, run_id: str) -> None:
        async with make(store, run_id, "a") as a:
            await store.put(a.data_prefix + "k", b"v")
        assert await run_keys(store, run_id) == []

    async def test_a_stale_run_drops_it(self, store: LeaseStore, run_id: str) -> None:
        async with make(store, run_id, "a") as a:
            await a.set_closed()
            state = await store.get(f"{PREFIX}/{run_id}/state")
        assert state is not None
        # The run's last node was killed: its state and its adapter's keys are left.
        await store.put(state.key, state.value)
        await store.put(f"{PREFIX}/{run_id}/store/k", b"v")
        async with make(store, run_id, "a") as a:
            assert not await a.is_closed()
            assert await store.get(a.data_prefix + "k") is None
            await store.put(a.data_prefix + "mine", b"v")
            async with make(store, run_id, "b") as b:
                check_agreement(await all_next(a, b))
                assert await store.get(a.data_prefix + "mine") is not None
        assert await run_keys(store, run_id) == []

    async def test_data_lease_is_the_runs(self, store: LeaseStore, run_id: str) -> None:
        rdzv = make(store, run_id, "a")
        assert rdzv.data_lease is None  # outside async with
        async with rdzv as a, make(store, run_id, "b") as b:
            check_agreement(await all_next(a, b))
            state = await store.get(f"{PREFIX}/{run_id}/state")
            assert state is not None
            assert a.data_lease == b.data_lease == state.lease is not None
            await store.put(a.data_prefix + "k", b"v", lease=a.data_lease)
            assert a.data_lease is not None
            assert await store.time_to_live(a.data_lease) is not None


class TestNamespaces:
    """A Heartbeat group and a Rendezvous run of one name share no key: a node's
    heartbeat key is ``nodes/<node>``, a group's member ``members/<name>``."""

    async def test_a_heartbeat_group_beside_a_run_of_its_name(
        self, store: LeaseStore, run_id: str
    ) -> None:
        async with (
            Heartbeat(store, run_id, "monitor", interval=0.5, payload=b"m"),
            Heartbeat(store, run_id, "a", interval=0.5, payload=b"h"),
            make(store, run_id, "a", payload=b"10.0.0.1") as a,
            make(store, run_id, "b") as b,
        ):
            info = check_agreement(await all_next(a, b))
            assert info.payloads == {"a": b"10.0.0.1", "b": b""}
            snapshot = await members(store, run_id, prefix=PREFIX)
            assert snapshot.members == {"monitor": b"m", "a": b"h"}
            report = await read_run(store, run_id)
            assert [(n.node, n.payload) for n in report.participants] == [
                ("a", b"10.0.0.1"),
                ("b", b""),
            ]
            assert report.others == ()
            infos = await all_next(a, b)  # the run goes on
            assert check_agreement(infos).round == 1


#: A lease TTL of 5 s (renewals every 0.2 s), for tests that do not wait for a lease to
#: run out: a loaded machine that stalls the loop for a second loses no lease.
STEADY: dict[str, Any] = {"keep_alive_max_attempt": 25}


class TestExceptionsLeaveAsThemselves:
    """``try: async with Rendezvous(...)`` catches what it names, on both stores: nothing
    leaves in a group but errors that happen at once."""

    async def test_the_issues_example(self, store: LeaseStore, run_id: str) -> None:
        caught: list[str] = []
        try:
            async with Rendezvous(
                store, run_id, node="a", min_nodes=2, max_nodes=3, join_timeout=1
            ) as r:
                await r.next_rendezvous()
        except RendezvousTimeout:
            caught.append("RendezvousTimeout")
        except HeartbeatLost:
            caught.append("HeartbeatLost")
        assert caught == ["RendezvousTimeout"]
        assert await run_keys(store, run_id) == []

    async def test_the_blocks_error(self, store: LeaseStore, run_id: str) -> None:
        error = ValueError("the block's own")
        with pytest.raises(ValueError, match="the block's own") as caught:
            async with make(store, run_id, "a", **STEADY):
                raise error
        assert caught.value is error
        assert await run_keys(store, run_id) == []

    async def test_a_lost_heartbeat_cancels_the_block(self, store: LeaseStore, run_id: str) -> None:
        cancelled = False
        with pytest.raises(HeartbeatLost, match="'a' in group") as caught:
            async with make(store, run_id, "a", **STEADY):
                await kill(store, run_id, "a")
                try:
                    await anyio.sleep(10)
                except anyio.get_cancelled_exc_class():
                    cancelled = True
                    raise
        assert isinstance(caught.value.__cause__, LeaseExpired)
        assert (caught.value.group, caught.value.member) == (run_id, "a")
        assert cancelled

    async def test_a_watch_that_gave_up_cancels_the_block(
        self, store: LeaseStore, run_id: str
    ) -> None:
        faulty = FaultyStore(store)
        with pytest.raises(StorePermissionError, match="permission denied"):
            async with make(faulty, run_id, "a", **STEADY):
                faulty.fail("watch_prefix", error=StorePermissionError("permission denied"))
                faulty.break_watches()
                await anyio.sleep(10)
        assert await run_keys(store, run_id) == []

    async def test_a_watch_that_fails_while_entering(self, store: LeaseStore, run_id: str) -> None:
        faulty = FaultyStore(store)
        faulty.fail("watch_prefix", error=StorePermissionError("permission denied"))
        with pytest.raises(StorePermissionError, match="permission denied"):
            async with make(faulty, run_id, "a", **STEADY):
                pytest.fail("entered without a watch")
        assert await run_keys(store, run_id) == []

    async def test_errors_at_once_leave_together(self, store: LeaseStore, run_id: str) -> None:
        mine = ValueError("the block's own")
        with pytest.RaisesGroup(ValueError, HeartbeatLost) as caught:
            async with make(store, run_id, "a", **STEADY):
                await kill(store, run_id, "a")
                try:
                    await anyio.sleep(10)
                finally:
                    raise mine  # as it handles the cancellation the loss caused
        assert caught.value.exceptions[0] is mine

    async def test_an_outer_cancellation(self, store: LeaseStore, run_id: str) -> None:
        with anyio.move_on_after(0.3) as scope:
            async with make(store, run_id, "a", **STEADY) as a:
                await a.next_rendezvous()
        assert scope.cancelled_caught
        assert await run_keys(store, run_id) == []

    async def test_keyboard_interrupt(self, store: LeaseStore, run_id: str) -> None:
        with pytest.raises(KeyboardInterrupt):
            async with make(store, run_id, "a", **STEADY):
                raise KeyboardInterrupt
        assert await run_keys(store, run_id) == []

    async def test_keyboard_interrupt_in_next_rendezvous(
        self, store: LeaseStore, run_id: str
    ) -> None:
        class Interrupted(WatchedStore):
            async def put(self, key: str, value: bytes, *, lease: Lease | int | None = None) -> int:
                if "/join/" in key:
                    raise KeyboardInterrupt  # Ctrl-C, as trio delivers it in a checkpoint
                return await super().put(key, value, lease=lease)

        with pytest.raises(KeyboardInterrupt):
            async with make(Interrupted(store), run_id, "a", **STEADY) as a:
                await a.next_rendezvous()
        assert await run_keys(store, run_id) == []


class TestLeaseGone:
    """A node whose lease is gone gets one error, HeartbeatLost, a RendezvousError."""

    @pytest.mark.slow
    async def test_one_error_from_next_rendezvous_and_from_the_block(
        self, store: LeaseStore, run_id: str
    ) -> None:
        faulty = FaultyStore(store)
        # The renewals (the first is due 1 s after the grant) hang until healed, so that
        # next_rendezvous() hears of the loss first.
        faulty.hang("keep_alive")
        with pytest.raises(HeartbeatLost) as outside:
            async with make(
                faulty, run_id, "a", keep_alive_interval=1, keep_alive_max_attempt=10
            ) as a:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(kill, store, run_id, "a")
                    with pytest.raises(HeartbeatLost) as inside:
                        await a.next_rendezvous()
                assert isinstance(inside.value, RendezvousError)
                assert "the store said its lease is gone" in str(inside.value)
                assert isinstance(inside.value.__cause__, LeaseExpired)
                faulty.heal()  # the renewal hears of it too, and ends the block
                await anyio.sleep(10)
        assert outside.value is inside.value

    async def test_a_node_killed_as_it_waits_gets_it(self, store: LeaseStore, run_id: str) -> None:
        caught: list[HeartbeatLost] = []
        watched = WatchedStore(store)

        async def node() -> None:
            try:
                async with make(watched, run_id, "a", **STEADY) as a:
                    await a.next_rendezvous()
            except HeartbeatLost as exc:  # from next_rendezvous() or the heartbeat
                caught.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(node)
            await watched.until_seen(f"{PREFIX}/{run_id}/join/a")
            await kill(store, run_id, "a")
        assert len(caught) == 1
        assert isinstance(caught[0].__cause__, LeaseExpired)

    def test_it_is_a_rendezvous_error(self) -> None:
        assert issubclass(HeartbeatLost, RendezvousError)


@pytest.fixture(params=["memory", "etcd"])
async def node_stores(request: pytest.FixtureRequest) -> AsyncIterator[list[LeaseStore]]:
    """Three nodes' stores: one MemoryStore for all (it lives in one process), or a
    store object of its own for each node on etcd, as three hosts would have."""
    if request.param == "memory":
        memory = MemoryStore()
        yield [memory, memory, memory]
        return
    server: EtcdServer = request.getfixturevalue("etcd_server")
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(EtcdStore(server.endpoint)) for _ in range(3)]


async def nodes_on(
    stack: AsyncExitStack, stores: list[LeaseStore], run_id: str, **kwargs: Any
) -> list[Rendezvous]:
    """Nodes a, b and c, each on its own store, min_nodes = max_nodes = 3 unless told."""
    options = {"min_nodes": 3, "max_nodes": 3, **STEADY, **kwargs}
    return [
        await stack.enter_async_context(make(store, run_id, name, **options))
        for store, name in zip(stores, "abc", strict=True)
    ]


class TestCancellation:
    """A cancelled next_rendezvous() withdraws its join, as join_timeout does."""

    async def test_peers_complete_no_round_with_it_and_its_next_call_joins_afresh(
        self, node_stores: list[LeaseStore], run_id: str
    ) -> None:
        async with AsyncExitStack() as stack:
            a, b, c = await nodes_on(stack, node_stores, run_id)
            with anyio.move_on_after(0.3) as scope:
                await a.next_rendezvous()
            assert scope.cancelled_caught
            assert set(await joins(node_stores[0], run_id)) == set()  # withdrawn at once
            infos: dict[str, RendezvousInfo] = {}

            async def call(rdzv: Rendezvous) -> None:
                infos[rdzv.node] = await rdzv.next_rendezvous()

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, b)
                tg.start_soon(call, c)
                await eventually(lambda: _joined(node_stores[0], run_id, {"b", "c"}))
                await anyio.sleep(0.3)  # a stale join of a would have made max_nodes
                assert infos == {}  # no world with a, which is not there
                await call(a)
            info = check_agreement(infos)
            assert (info.round, info.participants) == (0, ("a", "b", "c"))

    async def test_a_round_formed_with_its_stale_join_is_not_returned(
        self,
        node_stores: list[LeaseStore],
        run_id: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """The withdrawal failed: the peers complete a round with a's stale join. a's
        next call does not return that round: it asks for a new one, and joins it."""
        faulty = FaultyStore(node_stores[0])
        async with AsyncExitStack() as stack:
            # b enters first and coordinates, so that the one failed txn is a's withdrawal.
            options: dict[str, Any] = {"min_nodes": 3, "max_nodes": 3, **STEADY}
            b = await stack.enter_async_context(make(node_stores[1], run_id, "b", **options))
            coordinator = f"{PREFIX}/{run_id}/state.coordinator"
            await eventually(lambda: node_stores[1].get(coordinator))
            a = await stack.enter_async_context(make(faulty, run_id, "a", **options))
            c = await stack.enter_async_context(make(node_stores[2], run_id, "c", **options))
            faulty.fail("txn", times=1)  # the withdrawal's
            with anyio.move_on_after(0.3):
                await a.next_rendezvous()
            assert "node 'a' could not withdraw its join" in caplog.text
            assert set(await joins(node_stores[0], run_id)) == {"a"}
            for stale in (await all_next(b, c)).values():
                assert (stale.round, stale.participants) == (0, ("a", "b", "c"))
            seen: list[str] = []
            infos: dict[str, RendezvousInfo] = {}

            async def follow() -> None:
                async with aclosing(b.changes()) as changes:
                    async for change in changes:
                        seen.append(change)

            async def call(rdzv: Rendezvous) -> None:
                infos[rdzv.node] = await rdzv.next_rendezvous()

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                tg.start_soon(call, a)
                await eventually(lambda: seen == ["new_round"])  # a asked for a new one
                assert infos == {}
                tg.start_soon(call, b)
                await call(c)
                await eventually(lambda: len(infos) == 3)
                tg.cancel_scope.cancel()
            info = check_agreement(infos)
            assert (info.round, info.participants) == (1, ("a", "b", "c"))


async def _joined(store: LeaseStore, run_id: str, nodes: set[str]) -> bool:
    return set(await joins(store, run_id)) == nodes


class TestOverlap:
    """Calls on one Rendezvous that make no sense at once are refused at once."""

    async def test_a_second_next_rendezvous_at_once_is_refused(
        self, node_stores: list[LeaseStore], run_id: str
    ) -> None:
        async with AsyncExitStack() as stack:
            a, b, c = await nodes_on(stack, node_stores, run_id)
            infos: dict[str, RendezvousInfo] = {}

            async def call(rdzv: Rendezvous) -> None:
                infos[rdzv.node] = await rdzv.next_rendezvous()

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, a)
                await eventually(lambda: _joined(node_stores[0], run_id, {"a"}))
                with (
                    anyio.fail_after(1),
                    pytest.raises(RuntimeError, match="calls of it on one Rendezvous must not"),
                ):
                    await a.next_rendezvous()
                tg.start_soon(call, b)
                await call(c)
            info = check_agreement(infos)
            assert (info.round, info.participants) == (0, ("a", "b", "c"))
            await anyio.sleep(0.3)
            kv = await node_stores[0].get(f"{PREFIX}/{run_id}/{rules.STATE}")
            assert kv is not None
            state = rules.decode_state(kv.value)
            assert (state.round, state.complete) == (0, True)  # no new round was asked for

    async def test_entering_twice_at_once_is_refused(self, store: LeaseStore, run_id: str) -> None:
        slow = FakeStore(store)
        slow.grant_may_finish = anyio.Event()
        rdzv = make(slow, run_id, "a", **STEADY)
        async with anyio.create_task_group() as tg:

            async def enter() -> None:
                async with rdzv:
                    pass

            tg.start_soon(enter)
            await slow.grant_started.wait()
            with pytest.raises(RuntimeError, match="this Rendezvous of node 'a' of run .* is"):
                async with rdzv:
                    pytest.fail("entered twice")
            slow.grant_may_finish.set()
        assert await run_keys(store, run_id) == []


INTERRUPTED = """
import sys
import anyio
from anyrdzv import MemoryStore, Rendezvous

async def main():
    async with Rendezvous(MemoryStore(), "job", node="a", min_nodes=2, max_nodes=2) as r:
        print("waiting", flush=True)
        await r.next_rendezvous()

backend = sys.argv[1]
try:
    anyio.run(
        main,
        backend="trio" if backend == "trio" else "asyncio",
        backend_options={"use_uvloop": True} if backend == "uvloop" else {},
    )
except KeyboardInterrupt:
    print("except KeyboardInterrupt ran", flush=True)
    sys.exit(130)
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["asyncio", "uvloop", "trio"])
def test_ctrl_c_leaves_as_keyboard_interrupt(backend: str) -> None:
    """Ctrl-C of a script waiting in next_rendezvous(): its ``except KeyboardInterrupt``
    runs, and it exits 130, with no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "waiting\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert out == "except KeyboardInterrupt ran\n"
    assert "Traceback" not in err


class TestArguments:
    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"run_id": "a/b"}, ValueError, "run_id"),
            ({"run_id": 3}, TypeError, "run_id"),
            ({"node": "x/y"}, ValueError, "node must .* 'x/y'"),
            ({"node": ""}, ValueError, "node"),
            ({"min_nodes": 0}, ValueError, "min_nodes must be at least 1, got 0"),
            ({"min_nodes": 2.0}, TypeError, "min_nodes must be an int"),
            ({"max_nodes": True}, TypeError, "max_nodes"),
            ({"min_nodes": 3, "max_nodes": 2}, ValueError, "min_nodes=3 and max_nodes=2"),
            ({"join_timeout": 0}, ValueError, "join_timeout must be positive"),
            ({"join_timeout": 1e9999}, ValueError, "join_timeout must be finite, got inf"),
            ({"last_call_timeout": -1}, ValueError, "last_call_timeout"),
            ({"close_timeout": float("nan")}, ValueError, "close_timeout"),
            ({"join_timeout": "5"}, TypeError, "join_timeout must be a number"),
            ({"keep_alive_interval": 0.01}, ValueError, "keep_alive_interval must be at least"),
            ({"keep_alive_max_attempt": 0}, ValueError, "keep_alive_max_attempt"),
            ({"keep_alive_max_attempt": 1.5}, TypeError, "keep_alive_max_attempt"),
            ({"payload": "text"}, TypeError, "payload must be bytes"),
            ({"store": object()}, TypeError, "store"),
        ],
    )
    def test_bad_arguments_fail_before_any_io(
        self, kwargs: dict[str, Any], error: type[Exception], match: str
    ) -> None:
        counting = CountingStore(MemoryStore())
        options: dict[str, Any] = {"store": counting, "run_id": "r", "min_nodes": 1}
        options["max_nodes"] = 4
        options.update(kwargs)
        with pytest.raises(error, match=match):
            Rendezvous(**options)
        assert counting.calls == {}

    def test_default_node_names_are_unique(self) -> None:
        store = MemoryStore()
        names = {Rendezvous(store, "r", min_nodes=1, max_nodes=1).node for _ in range(5)}
        assert len(names) == 5
        assert all("/" not in name for name in names)

    async def test_methods_need_async_with(self) -> None:
        rdzv = Rendezvous(MemoryStore(), "r", min_nodes=1, max_nodes=1)
        with pytest.raises(RuntimeError, match="async with"):
            await rdzv.next_rendezvous()


#: the random moves of each of the randomized test's three runs
STEPS = 800


@pytest.mark.slow
class TestRandomized:
    async def test_invariants_hold_over_random_joins_leaves_kills_and_closes(self) -> None:
        rng = random.Random(20261128)
        store = MemoryStore()
        min_nodes, max_nodes = 2, 4
        completed = 0

        async def node(
            name: str,
            run_id: str,
            rounds: dict[int, tuple[str, ...]],
            closed_at: list[int],
            *,
            task_status: anyio.abc.TaskStatus[None],
        ) -> None:
            nonlocal completed
            rdzv = make(
                store,
                run_id,
                name,
                min_nodes=min_nodes,
                max_nodes=max_nodes,
                last_call_timeout=0.05,
                join_timeout=30,
                # The anchor's lease outlives a loaded machine's stalls: it must not die.
                keep_alive_max_attempt=25 if name == "anchor" else 3,
            )
            previous = -1
            try:
                async with rdzv:
                    task_status.started()
                    while True:
                        try:
                            info = await rdzv.next_rendezvous()
                        except RendezvousClosed:
                            await anyio.sleep_forever()
                        assert min_nodes <= info.world_size <= max_nodes
                        assert sorted(
                            info.participants.index(p) for p in info.participants
                        ) == list(range(info.world_size))
                        assert info.participants[info.rank] == name
                        assert info.round > previous  # one round at a time, onwards
                        previous = info.round
                        assert rounds.setdefault(info.round, info.participants) == info.participants
                        assert not closed_at or info.round < closed_at[0]
                        completed += 1
                        await anyio.sleep(rng.uniform(0, 0.05))
            except HeartbeatLost:
                pass  # killed: next_rendezvous() or the heartbeat heard it first

        async def one_run(run_id: str) -> None:
            rounds: dict[int, tuple[str, ...]] = {}
            closed_at: list[int] = []
            scopes: dict[str, anyio.CancelScope] = {}
            gone: set[str] = set()  # nodes that have left or died
            async with anyio.create_task_group() as tg:

                async def start(name: str) -> None:
                    scope = scopes[name] = anyio.CancelScope()

                    async def hold(*, task_status: anyio.abc.TaskStatus[None]) -> None:
                        try:
                            with scope:
                                await node(name, run_id, rounds, closed_at, task_status=task_status)
                        finally:
                            gone.add(name)

                    await tg.start(hold)

                # The anchor never leaves nor dies, so the run's rounds count on: a run
                # whose every node is gone starts afresh, from round 0.
                await start("anchor")
                for step in range(STEPS):
                    others = [
                        n
                        for n, s in scopes.items()
                        if n != "anchor" and not s.cancel_called and n not in gone
                    ]
                    move = rng.random()
                    if move < 0.45 or not others:
                        await start(f"n{step:04d}")
                    elif move < 0.7:
                        scopes[rng.choice(others)].cancel()  # leaves
                    else:
                        victim = rng.choice(others)
                        kv = await store.get(f"{PREFIX}/{run_id}/nodes/{victim}")
                        if kv is not None and kv.lease is not None:
                            await store.revoke(Lease(kv.lease, 1))  # dies
                    # Mostly a bare checkpoint, so that moves pile up on each other; now
                    # and then long enough for a last call to run out.
                    await anyio.sleep(rng.uniform(0, 0.06) if rng.random() < 0.1 else 0)
                async with make(
                    store, run_id, "closer", min_nodes=min_nodes, max_nodes=max_nodes
                ) as closer:
                    await closer.set_closed()
                    kv = await store.get(f"{PREFIX}/{run_id}/state")
                    assert kv is not None
                    state = rules.decode_state(kv.value)
                    assert state.closed
                    closed_at.append(state.round + state.complete)
                await anyio.sleep(0.2)
                for scope in scopes.values():
                    scope.cancel()
            assert len(rounds) >= 3
            assert await run_keys(store, run_id) == []

        with anyio.fail_after(90):
            for run in range(3):
                await one_run(f"random-{run}")
        print(f"{3 * STEPS} moves, {completed} rounds held")
        assert completed > 100


#: --rdzv-conf, and the issue's bound on the time from the SIGKILL to the next round
NODE_LOSS_CONFS = {
    "fast": ("keep_alive_interval=1,keep_alive_max_attempt=2,last_call_timeout=1", 4.0),
    # torch's defaults (keep-alive 5 s, 3 attempts, last call 30 s): the TTL, 15 s, + 2 s
    "default": ("", 15.0 + 2.0),
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("conf", "backend"), [("fast", "asyncio"), ("fast", "trio"), ("default", "asyncio")]
)
def test_node_processes_on_etcd_survive_a_sigkill(
    etcd_server: Any, conf: str, backend: str, run_id: str
) -> None:
    """Three node processes; one is SIGKILLed; the two others run the next round within
    the issue's bound: 4 s with the fast conf, the TTL + 2 s with torch's defaults (D6:
    no last call once both survivors are back)."""
    rdzv_conf, bound = NODE_LOSS_CONFS[conf]
    lines: queue.Queue[tuple[int, object, float]] = queue.Queue()
    procs: list[subprocess.Popen[str]] = []
    readers: list[threading.Thread] = []

    def read(index: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put((index, json.loads(line), time.monotonic()))

    def until(check: Callable[[dict[int, object]], bool], timeout: float) -> float:
        latest: dict[int, object] = {}
        deadline = time.monotonic() + timeout
        while not check(latest):
            index, what, at = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            if isinstance(what, list):
                latest[index] = what
        return at

    try:
        for index in range(3):
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    NODE_PROCESS,
                    etcd_server.endpoint,
                    run_id,
                    f"node-{index}",
                    rdzv_conf,
                    backend,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(proc)
            readers.append(threading.Thread(target=read, args=(index, proc), daemon=True))
            readers[-1].start()
        until(lambda got: all(got.get(i) == [0, i, 3] for i in range(3)), 30)
        killed_at = time.monotonic()
        procs[2].send_signal(signal.SIGKILL)
        running_at = until(lambda got: all(got.get(i) == [1, i, 2] for i in range(2)), bound + 10)
        print(f"the survivors ran round 1 {running_at - killed_at:.2f} s after the SIGKILL")
        assert running_at - killed_at < bound
        for proc in procs[:2]:
            proc.send_signal(signal.SIGINT)  # leaves cleanly: the last one deletes the state
        for proc in procs:
            proc.wait(timeout=15)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for reader in readers:
            reader.join(5)
        for proc in procs:
            assert proc.stdout is not None
            proc.stdout.close()

    async def keys() -> list[str]:
        from anyrdzv import EtcdStore

        async with EtcdStore(etcd_server.endpoint) as store:
            return await run_keys(store, run_id)

    assert anyio.run(keys) == []
