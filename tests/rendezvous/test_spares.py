"""Hot spares: nodes beyond ``max_nodes`` wait; when a participant is lost, a waiting
spare joins the next round, and with ``rank_order="stable"`` takes the lost rank; the
round completes once the survivors and the spare are in, with no last call (D6)."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from contextlib import AsyncExitStack, aclosing
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from anyrdzv import EtcdStore, LeaseStore, MemoryStore, Rendezvous, RendezvousInfo
from anyrdzv.testing import StoreWrapper
from tests._support.rendezvous import NODE_PROCESS, all_next, doomed, eventually, joins, kill, make

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests._support.etcd_server import EtcdServer

pytestmark = pytest.mark.anyio


async def node_store(
    stack: AsyncExitStack, kind: str, request: pytest.FixtureRequest
) -> LeaseStore:
    """A store object of this node's own, as a node on its own host has."""
    if kind == "memory":
        shared: MemoryStore = request.getfixturevalue("shared_memory")
        return StoreWrapper(shared)
    server: EtcdServer = request.getfixturevalue("etcd_server")
    return await stack.enter_async_context(EtcdStore(server.endpoint))


@pytest.fixture
def shared_memory() -> MemoryStore:
    return MemoryStore()


async def lost(rdzv: Rendezvous) -> None:
    """Wait until ``rdzv`` hears that a participant of its round is lost."""
    async with aclosing(rdzv.changes()) as changes:
        async for change in changes:
            if change == "lost":
                return


@pytest.mark.parametrize("kind", ["memory", "etcd"])
async def test_a_spare_takes_the_lost_rank_at_once(
    kind: str, request: pytest.FixtureRequest, run_id: str
) -> None:
    """Three participants and two spares, each on its own store object; one participant
    dies; the earliest spare takes its rank (stable), the survivors keep theirs, and
    the round completes without the 30 s last call; the other spare still waits."""
    options: dict[str, Any] = {
        "min_nodes": 2,
        "max_nodes": 3,
        "rank_order": "stable",
        "last_call_timeout": 30,
        "join_timeout": 60,
    }
    spare_infos: dict[str, RendezvousInfo] = {}

    async def spare(rdzv: Rendezvous) -> None:
        spare_infos[rdzv.node] = await rdzv.next_rendezvous()

    async with anyio.create_task_group() as tg, AsyncExitStack() as stack:
        stores = [await node_store(stack, kind, request) for _ in range(5)]
        node2 = await tg.start(doomed, make(stores[1], run_id, "node2", **options))
        node1 = await stack.enter_async_context(make(stores[0], run_id, "node1", **options))
        node10 = await stack.enter_async_context(make(stores[2], run_id, "node10", **options))
        first = await all_next(node1, node2, node10)
        assert first["node1"].participants == ("node1", "node2", "node10")
        spares = [
            await stack.enter_async_context(make(stores[3 + i], run_id, f"spare{i}", **options))
            for i in range(2)
        ]
        for count, rdzv in enumerate(spares, 1):
            tg.start_soon(spare, rdzv)
            await _until_joined(stores[0], run_id, count)  # spare0 joins first, then spare1
        # The round is full: the spares wait, and make no participant leave it.
        assert await node1.num_nodes_waiting() == 0
        await anyio.sleep(0.5)
        assert not spare_infos
        with anyio.fail_after(15):  # far below the 30 s last call
            await kill(stores[0], run_id, "node2")
            async with anyio.create_task_group() as survivors:
                survivors.start_soon(lost, node1)
                survivors.start_soon(lost, node10)
            infos = await all_next(node1, node10)
            await eventually(lambda: "spare0" in spare_infos, timeout=10)
        second = infos["node1"]
        assert second.round == 1
        assert second.participants == ("node1", "spare0", "node10")  # spare0 has node2's rank
        assert infos["node10"].participants == second.participants
        assert spare_infos["spare0"].participants == second.participants
        assert (infos["node1"].rank, spare_infos["spare0"].rank, infos["node10"].rank) == (0, 1, 2)
        assert "spare1" not in spare_infos  # still a spare
        tg.cancel_scope.cancel()  # spare1's call ends, withdrawn, before the nodes leave


async def _until_joined(store: LeaseStore, run_id: str, count: int) -> None:
    """Wait until ``count`` spares have put their join keys for round 1."""

    async def joined() -> bool:
        wanted = [round for round, _ in (await joins(store, run_id)).values()]
        return wanted.count(1) >= count

    await eventually(joined, timeout=10)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_eight_nodes_and_two_spares_on_etcd_are_eight_again_within_the_ttl(
    etcd_server: Any, run_id: str
) -> None:
    """Eight node processes and two spares on etcd, with torch's default conf (keep-alive
    5 s, 3 attempts: TTL 15 s; last call 30 s) and ``rank_order=stable``; one
    participant is SIGKILLed; a full world of 8 runs again within TTL + 2 s, the spare
    with the lost node's rank."""
    bound = 15.0 + 2.0
    lines: queue.Queue[tuple[str, object, float]] = queue.Queue()
    procs: dict[str, subprocess.Popen[str]] = {}
    readers: list[threading.Thread] = []
    latest: dict[str, object] = {}

    def read(name: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put((name, json.loads(line), time.monotonic()))

    def start(name: str) -> None:
        argv = [sys.executable, "-c", NODE_PROCESS, etcd_server.endpoint, run_id, name]
        argv += ["rank_order=stable", "asyncio", "8", "8"]
        procs[name] = proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        readers.append(threading.Thread(target=read, args=(name, proc), daemon=True))
        readers[-1].start()

    def until(check: Callable[[], bool], timeout: float) -> float:
        at = time.monotonic()
        deadline = at + timeout
        while not check():
            name, what, at = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            if isinstance(what, list):
                latest[name] = what
        return at

    names = [f"node{i}" for i in range(8)]
    try:
        for name in names:
            start(name)
        until(lambda: all(latest.get(n) == [0, i, 8] for i, n in enumerate(names)), 60)
        for name in ("spare0", "spare1"):
            start(name)
        time.sleep(2)  # the spares are in, and wait
        assert "spare0" not in latest
        assert "spare1" not in latest
        killed_at = time.monotonic()
        procs["node5"].send_signal(signal.SIGKILL)
        world = [*names[:5], "spare?", *names[6:]]

        def full() -> bool:
            ranks = {n: what for n, what in latest.items() if isinstance(what, list)}
            in_round = {n: r for n, r in ranks.items() if r[0] == 1}
            return len(in_round) == 8

        running_at = until(full, bound + 15)
        elapsed = running_at - killed_at
        print(f"8 nodes again {elapsed:.2f} s after the SIGKILL (TTL 15 s)")
        in_round = {n: r for n, r in latest.items() if isinstance(r, list) and r[0] == 1}
        spare = next(n for n in in_round if n.startswith("spare"))
        world[5] = spare
        assert in_round == {n: [1, i, 8] for i, n in enumerate(world)}
        assert elapsed < bound
        for name, proc in procs.items():
            if name != "node5":
                proc.send_signal(signal.SIGINT)
        for proc in procs.values():
            proc.wait(timeout=30)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for reader in readers:
            reader.join(5)
        for proc in procs.values():
            assert proc.stdout is not None
            proc.stdout.close()
