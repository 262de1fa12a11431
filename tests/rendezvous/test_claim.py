"""A node's claim of its name in a run: the put-if-absent of its heartbeat key."""

from __future__ import annotations

import anyio
import anyio.abc
import pytest

from anyrdzv import LeaseStore, MemoryStore, RendezvousError, StoreConnectionError
from anyrdzv._rendezvous._claim import CLAIM_TRIES, Claim
from anyrdzv.testing import FaultyStore
from tests._support.rendezvous import (
    PREFIX,
    all_next,
    check_agreement,
    doomed,
    eventually,
    kill,
    make,
    run_keys,
)

pytestmark = pytest.mark.anyio


class TestNodeNames:
    async def test_a_live_nodes_name_is_refused(self, store: LeaseStore, run_id: str) -> None:
        key = f"{PREFIX}/{run_id}/nodes/a"
        async with make(store, run_id, "a") as a:
            before = await store.get(key)
            assert before is not None
            with pytest.raises(RendezvousError, match=f"node 'a' of run '{run_id}' is taken"):
                async with make(store, run_id, "a"):
                    pytest.fail("a second node 'a' entered")
            # The first node's key and lease are as they were, and it still meets others.
            after = await store.get(key)
            assert after is not None
            assert (after.lease, after.create_revision) == (before.lease, before.create_revision)
            async with make(store, run_id, "b") as b:
                assert check_agreement(await all_next(a, b)).participants == ("a", "b")
        assert await run_keys(store, run_id) == []

    async def test_a_dead_nodes_name_is_free(self, store: LeaseStore, run_id: str) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(doomed, make(store, run_id, "a"))
            await kill(store, run_id, "a")
        async with make(store, run_id, "a") as a, make(store, run_id, "b") as b:
            assert check_agreement(await all_next(a, b)).participants == ("a", "b")

    async def test_two_live_nodes_of_one_name_at_once(self, store: LeaseStore, run_id: str) -> None:
        outcomes: list[str] = []
        entered = anyio.Event()

        async def enter(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            task_status.started()
            try:
                async with make(store, run_id, "a"):
                    outcomes.append("in")
                    await entered.wait()
            except RendezvousError as exc:
                outcomes.append("refused" if "is taken" in str(exc) else repr(exc))

        async with anyio.create_task_group() as tg:
            await tg.start(enter)
            await tg.start(enter)
            await eventually(lambda: len(outcomes) == 2)
            entered.set()
        assert sorted(outcomes) == ["in", "refused"]
        assert await run_keys(store, run_id) == []


class TestClaim:
    """The hook alone, on a store that fails as a test says."""

    async def test_a_claim_puts_the_key_under_the_lease(self) -> None:
        store = MemoryStore()
        lease = await store.grant(10)
        claim = Claim(store, "/p/r/nodes/a", b"v", "r", "a")
        revision = await claim(lease)
        assert claim.revision == revision
        kv = await store.get("/p/r/nodes/a")
        assert kv is not None
        assert (kv.value, kv.lease, kv.mod_revision) == (b"v", lease.id, revision)

    async def test_a_key_under_another_lease_is_taken(self) -> None:
        store = MemoryStore()
        first, second = await store.grant(10), await store.grant(10)
        await Claim(store, "/p/r/nodes/a", b"v", "r", "a")(first)
        claim = Claim(store, "/p/r/nodes/a", b"w", "r", "a")
        message = (
            f"node 'a' of run 'r' is taken: a live node holds its key '/p/r/nodes/a' "
            f"(lease {first.id}); node names must be unique per run"
        )
        with pytest.raises(RendezvousError) as info:
            await claim(second)
        assert str(info.value) == message
        assert claim.revision == 0

    async def test_a_failed_request_is_tried_again(self) -> None:
        faulty = FaultyStore(MemoryStore())
        lease = await faulty.grant(10)
        faulty.fail("txn", times=CLAIM_TRIES - 1)
        assert await Claim(faulty, "/p/r/nodes/a", b"v", "r", "a")(lease) > 0
        assert faulty.calls["txn"] == CLAIM_TRIES
        assert faulty.calls["get"] == CLAIM_TRIES - 1  # did it go through? no

    async def test_a_store_that_keeps_failing_is_raised(self) -> None:
        faulty = FaultyStore(MemoryStore())
        lease = await faulty.grant(10)
        faulty.fail("txn")
        with pytest.raises(StoreConnectionError):
            await Claim(faulty, "/p/r/nodes/a", b"v", "r", "a")(lease)
        assert faulty.calls["txn"] == CLAIM_TRIES

    async def test_a_request_that_went_through_is_not_refused(self) -> None:
        """A put whose answer was lost is found under the node's own lease."""
        store = MemoryStore()
        lease = await store.grant(10)
        revision = await store.put("/p/r/nodes/a", b"v", lease=lease)
        faulty = FaultyStore(store)
        faulty.fail("txn", times=1)
        assert await Claim(faulty, "/p/r/nodes/a", b"v", "r", "a")(lease) == revision
        # and so is one that a batch sent, though its sender was cancelled
        assert await Claim(store, "/p/r/nodes/a", b"v", "r", "a")(lease) == revision

    async def test_a_lost_answer_under_another_lease_is_taken(self) -> None:
        store = MemoryStore()
        mine, theirs = await store.grant(10), await store.grant(10)
        await store.put("/p/r/nodes/a", b"v", lease=theirs)
        faulty = FaultyStore(store)
        faulty.fail("txn", times=1)
        with pytest.raises(RendezvousError, match=f"is taken: .*lease {theirs.id}"):
            await Claim(faulty, "/p/r/nodes/a", b"v", "r", "a")(mine)
