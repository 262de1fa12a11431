"""What the rendezvous tests share: fast nodes, running them together, checking that they
agree, killing one from outside, and a store that says how far its watches have been read."""

from __future__ import annotations

import inspect
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import pytest

from anyrdzv import HeartbeatLost, LeaseStore, Rendezvous, RendezvousInfo
from anyrdzv._rendezvous._ranks import natural_key
from anyrdzv._rendezvous._rules import decode_join
from anyrdzv.testing import StoreWrapper

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable

    from anyrdzv import StoreEvent

PREFIX = "/anyrdzv"
#: Short timeouts, so that the tests run fast.
FAST: dict[str, Any] = {
    "last_call_timeout": 0.3,
    "keep_alive_interval": 0.2,
    "keep_alive_max_attempt": 3,
    "join_timeout": 10,
    "close_timeout": 5,
}


#: A lease TTL of 5 s (renewals every 0.2 s), for tests that do not wait for a lease to
#: run out: a loaded machine that stalls the loop for a second loses no lease.
STEADY: dict[str, Any] = {"keep_alive_max_attempt": 25}


def make(store: LeaseStore, run_id: str, node: str, **kwargs: Any) -> Rendezvous:
    """A node with :data:`FAST` timeouts, 2 to 3 nodes a round, unless ``kwargs`` say."""
    options = {**FAST, "min_nodes": 2, "max_nodes": 3, **kwargs}
    return Rendezvous(store, run_id, node=node, **options)


async def eventually(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` (awaited, if it gives an awaitable) is true."""
    with anyio.fail_after(timeout):
        while True:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await anyio.sleep(0.01)


async def run_keys(store: LeaseStore, run_id: str) -> list[str]:
    """The keys of run ``run_id``."""
    kvs, _ = await store.get_prefix_kv(f"{PREFIX}/{run_id}/")
    return [kv.key for kv in kvs]


async def joins(store: LeaseStore, run_id: str) -> dict[str, tuple[int, int]]:
    """Each node's join key in the store: the round it asks for, and its mod_revision."""
    kvs, _ = await store.get_prefix_kv(f"{PREFIX}/{run_id}/join/")
    return {kv.key.rsplit("/", 1)[1]: (decode_join(kv.value), kv.mod_revision) for kv in kvs}


async def waiting_is(rdzv: Rendezvous, count: int) -> bool:
    """Whether ``rdzv.num_nodes_waiting()`` says ``count``."""
    return await rdzv.num_nodes_waiting() == count


async def all_next(*nodes: Rendezvous) -> dict[str, RendezvousInfo]:
    """Call next_rendezvous() on every node at once."""
    infos: dict[str, RendezvousInfo] = {}

    async def one(rdzv: Rendezvous) -> None:
        infos[rdzv.node] = await rdzv.next_rendezvous()

    async with anyio.create_task_group() as tg:
        for rdzv in nodes:
            tg.start_soon(one, rdzv)
    return infos


def check_agreement(infos: dict[str, RendezvousInfo]) -> RendezvousInfo:
    """Check that the nodes of ``infos`` hold one round, ranked in natural name order
    (the default); return it."""
    first = next(iter(infos.values()))
    for node, info in infos.items():
        assert info.round == first.round
        assert info.participants == first.participants
        assert info.payloads == first.payloads
        assert info.world_size == len(info.participants)
        assert info.participants[info.rank] == node
    assert first.participants == tuple(sorted(first.participants, key=natural_key))
    assert set(infos) == set(first.participants)
    return first


async def kill(store: LeaseStore, run_id: str, node: str) -> None:
    """Revoke a node's lease from outside, as if its process had died."""
    kv = await store.get(f"{PREFIX}/{run_id}/nodes/{node}")
    assert kv is not None
    assert kv.lease is not None
    await store.revoke(kv.lease)


async def doomed(rdzv: Rendezvous, *, task_status: anyio.abc.TaskStatus[Rendezvous]) -> None:
    """Hold ``rdzv`` until its lease is revoked from outside."""
    with pytest.raises(HeartbeatLost):
        async with rdzv:
            task_status.started(rdzv)
            await anyio.sleep_forever()


class WatchedStore(StoreWrapper):
    """A store that passes everything on, and notes how far its watches have been read:
    an event counts as read once its reader asks for the next, so that a view built
    from the watch has taken it in.

    :param store: the store to wrap
    """

    def __init__(self, store: LeaseStore) -> None:
        super().__init__(store)
        #: the revision of the newest event a watch's reader has taken in
        self.read_through = 0

    def watch_prefix(
        self,
        prefix: str,
        *,
        start_revision: int,
        on_open: Callable[[], object] | None = None,
    ) -> AsyncGenerator[StoreEvent, None]:
        """Watch a prefix, noting the events read."""
        stream = super().watch_prefix(prefix, start_revision=start_revision, on_open=on_open)
        return self._noted(stream)

    async def _noted(
        self, stream: AsyncGenerator[StoreEvent, None]
    ) -> AsyncGenerator[StoreEvent, None]:
        async with aclosing(stream) as events:
            async for event in events:
                yield event
                self.read_through = max(self.read_through, event.revision)

    async def until_seen(self, key: str) -> None:
        """Wait until ``key`` exists, and a watch's reader has taken in its last write."""

        async def seen() -> bool:
            kv = await self.inner.get(key)
            return kv is not None and self.read_through >= kv.mod_revision

        await eventually(seen)


#: A node process on etcd: ``python -c NODE_PROCESS endpoint run_id node conf backend
#: [min_nodes max_nodes]`` (2 and 3 unless given). It prints ``[round, rank,
#: world_size]`` for each round it holds, then each change that ends it, one JSON value
#: a line; SIGINT makes it leave cleanly.
NODE_PROCESS = """
import json, sys
from contextlib import aclosing
import anyio
from anyrdzv import EtcdStore, Rendezvous

async def main(endpoint, run_id, node, conf, min_nodes="2", max_nodes="3"):
    async with EtcdStore(endpoint) as store, Rendezvous.from_conf(
        store, run_id, conf, min_nodes=int(min_nodes), max_nodes=int(max_nodes), node=node
    ) as rdzv:
        while True:
            info = await rdzv.next_rendezvous()
            print(json.dumps([info.round, info.rank, info.world_size]), flush=True)
            async with aclosing(rdzv.changes()) as changes:
                async for change in changes:
                    print(json.dumps(change), flush=True)
                    break

try:
    anyio.run(main, *sys.argv[1:5], *sys.argv[6:8], backend=sys.argv[5])
except KeyboardInterrupt:
    pass  # SIGINT: the node has left cleanly
"""
