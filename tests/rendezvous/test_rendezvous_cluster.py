"""Rendezvous on a real 3-member etcd cluster whose leader is SIGKILLed mid-rendezvous."""

from __future__ import annotations

import uuid
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import anyio
import pytest

from anyrdzv import EtcdStore, Rendezvous, RendezvousInfo

if TYPE_CHECKING:
    from tests._support.etcd_cluster import EtcdCluster

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_a_rendezvous_forms_across_a_leader_kill(etcd_cluster: EtcdCluster) -> None:
    run = f"run-{uuid.uuid4().hex[:12]}"
    infos: dict[str, RendezvousInfo] = {}
    async with AsyncExitStack() as stack:
        stores = [
            await stack.enter_async_context(EtcdStore(etcd_cluster.endpoint_list, timeout=5))
            for _ in range(3)
        ]
        nodes = [
            await stack.enter_async_context(
                Rendezvous(
                    store,
                    run,
                    node=f"node-{i}",
                    min_nodes=3,
                    max_nodes=3,
                    keep_alive_interval=1,
                    keep_alive_max_attempt=3,
                    last_call_timeout=1,
                    join_timeout=30,
                )
            )
            for i, store in enumerate(stores)
        ]

        async def join(rdzv: Rendezvous, name: str) -> None:
            infos[name] = await rdzv.next_rendezvous()

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i, rdzv in enumerate(nodes[:2]):
                    tg.start_soon(join, rdzv, f"node-{i}")
                await anyio.sleep(0.5)  # two nodes have joined, and wait for the third
                leader = await anyio.to_thread.run_sync(etcd_cluster.leader_index)
                await anyio.to_thread.run_sync(etcd_cluster.kill, leader)
                tg.start_soon(join, nodes[2], "node-2")
    assert sorted(infos) == ["node-0", "node-1", "node-2"]
    rounds = {(info.round, info.world_size, info.participants) for info in infos.values()}
    assert rounds == {(0, 3, ("node-0", "node-1", "node-2"))}
    assert sorted(info.rank for info in infos.values()) == [0, 1, 2]
    assert all(info.rank == int(name[-1]) for name, info in infos.items())
