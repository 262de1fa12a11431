"""RunView: one watch and one decoded view of a run, shared by the nodes of one thread
on one store; it resumes a broken watch, and reads the run afresh after a compaction."""

from __future__ import annotations

import logging
from collections import Counter
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import anyio
import pytest

from anyrdzv import Compare, Lease, LeaseStore, MemoryStore, Put, StoreError, TxnResult
from anyrdzv._rendezvous import _run_view
from anyrdzv.testing import CountingStore, FaultyStore, StoreWrapper
from tests._support.rendezvous import (
    PREFIX,
    all_next,
    check_agreement,
    doomed,
    eventually,
    kill,
    make,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anyrdzv._stores._txn import TxnOp

pytestmark = pytest.mark.anyio


class WriteLog(StoreWrapper):
    """Counts the puts of each key, alone or in a txn that succeeded."""

    def __init__(self, store: LeaseStore) -> None:
        super().__init__(store)
        self.puts: Counter[str] = Counter()

    async def put(self, key: str, value: bytes, *, lease: Lease | int | None = None) -> int:
        self.puts[key] += 1
        return await super().put(key, value, lease=lease)

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        result = await super().txn(compare, success, failure)
        for op in success if result.succeeded else failure:
            if isinstance(op, Put):
                self.puts[op.key] += 1
        return result


LOGGER = "anyrdzv._rendezvous._run_view"


class TestSharedWatch:
    async def test_the_nodes_of_a_process_share_one_watch_and_one_swap(self, run_id: str) -> None:
        writes = WriteLog(MemoryStore())
        counting = CountingStore(writes)
        async with AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(
                    make(counting, run_id, f"n{i}", min_nodes=8, max_nodes=8)
                )
                for i in range(8)
            ]
            check_agreement(await all_next(*nodes))
            # One watch of the control keys for the eight, and the coordinator's own.
            assert counting.calls["watch_prefix"] == 2
            assert counting.calls["get_prefix_kv"] == 1
            # One node claims the coordinator's office; it creates the state and completes
            # the round: nobody else writes them.
            state = f"{PREFIX}/{run_id}/state"
            assert writes.puts[state + ".coordinator"] == 1
            assert writes.puts[state] == 2
            assert counting.calls["compare_and_swap"] == 0

    async def test_the_watch_moves_when_its_host_leaves(
        self, store: LeaseStore, run_id: str
    ) -> None:
        async with make(store, run_id, "b") as b, make(store, run_id, "c") as c:
            async with make(store, run_id, "a", min_nodes=2) as a:
                check_agreement(await all_next(a, b, c))
            # b and c go on, on the watch now hosted by one of them.
            infos = await all_next(b, c)
            assert check_agreement(infos).participants == ("b", "c")
            async with make(store, run_id, "d") as d:
                infos = await all_next(b, c, d)
            assert check_agreement(infos).participants == ("b", "c", "d")

    async def test_the_watch_moves_when_its_host_is_killed(
        self, store: LeaseStore, run_id: str
    ) -> None:
        async with anyio.create_task_group() as tg:
            a = await tg.start(doomed, make(store, run_id, "a"))  # the first: it hosts
            async with make(store, run_id, "b") as b, make(store, run_id, "c") as c:
                check_agreement(await all_next(a, b, c))
                await kill(store, run_id, "a")
                infos = await all_next(b, c)
        assert check_agreement(infos).participants == ("b", "c")

    async def test_stores_do_not_share(self, run_id: str) -> None:
        one, two = CountingStore(MemoryStore()), CountingStore(MemoryStore())
        async with (
            make(one, run_id, "a", min_nodes=1, max_nodes=1) as a,
            make(two, run_id, "a", min_nodes=1, max_nodes=1) as other,
        ):
            # Each store object is read and watched for its own nodes.
            assert one.calls["get_prefix_kv"] == two.calls["get_prefix_kv"] == 1
            assert (await a.next_rendezvous()).participants == ("a",)
            assert (await other.next_rendezvous()).participants == ("a",)
            assert one.calls["watch_prefix"] == two.calls["watch_prefix"] == 2


