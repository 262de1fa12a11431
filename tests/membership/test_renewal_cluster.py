"""Renewals through a hung etcd leader, on a real 3-member cluster with etcd's default
timing (heartbeat 100 ms, election timeout 1 s).

The leader is SIGSTOPped for 6 s, twice the TTL: its open connections take requests and
never answer, the followers forward keep-alives to it and wait, and only after the
followers elect a new leader (1 to 3 s) can any lease be renewed. The renewals that were
waiting then come back later than the end of the lease they prove; that must not count as
a loss.

Each hang ends with a SIGKILL and a restart of the hung member, as a supervisor's liveness
probe ends one. A SIGCONT would end it differently on the etcd that these tests run
(Debian's 3.4.23): a leader that resumes after a hang longer than the TTL still takes
itself for the lease holder, finds every lease lapsed by its own clock, and has the new
leader revoke them, renewed or not (etcd issue #15247, fixed in etcd 3.4.31 and 3.5.13).
No client can keep a lease through that; the README says what TTL it takes.
"""

from __future__ import annotations

from contextlib import AsyncExitStack, aclosing
from typing import TYPE_CHECKING

import anyio
import pytest

from anyrdzv import (
    EtcdStore,
    Heartbeat,
    MemberEvent,
    MemberEventType,
    watch_members,
)
from anyrdzv.testing import use_member

if TYPE_CHECKING:
    from tests._support.etcd_cluster import EtcdCluster

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PREFIX = "/hung-leader"
HANG = 6.0  # seconds the leader hangs: twice the TTL
# Where the stores send requests when the leader hangs, counted from the leader in the
# members' order (the order in which a keep-alive races them): the follower after it,
# whose keep-alives it forwards to the hung leader, the next one waiting the same way
# and the hung leader itself coming next in the race; the hung leader itself; the
# follower before it.
AT = (1, 0, 2)


async def follow(store: EtcdStore, group: str, left: list[MemberEvent], ready: anyio.Event) -> None:
    """Record every member that leaves ``group``."""
    async with aclosing(watch_members(store, group, prefix=PREFIX)) as items:
        async for item in items:
            if not isinstance(item, MemberEvent):
                ready.set()
            elif item.type is MemberEventType.LEFT:
                left.append(item)


def why(exc: BaseException) -> str:
    """A lost heartbeat's type, message and cause (it leaves ``Heartbeat`` as itself)."""
    return f"{type(exc).__name__}: {exc} (cause: {exc.__cause__!r})"


class Members:
    """Members that each keep a heartbeat in a task of their own, as agents do, until
    :attr:`done` is set; what any of them raised (a ``HeartbeatLost``) is recorded."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.beats: list[Heartbeat] = []
        self.lost: list[Exception] = []
        self.done = anyio.Event()
        self.entered = anyio.Event()

    async def run(self, store: EtcdStore, group: str, name: str) -> None:
        try:
            async with Heartbeat(
                store, group, name, interval=1, max_missed=3, prefix=PREFIX
            ) as beat:
                self.beats.append(beat)
                self._check_entered()
                await self.done.wait()
        except Exception as exc:  # noqa: BLE001 - a HeartbeatLost, or whatever else left
            self.lost.append(exc)
            self._check_entered()

    def _check_entered(self) -> None:
        if len(self.beats) + len(self.lost) == self.count:
            self.entered.set()


@pytest.mark.timeout(150)
async def test_a_leader_hung_three_times_costs_no_heartbeat_and_no_leave(
    etcd_cluster: EtcdCluster,
) -> None:
    """50 heartbeats through one store (one node's), and 200 through another, at
    ``interval=1, max_missed=3`` (TTL 3 s), ride out three hangs of the leader in a row,
    each with the stores at another member: no ``HeartbeatLost``, no ``LEFT``, and every
    heartbeat renews during each hang."""
    cluster = etcd_cluster
    left: list[MemberEvent] = []
    members = Members(250)
    async with AsyncExitStack() as stack:
        stores = [
            await stack.enter_async_context(EtcdStore(cluster.endpoint_list, timeout=5))
            for _ in range(2)
        ]
        groups = {"fifty": (stores[0], 50), "two-hundred": (stores[1], 200)}
        tasks = await stack.enter_async_context(anyio.create_task_group())
        for group, (store, _) in groups.items():
            ready = anyio.Event()
            tasks.start_soon(follow, store, group, left, ready)
            await ready.wait()
        for i in range(200):  # members come one by one, as agents start
            for group, (store, count) in groups.items():
                if i < count:
                    tasks.start_soon(members.run, store, group, f"m{i:03d}")
            await anyio.sleep(0.01)
        with anyio.fail_after(30):
            await members.entered.wait()
        await anyio.sleep(1)
        assert members.lost == [], f"before any hang: {why(members.lost[0])}"
        for hang, at in enumerate(AT):
            leader = await anyio.to_thread.run_sync(cluster.leader_index)
            for store in stores:
                use_member(store, cluster.endpoints[(leader + at) % cluster.size])
            await anyio.sleep(1.5)  # every lease renewed once through that member
            before = [beat.renewals for beat in members.beats]
            cluster.stop(leader)
            try:
                await anyio.sleep(HANG)
            finally:
                await anyio.to_thread.run_sync(cluster.restart, leader)
            assert members.lost == [], (
                f"hang {hang}: {len(members.lost)} lost: {why(members.lost[0])}"
            )
            assert left == [], f"hang {hang}: {left[:3]}"
            renewed = [beat.renewals > b for beat, b in zip(members.beats, before, strict=True)]
            assert all(renewed), f"hang {hang}: {renewed.count(False)} heartbeats never renewed"
            await anyio.to_thread.run_sync(lambda: cluster.wait_leader(20))
        members.done.set()
        await anyio.sleep(0.5)  # they leave
        tasks.cancel_scope.cancel()
    assert members.lost == []
