"""MemoryStore alone: its history and compaction, its argument checks, and random
operations answered as a real etcd answers them. The contract both stores keep is in
test_protocol.py."""

from __future__ import annotations

import dataclasses
import random
from contextlib import aclosing
from typing import cast

import anyio
import pytest

from anyrdzv import (
    CasResult,
    EtcdStore,
    KeyValue,
    Lease,
    LeaseExpired,
    LeaseStore,
    MemoryStore,
    StoreCompacted,
)
from tests._support.stores import collect

pytestmark = pytest.mark.anyio


def test_history_limit_is_checked() -> None:
    with pytest.raises(ValueError, match="history_limit must be at least 1"):
        MemoryStore(history_limit=0)


async def test_memory_watch_survives_compaction_behind_it() -> None:
    store = MemoryStore(history_limit=3)
    rev = await store.put("/c/k", b"0")
    seen: list[bytes] = []
    async with aclosing(store.watch_prefix("/c/", start_revision=rev)) as stream:
        async for event in stream:
            seen.append(event.value)
            if len(seen) == 6:
                break
            await store.put("/c/k", str(len(seen)).encode())  # drops old history as it goes
    assert seen == [b"0", b"1", b"2", b"3", b"4", b"5"]


async def test_a_watch_from_a_compacted_revision_is_refused() -> None:
    store = MemoryStore(history_limit=2)
    for value in (b"1", b"2", b"3", b"4"):
        await store.put("/c/k", value)
    with pytest.raises(StoreCompacted) as info:
        await collect(store, "/c/", 1, 1)
    assert info.value.compact_revision >= 3


class TestAsyncWith:
    """A MemoryStore holds nothing to release: entering gives the store itself, any
    number of times, and leaving keeps it whole and usable."""

    async def test_entering_gives_the_store_and_leaving_keeps_it(self) -> None:
        store = MemoryStore()
        async with store as opened:
            assert opened is store
            lease = await store.grant(60)
            await store.put("/k", b"v", lease=lease)
        # Left: the key, its lease and the history are all there, and it still works.
        kv = await store.get("/k")
        assert kv is not None
        assert kv.lease == lease.id
        assert await store.keep_alive(lease) == 60
        assert [e.value for e in await collect(store, "/", 1, 1)] == [b"v"]

    async def test_it_may_be_entered_nested_and_at_once(self) -> None:
        store = MemoryStore()  # one store shared by several agents of a process
        entered = 0

        async def agent(name: str) -> None:
            nonlocal entered
            async with store:
                entered += 1
                await store.put(f"/agents/{name}", b"")

        async with store:
            async with anyio.create_task_group() as tg:
                for name in "abc":
                    tg.start_soon(agent, name)
            assert entered == 3
            assert sorted((await store.get_prefix("/agents/"))[0]) == [
                "/agents/a",
                "/agents/b",
                "/agents/c",
            ]

    async def test_a_watch_open_across_a_close_goes_on(self) -> None:
        store = MemoryStore()
        async with aclosing(store.watch_prefix("/", start_revision=1)) as stream:
            async with store:
                await store.put("/a", b"1")
            await store.aclose()
            await store.put("/b", b"2")
            assert [(await anext(stream)).key, (await anext(stream)).key] == ["/a", "/b"]

    async def test_entering_and_closing_are_checkpoints(self) -> None:
        store = MemoryStore()
        with anyio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(anyio.get_cancelled_exc_class()):
                await store.__aenter__()
        with anyio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(anyio.get_cancelled_exc_class()):
                await store.aclose()


async def _one_op(
    store: LeaseStore, rng: random.Random, leases: list[Lease], keys: list[str]
) -> object:
    """One random operation, drawn from ``rng``; its answer, or the error's type."""
    kind = rng.choice(["put", "put", "cas", "cas", "get", "range", "delete", "prefix", "lease"])
    key = rng.choice(keys)
    lease = rng.choice([None, None, *leases[-3:]])
    value = rng.randbytes(rng.randrange(4))
    try:
        if kind == "put":
            return await store.put(key, value, lease=lease)
        if kind == "cas":
            current = await store.get(key)
            token = 0 if current is None else current.mod_revision
            token = rng.choice([token, token, 0, max(token - 1, 0), token + 1])
            return await store.compare_and_swap(
                key, value, expected_mod_revision=token, lease=lease
            )
        if kind == "get":
            return await store.get(key)
        if kind == "range":
            return await store.get_prefix_kv(key[: rng.randrange(len(key) + 1)])
        if kind == "delete":
            return await store.delete(key)
        if kind == "prefix":
            return await store.delete_prefix(key[: rng.randrange(3, len(key) + 1)])
        if leases and rng.random() < 0.5:
            await store.revoke(rng.choice(leases))
            return "revoked"
        leases.append(await store.grant(60))
        return "granted"
    except LeaseExpired:
        return LeaseExpired


def _with_lease_ids(answer: object, ids: dict[int, int]) -> object:
    """``answer`` with etcd's lease ids replaced by MemoryStore's."""
    if isinstance(answer, KeyValue) and answer.lease is not None:
        return dataclasses.replace(answer, lease=ids[answer.lease])
    if isinstance(answer, CasResult):
        return CasResult(answer.succeeded, cast("KeyValue | None", _with_lease_ids(answer.kv, ids)))
    if isinstance(answer, tuple):
        kvs, revision = answer
        return [_with_lease_ids(kv, ids) for kv in kvs], revision
    return answer


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
async def test_memory_store_answers_as_etcd_does(own_etcd_server: object, seed: int) -> None:
    """The same random operations on MemoryStore and on a fresh etcd get the same answers,
    revisions, versions and lease ids (mapped) included."""
    from tests._support.etcd_server import EtcdServer

    assert isinstance(own_etcd_server, EtcdServer)
    keys = ["/d/a", "/d/b", "/d/a/x", "/d/c", "/e/a"]
    memory = MemoryStore()
    memory_leases: list[Lease] = []
    etcd_leases: list[Lease] = []
    ids: dict[int, int] = {}
    async with EtcdStore(own_etcd_server.endpoint) as etcd:
        for step in range(150):
            expected = await _one_op(memory, random.Random(f"{seed}/{step}"), memory_leases, keys)
            got = await _one_op(etcd, random.Random(f"{seed}/{step}"), etcd_leases, keys)
            if len(etcd_leases) > len(ids):
                ids[etcd_leases[-1].id] = memory_leases[-1].id
            assert _with_lease_ids(got, ids) == expected, f"step {step}"
        for lease in etcd_leases:
            await etcd.revoke(lease)