class TestView:
    """The shared view itself, as the nodes of a run hold it."""

    async def test_an_adapters_keys_are_skipped_silently(
        self, store: LeaseStore, run_id: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        async with make(store, run_id, "a") as a, make(store, run_id, "b") as b:
            check_agreement(await all_next(a, b))
            run = _run_view.acquire(store, run_id, f"{PREFIX}/{run_id}/")  # a's and b's
            try:
                version = run.version
                with caplog.at_level(logging.DEBUG, logger="anyrdzv"):
                    for key in ("x", "a/b/c", "nodes/a", "state"):
                        await store.put(a.data_prefix + key, b"\x80 not json")
                    # The next round's writes come after them: the watches have passed them.
                    assert check_agreement(await all_next(a, b)).round == 1
                assert not run.errors
                assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
                assert run.version > version
            finally:
                assert not run.release()

    async def test_a_view_is_let_go_with_its_last_node(self, run_id: str) -> None:
        store = MemoryStore()
        async with make(store, run_id, "a"):
            run = _run_view.acquire(store, run_id, f"{PREFIX}/{run_id}/")
            assert run.held == 2  # a's and this test's
            assert not run.release()
            async with make(store, run_id, "b"):
                assert run.held == 2
        assert run.held == 0
        fresh = _run_view.acquire(store, run_id, f"{PREFIX}/{run_id}/")
        assert fresh is not run
        assert fresh.release()


class TestFollow:
    """The watch is :func:`anyrdzv._stores._follow.follow`: a broken one resumes with
    nothing lost, and a compacted history is read afresh."""

    async def test_a_broken_watch_resumes(
        self, store: LeaseStore, run_id: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger=LOGGER)
        faulty = FaultyStore(store)
        async with make(faulty, run_id, "a") as a, make(faulty, run_id, "b") as b:
            check_agreement(await all_next(a, b))
            faulty.break_watches()
            async with make(faulty, run_id, "c") as c:
                infos = await all_next(a, b, c)
        assert check_agreement(infos).participants == ("a", "b", "c")
        messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
        assert any(f"watch on run '{run_id}' failed" in m and "was cut" in m for m in messages)
        assert faulty.calls["watch_prefix"] >= 2
        assert faulty.calls["get_prefix_kv"] == 1  # the first read: a broken watch resumes

    async def test_a_compacted_history_is_read_afresh(
        self, run_id: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger=LOGGER)
        memory = MemoryStore(history_limit=2)
        faulty = FaultyStore(memory)
        async with make(faulty, run_id, "a") as a, make(faulty, run_id, "b") as b:
            check_agreement(await all_next(a, b))
            faulty.fail("watch_prefix")  # no watch runs while the history moves on
            faulty.break_watches()
            async with make(memory, run_id, "c") as c:  # another store object: its own view
                for i in range(3):  # past the history the store keeps
                    await memory.put(f"/elsewhere/{i}", b"")
                faulty.heal()
                infos = await all_next(a, b, c)
        assert check_agreement(infos).participants == ("a", "b", "c")
        messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
        assert any("has been compacted" in m and "reading afresh" in m for m in messages)
        assert faulty.calls["get_prefix_kv"] == 1 + 1  # the first read, and afresh

    async def test_a_failed_read_afresh_is_tried_again(
        self, run_id: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger=LOGGER)
        memory = MemoryStore(history_limit=2)
        faulty = FaultyStore(memory)
        async with make(faulty, run_id, "a", min_nodes=1, max_nodes=2) as a:
            faulty.fail("watch_prefix")
            faulty.break_watches()
            async with make(memory, run_id, "c", min_nodes=1, max_nodes=2) as c:
                await c.set_closed()  # while a's watch is down, and its history compacted
            faulty.heal()
            faulty.fail("get_prefix_kv", error=StoreError("etcd answered 500"), times=1)
            await eventually(a.is_closed)
        messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
        assert any("reading the run failed: etcd answered 500" in m for m in messages)
        assert faulty.calls["get_prefix_kv"] == 1 + 2  # the first read, and afresh twice
