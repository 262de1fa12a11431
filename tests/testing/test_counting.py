"""CountingStore: calls, watch events and bytes, on MemoryStore and a real etcd."""

from __future__ import annotations

from contextlib import aclosing

import pytest

from anyrdzv import Get, LeaseStore, Put
from anyrdzv.testing import CountingStore

pytestmark = pytest.mark.anyio


async def test_counts_calls_and_bytes(store: LeaseStore, key_prefix: str) -> None:
    counting = CountingStore(store)
    await counting.put(f"{key_prefix}/a", b"12345")
    assert counting.bytes_received == 0  # a put's answer is a revision
    await counting.get(f"{key_prefix}/a")
    key_bytes = len(f"{key_prefix}/a".encode())
    assert counting.bytes_received == key_bytes + 5
    await counting.get_prefix_kv(key_prefix)
    await counting.get_prefix(key_prefix)
    assert counting.bytes_received == 3 * (key_bytes + 5)
    await counting.txn([], [Put(f"{key_prefix}/b", b"1"), Get(f"{key_prefix}/a")])
    assert counting.bytes_received == 4 * (key_bytes + 5)
    lease = await counting.grant(5)
    await counting.keep_alive(lease)
    assert counting.calls == {
        "put": 1,
        "get": 1,
        "get_prefix_kv": 1,
        "get_prefix": 1,
        "txn": 1,
        "grant": 1,
        "keep_alive": 1,
    }
    assert counting.requests() == 6
    assert counting.requests(keep_alives=True) == 7


async def test_counts_watch_events(store: LeaseStore, key_prefix: str) -> None:
    counting = CountingStore(store)
    _, revision = await counting.get_prefix(key_prefix)
    async with aclosing(counting.watch_prefix(key_prefix, start_revision=revision + 1)) as events:
        await store.put(f"{key_prefix}/a", b"xy")
        await store.put(f"{key_prefix}/b", b"z")
        keys = [(await events.__anext__()).key for _ in range(2)]
    assert keys == [f"{key_prefix}/a", f"{key_prefix}/b"]
    assert counting.events == 2
    assert counting.calls["watch_prefix"] == 1
    assert counting.bytes_received == 2 * len(f"{key_prefix}/a".encode()) + 3
