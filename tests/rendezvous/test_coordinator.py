"""The coordinator: one node follows every node's keys and decides, the others follow
the run's control keys alone, so that what a node receives in a round does not grow
with the run; when the coordinator dies, another node takes over."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import anyio
import pytest

from anyrdzv import EtcdStore, Lease, LeaseStore, MemoryStore
from anyrdzv._rendezvous import _rules as rules
from anyrdzv._rendezvous._coordinator import run_lease_ttl
from anyrdzv.testing import CountingStore
from tests._support.rendezvous import (
    NODE_PROCESS,
    PREFIX,
    all_next,
    check_agreement,
    doomed,
    make,
    run_keys,
)

if TYPE_CHECKING:
    from tests._support.etcd_server import EtcdServer

pytestmark = pytest.mark.anyio


async def coordinator_of(store: LeaseStore, run_id: str) -> str | None:
    kv = await store.get(f"{PREFIX}/{run_id}/state.coordinator")
    return None if kv is None else rules.decode_coordinator(kv.value)


async def round_traffic(n: int, run_id: str) -> tuple[dict[str, CountingStore], str, int]:
    """``n`` nodes, each on its own store object (as ``n`` hosts would be), meet in one
    round of ``n``; return each node's counting store, the coordinator's name, and the
    bytes of the round's participant list."""
    memory = MemoryStore()
    stores = {f"n{i:04d}": CountingStore(memory) for i in range(n)}
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                make(store, run_id, name, min_nodes=n, max_nodes=n, join_timeout=60)
            )
            for name, store in stores.items()
        ]
        check_agreement(await all_next(*nodes))
        coordinator = await coordinator_of(memory, run_id)
        assert coordinator in stores
        record = await memory.get(f"{PREFIX}/{run_id}/state.round")
        assert record is not None
        return stores, coordinator, len(record.value)


class TestTraffic:
    async def test_what_a_node_receives_does_not_grow_with_the_run(self, run_id: str) -> None:
        small, small_coordinator, _ = await round_traffic(16, f"{run_id}-16")
        large, large_coordinator, record_bytes = await round_traffic(256, f"{run_id}-256")

        def worst(stores: dict[str, CountingStore], coordinator: str) -> tuple[int, int, int]:
            others = [store for name, store in stores.items() if name != coordinator]
            return (
                max(store.events for store in others),
                max(store.requests() for store in others),
                max(store.bytes_received for store in others),
            )

        events, requests, received = worst(large, large_coordinator)
        # Watch events and requests: the same for a node of 256 as for a node of 16.
        assert (events, requests) <= worst(small, small_coordinator)[:2]
        assert events <= 8
        # Bytes: the run's control keys, and the participant list once, compacted.
        assert received <= 2_000 + record_bytes
        assert record_bytes < 256 * 6  # the names are compressed: n0000 ... n0255
        # The coordinator alone receives the others' keys: O(n) for the run in all.
        coordinator = large[large_coordinator]
        assert 256 <= coordinator.events <= 6 * 256  # puts and deletes of nodes and joins
        total = sum(store.events for store in large.values())
        assert total <= 256 * 8 + 6 * 256


class TestFailover:
    async def test_another_node_takes_over_from_a_dead_coordinator(
        self, store: LeaseStore, run_id: str
    ) -> None:
        async with anyio.create_task_group() as tg:
            a = await tg.start(doomed, make(store, run_id, "a"))  # the first: it coordinates
            with anyio.fail_after(5):
                while await coordinator_of(store, run_id) != "a":  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            async with make(store, run_id, "b") as b, make(store, run_id, "c") as c:
                check_agreement(await all_next(a, b, c))
                member = await store.get(f"{PREFIX}/{run_id}/nodes/a")
                assert member is not None
                assert member.lease is not None
                await store.revoke(Lease(member.lease, 1))  # a dies, and its office with it
                infos = await all_next(b, c)
                assert check_agreement(infos).participants == ("b", "c")
                assert await coordinator_of(store, run_id) in ("b", "c")

    async def test_a_coordinator_whose_key_is_gone_steps_down(
        self, store: LeaseStore, run_id: str
    ) -> None:
        async with make(store, run_id, "a") as a, make(store, run_id, "b") as b:
            check_agreement(await all_next(a, b))
            first = await coordinator_of(store, run_id)
            await store.delete(f"{PREFIX}/{run_id}/state.coordinator")
            with anyio.fail_after(5):
                while await coordinator_of(store, run_id) is None:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            # Whoever holds the office now, the next round completes, once.
            infos = await all_next(a, b)
            assert check_agreement(infos).round == 1
            assert first in ("a", "b")


class TestRunLease:
    def test_it_outlives_a_coordinators_death_and_an_election(self) -> None:
        assert run_lease_ttl(15) == 35
        assert run_lease_ttl(1) > 2 * 1

    @pytest.mark.slow
    def test_a_run_whose_nodes_all_died_leaves_no_key(
        self, etcd_server: EtcdServer, run_id: str
    ) -> None:
        # Node processes SIGKILLed mid-run, with an adapter's key: no node is left to
        # delete the run's keys; they go with the run lease once the nodes' leases have.
        conf = "keep_alive_interval=0.5,keep_alive_max_attempt=2"  # TTL 1 s
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    NODE_PROCESS,
                    etcd_server.endpoint,
                    run_id,
                    name,
                    conf,
                    "asyncio",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for name in ("a", "b")
        ]
        try:
            for proc in procs:
                assert proc.stdout is not None
                assert json.loads(proc.stdout.readline())[0] == 0  # round 0 is held

            async def adapter_key() -> None:
                async with EtcdStore(etcd_server.endpoint) as store:
                    kv = await store.get(f"{PREFIX}/{run_id}/state")
                    assert kv is not None
                    run_lease = rules.decode_state(kv.value).lease
                    assert run_lease is not None
                    assert kv.lease == run_lease
                    await store.put(f"{PREFIX}/{run_id}/store/k", b"v", lease=run_lease)

            anyio.run(adapter_key)
            for proc in procs:
                proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
                assert proc.stdout is not None
                proc.stdout.close()

        async def keys() -> list[str]:
            async with EtcdStore(etcd_server.endpoint) as store:
                return await run_keys(store, run_id)

        while anyio.run(keys):
            assert time.monotonic() - killed_at < 1 + run_lease_ttl(1) + 3, anyio.run(keys)
            time.sleep(0.25)
