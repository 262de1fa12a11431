"""The torchrun backend's Session: the node's rendezvous held open for a sync handler.

No torch here: the Session is plain anyrdzv, on MemoryStore and etcd, on every backend.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from anyrdzv import EtcdStore, HeartbeatLost, Lease, MemoryStore, Rendezvous, StoreConnectionError
from anyrdzv.torchrun._session import Session, SessionClosed, SessionLost

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from anyrdzv import LeaseStore

pytestmark = pytest.mark.anyio


def session_on(store: LeaseStore, run_id: str, node: str, **conf: float) -> Session:
    @asynccontextmanager
    async def borrowed() -> AsyncIterator[LeaseStore]:
        yield store

    async def probe(store: LeaseStore) -> None:
        await store.get("/anyrdzv")

    settings: dict[str, float] = {"last_call_timeout": 0.2, "keep_alive_interval": 0.2}
    settings.update(conf)

    def make(store: LeaseStore) -> Rendezvous:
        return Rendezvous(
            store,
            run_id,
            node=node,
            min_nodes=1,
            max_nodes=3,
            keep_alive_max_attempt=2,
            **settings,  # type: ignore[arg-type]
        )

    return Session(borrowed, make, probe)


async def revoke_node(store: LeaseStore, run_id: str, node: str) -> None:
    """Kill ``node``: revoke the lease its member key lives under."""
    member = await store.get(f"/anyrdzv/{run_id}/nodes/{node}")
    assert member is not None
    assert member.lease is not None
    await store.revoke(Lease(member.lease, 1))


async def eventually(predicate: Callable[[], object], timeout: float = 5) -> None:
    """Wait until ``predicate()`` holds: the session's count is a plain int for other
    threads to read, so there is no event to wait on."""
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - see above
            await anyio.sleep(0.01)


async def started(task_group: anyio.abc.TaskGroup, session: Session) -> Session:
    result: Session = await task_group.start(session.run)
    return result


async def test_rounds_counts_and_close(store: LeaseStore, key_prefix: str) -> None:
    run_id = key_prefix.strip("/")
    async with anyio.create_task_group() as tg:
        a = await started(tg, session_on(store, run_id, "a"))
        info = await a.next_rendezvous()
        assert (info.round, info.rank, info.world_size) == (0, 0, 1)
        assert a.nodes_waiting == 0
        b = await started(tg, session_on(store, run_id, "b"))
        async with anyio.create_task_group() as waiting:
            waiting.start_soon(b.next_rendezvous)
            await eventually(lambda: a.nodes_waiting)  # the follower task sets it
            assert a.nodes_waiting == 1
            second = await a.next_rendezvous()
        assert second.world_size == 2
        assert second.participants == ("a", "b")
        assert a.nodes_waiting == 0
        assert not await a.is_closed()
        await a.close(close_run=True)
        assert await b.is_closed()
        with pytest.raises(SessionClosed):
            a.check()
        await b.close(close_run=True)
    kvs, _ = await store.get_prefix_kv(f"/anyrdzv/{run_id}/")
    assert kvs == []


async def test_a_lost_participant_asks_for_a_restart(store: LeaseStore, key_prefix: str) -> None:
    run_id = key_prefix.strip("/")
    async with anyio.create_task_group() as tg:
        a = await started(tg, session_on(store, run_id, "a"))
        b = await started(tg, session_on(store, run_id, "b"))
        async with anyio.create_task_group() as both:
            both.start_soon(a.next_rendezvous)
            both.start_soon(b.next_rendezvous)
        await revoke_node(store, run_id, "b")  # the node is "killed": its lease revoked
        await eventually(lambda: a.nodes_waiting)

        def b_lost() -> bool:
            try:
                b.check()
            except SessionLost:
                return True
            return False

        await eventually(b_lost)
        with pytest.raises(SessionLost, match="lease|heartbeat"):
            b.check()
        with pytest.raises(SessionLost):
            await b.is_closed()
        # b's store stays open for torch's Store until the close.
        assert await b.store.get("/anyrdzv/none") is None
        await b.close(close_run=True)
        info = await a.next_rendezvous()
        assert info.participants == ("a",)
        await a.close(close_run=True)


async def test_a_pending_call_ends_when_the_heartbeat_is_lost(key_prefix: str) -> None:
    store = MemoryStore()
    run_id = key_prefix.strip("/")
    async with anyio.create_task_group() as tg:
        # max 3, min 1, a long last call: a's round stays open, and its call pending.
        a = await started(tg, session_on(store, run_id, "a", last_call_timeout=30))
        result: list[BaseException] = []

        async def call() -> None:
            try:
                await a.next_rendezvous()
            except SessionLost as exc:
                result.append(exc)

        tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        await revoke_node(store, run_id, "a")
        await eventually(lambda: result)
        await a.close(close_run=True)


async def test_an_unreachable_store_fails_the_start(anyio_backend: object) -> None:
    from anyrdzv import EtcdStore
    from tests._support.etcd_server import free_port

    store = EtcdStore(f"127.0.0.1:{free_port()}", timeout=0.5)
    session = Session(
        lambda: store,
        lambda s: Rendezvous(s, "r", min_nodes=1, max_nodes=1),
        lambda s: s.get("/anyrdzv"),
    )
    with anyio.fail_after(10), pytest.RaisesGroup(StoreConnectionError):
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)


@pytest.mark.slow
async def test_every_call_after_etcd_dies_is_session_lost(
    own_etcd_server: Any, key_prefix: str
) -> None:
    """etcd is SIGKILLed: the heartbeat is lost and the rendezvous ends, which takes a
    while against a dead store (its lease revoke waits out the store's timeout). Every
    call, from the kill on, either answers or raises SessionLost; none sees the
    rendezvous half-gone."""
    run_id = key_prefix.strip("/")
    async with (
        EtcdStore(own_etcd_server.endpoint, timeout=2) as store,
        anyio.create_task_group() as tg,
    ):
        a = await started(tg, session_on(store, run_id, "a"))
        await a.next_rendezvous()
        own_etcd_server.kill()
        outcomes: list[str] = []
        with anyio.fail_after(20):
            while True:
                try:
                    await a.is_closed()
                except SessionLost as exc:
                    outcomes.append("lost")
                    if isinstance(exc.__cause__, HeartbeatLost):
                        break  # the rendezvous has left, and the cause is known
                await anyio.sleep(0.02)
        assert set(outcomes) == {"lost"}
        assert len(outcomes) > 1  # calls came while it was leaving, too
        await a.close(close_run=False)
