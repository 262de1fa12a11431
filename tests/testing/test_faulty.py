"""FaultyStore: faults on a test's word, on MemoryStore and a real etcd, on every loop."""

from __future__ import annotations

from contextlib import aclosing

import anyio
import pytest

from anyrdzv import (
    Heartbeat,
    HeartbeatLost,
    LeaseExpired,
    LeaseStore,
    MemoryStore,
    StoreConnectionError,
)
from anyrdzv.testing import FaultyStore

pytestmark = pytest.mark.anyio


async def test_passes_calls_on(store: LeaseStore, key_prefix: str) -> None:
    faulty = FaultyStore(store)
    revision = await faulty.put(f"{key_prefix}/a", b"1")
    kv = await faulty.get(f"{key_prefix}/a")
    assert kv is not None
    assert (kv.value, kv.mod_revision) == (b"1", revision)
    assert faulty.calls == {"put": 1, "get": 1}


async def test_fail_times_then_passes(store: LeaseStore, key_prefix: str) -> None:
    faulty = FaultyStore(store)
    faulty.fail("get", times=2)
    for _ in range(2):
        with pytest.raises(StoreConnectionError, match="a fault"):
            await faulty.get(f"{key_prefix}/a")
    assert await faulty.get(f"{key_prefix}/a") is None
    await faulty.put(f"{key_prefix}/a", b"1")  # other methods never failed


async def test_fail_with_an_error_until_healed() -> None:
    faulty = FaultyStore(MemoryStore())
    lease = await faulty.grant(5)
    faulty.fail("keep_alive", error=LeaseExpired("gone"))
    for _ in range(3):
        with pytest.raises(LeaseExpired, match="gone"):
            await faulty.keep_alive(lease)
    faulty.heal()
    assert await faulty.keep_alive(lease) == 5


async def test_hang_until_healed() -> None:
    faulty = FaultyStore(MemoryStore())
    faulty.hang("get")
    with anyio.move_on_after(0.1) as scope:
        await faulty.get("/a")
    assert scope.cancelled_caught
    got: list[object] = []
    async with anyio.create_task_group() as tg:

        async def get() -> None:
            got.append(await faulty.get("/a"))

        tg.start_soon(get)
        await anyio.wait_all_tasks_blocked()
        assert got == []
        faulty.heal()
    assert got == [None]


async def test_break_watches_ends_an_open_watch(store: LeaseStore, key_prefix: str) -> None:
    faulty = FaultyStore(store)
    _, revision = await faulty.get_prefix(key_prefix)
    stream = faulty.watch_prefix(key_prefix, start_revision=revision + 1)
    async with aclosing(stream) as events:
        await faulty.put(f"{key_prefix}/a", b"1")
        first = await events.__anext__()
        assert first.key == f"{key_prefix}/a"
        async with anyio.create_task_group() as tg:

            async def cut() -> None:
                await anyio.wait_all_tasks_blocked()
                faulty.break_watches()

            tg.start_soon(cut)
            with pytest.raises(StoreConnectionError, match="was cut"):
                await events.__anext__()
    # A watch made afterwards works.
    stream = faulty.watch_prefix(key_prefix, start_revision=first.revision)
    async with aclosing(stream) as events:
        assert (await events.__anext__()).key == f"{key_prefix}/a"


async def test_a_partition_loses_a_heartbeat() -> None:
    faulty = FaultyStore(MemoryStore())
    with pytest.raises(HeartbeatLost):
        async with Heartbeat(faulty, "g", "m", interval=0.1, max_missed=2):
            faulty.partition()
            await anyio.sleep(5)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="store must be a LeaseStore"):
        FaultyStore(object())  # type: ignore[arg-type]
    faulty = FaultyStore(MemoryStore())
    with pytest.raises(ValueError, match="method must be one of .*got 'nope'"):
        faulty.fail("nope")
    with pytest.raises(ValueError, match="times must be at least 1, got 0"):
        faulty.fail("get", times=0)
    with pytest.raises(TypeError, match="error must be a StoreError"):
        faulty.fail("get", error=ValueError("x"))  # type: ignore[arg-type]
