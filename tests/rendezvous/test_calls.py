"""How a node's calls and its block end: exceptions leave ``async with`` as themselves,
one error when the lease is gone, a cancelled call withdraws its join, calls do not
overlap, Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
from contextlib import AsyncExitStack, aclosing
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import pytest

from anyrdzv import (
    EtcdStore,
    HeartbeatLost,
    Lease,
    LeaseExpired,
    LeaseStore,
    MemoryStore,
    Rendezvous,
    RendezvousError,
    RendezvousInfo,
    RendezvousTimeout,
    StoreEvent,
    StorePermissionError,
)
from anyrdzv._rendezvous import _rules as rules
from anyrdzv.testing import FaultyStore, StoreWrapper
from tests._support.heartbeat import FakeStore
from tests._support.rendezvous import (
    PREFIX,
    STEADY,
    WatchedStore,
    all_next,
    check_agreement,
    eventually,
    joins,
    kill,
    make,
    run_keys,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator

    from tests._support.etcd_server import EtcdServer

pytestmark = pytest.mark.anyio


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

    @pytest.mark.parametrize("view", ["current", "behind"])
    async def test_a_round_formed_with_its_stale_join_is_not_returned(
        self,
        node_stores: list[LeaseStore],
        run_id: str,
        caplog: pytest.LogCaptureFixture,
        view: str,
    ) -> None:
        """The withdrawal failed: the peers complete a round with a's stale join. a's
        next call does not return that round: it asks for a new one, and joins it. So it
        does with a's view of the run ``"behind"``: the round is complete in the store,
        not yet in a's view, when a calls again, and a does not join it afresh either."""
        faulty = FaultyStore(node_stores[0])
        slow = HeldWatches(faulty)
        async with AsyncExitStack() as stack:
            # b enters first and coordinates, so that the one failed txn is a's withdrawal.
            options: dict[str, Any] = {"min_nodes": 3, "max_nodes": 3, **STEADY}
            b = await stack.enter_async_context(make(node_stores[1], run_id, "b", **options))
            coordinator = f"{PREFIX}/{run_id}/state.coordinator"
            await eventually(lambda: node_stores[1].get(coordinator))
            a = await stack.enter_async_context(make(slow, run_id, "a", **options))
            c = await stack.enter_async_context(make(node_stores[2], run_id, "c", **options))
            faulty.fail("txn", times=1)  # the withdrawal's
            with anyio.move_on_after(0.3):
                await a.next_rendezvous()
            assert "node 'a' could not withdraw its join" in caplog.text
            assert set(await joins(node_stores[0], run_id)) == {"a"}
            if view == "behind":
                slow.hold()  # a's view hears of nothing more, for now
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
                if view == "behind":
                    await anyio.sleep(0.5)  # a's call decides on what its view shows
                    assert (infos, seen) == ({}, [])
                    slow.release()
                await eventually(lambda: seen == ["new_round"])  # a asked for a new one
                assert infos == {}
                tg.start_soon(call, b)
                await call(c)
                await eventually(lambda: len(infos) == 3)
                tg.cancel_scope.cancel()
            info = check_agreement(infos)
            assert (info.round, info.participants) == (1, ("a", "b", "c"))


class HeldWatches(StoreWrapper):
    """Passes every call on; while :meth:`hold` lasts, the events of its watches wait, as
    those of a slow watch do."""

    def __init__(self, store: LeaseStore) -> None:
        super().__init__(store)
        self._flowing = anyio.Event()
        self._flowing.set()

    def hold(self) -> None:
        self._flowing = anyio.Event()

    def release(self) -> None:
        self._flowing.set()

    async def intercept_watch(
        self, prefix: str, stream: AsyncIterator[StoreEvent]
    ) -> AsyncGenerator[StoreEvent, None]:
        async for event in stream:
            while not self._flowing.is_set():
                await self._flowing.wait()
            yield event


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
        backend_options={"use_uvloop": True} if backend == "uvloop" else
        {"restrict_keyboard_interrupt_to_checkpoints": True} if backend == "trio" else {},
    )
except KeyboardInterrupt:
    print("except KeyboardInterrupt ran", flush=True)
    sys.exit(130)
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["asyncio", "uvloop", "trio"])
def test_ctrl_c_leaves_as_keyboard_interrupt(backend: str) -> None:
    """Ctrl-C of a script waiting in next_rendezvous(): its ``except KeyboardInterrupt``
    runs, and it exits 130, with no traceback. On trio the script runs with
    ``restrict_keyboard_interrupt_to_checkpoints=True``, as the docs advise: trio's
    default raises KeyboardInterrupt in whatever code runs, and once in about 25 runs it
    landed as trio 0.35 resumed a task, which broke trio's own bookkeeping (an
    AssertionError in its ``reschedule``), whatever anyrdzv does."""
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
