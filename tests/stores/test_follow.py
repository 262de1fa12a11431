"""follow(): the one resilient watch, on MemoryStore and a real etcd, on every loop."""

from __future__ import annotations

import logging
from contextlib import aclosing
from typing import TYPE_CHECKING

import anyio
import pytest

from anyrdzv import LeaseStore, MemoryStore, StoreCompacted, StoreConnectionError, StoreEvent
from anyrdzv._stores._follow import Resynced, check_retry_for, follow
from anyrdzv.testing import FaultyStore

if TYPE_CHECKING:
    from tests._support.etcd_server import EtcdServer

pytestmark = pytest.mark.anyio

LOGGER = "anyrdzv._stores._follow"


async def test_yields_every_change_from_the_start_revision(
    store: LeaseStore, key_prefix: str
) -> None:
    first = await store.put(f"{key_prefix}/a", b"1")
    await store.put(f"{key_prefix}/b", b"2")
    await store.delete(f"{key_prefix}/a")
    seen: list[tuple[str, bytes]] = []
    following = follow(store, key_prefix, start_revision=first, what="the test")
    async with aclosing(following) as events:
        async for event in events:
            assert isinstance(event, StoreEvent)
            seen.append((event.key, event.value))
            if len(seen) == 3:
                break
    assert seen == [(f"{key_prefix}/a", b"1"), (f"{key_prefix}/b", b"2"), (f"{key_prefix}/a", b"")]


async def test_a_broken_watch_resumes_with_nothing_lost_or_repeated(
    store: LeaseStore, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    faulty = FaultyStore(store)
    _, revision = await store.get_prefix(key_prefix)
    keys: list[str] = []
    following = follow(faulty, key_prefix, start_revision=revision + 1, what="the test")
    async with aclosing(following) as events:
        for i in range(6):
            await store.put(f"{key_prefix}/{i}", b"")
            event = await events.__anext__()
            assert isinstance(event, StoreEvent)
            keys.append(event.key)
            if i % 2:
                faulty.break_watches()
    assert keys == [f"{key_prefix}/{i}" for i in range(6)]
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("watch on the test failed" in m and "was cut" in m for m in messages)
    assert any("watch on the test resumed at revision" in m for m in messages)


async def test_an_outage_shorter_than_retry_for_is_ridden_out(key_prefix: str) -> None:
    inner = MemoryStore()
    faulty = FaultyStore(inner)
    faulty.partition()
    following = follow(faulty, key_prefix, start_revision=1, what="the test", retry_for=5)
    async with aclosing(following) as events, anyio.create_task_group() as tg:

        async def heal_later() -> None:
            await anyio.sleep(0.3)  # the watch retries while the store is cut off
            faulty.heal()
            await inner.put(f"{key_prefix}/a", b"1")

        tg.start_soon(heal_later)
        with anyio.fail_after(5):
            event = await events.__anext__()
    assert isinstance(event, StoreEvent)
    assert event.key == f"{key_prefix}/a"
    assert faulty.calls["watch_prefix"] > 1


async def test_gives_up_after_retry_for(key_prefix: str) -> None:
    faulty = FaultyStore(MemoryStore())
    faulty.partition()
    following = follow(faulty, key_prefix, start_revision=1, what="the test", retry_for=0.3)
    started = anyio.current_time()
    with anyio.fail_after(5), pytest.raises(StoreConnectionError, match="partition"):
        async with aclosing(following) as events:
            await events.__anext__()
    assert anyio.current_time() - started >= 0.3


async def test_a_compacted_history_is_read_afresh(key_prefix: str) -> None:
    store = MemoryStore(history_limit=2)
    faulty = FaultyStore(store)
    reads: list[int] = []

    async def resync() -> int:
        _, revision = await store.get_prefix(key_prefix)
        reads.append(revision)
        return revision

    _, start = await store.get_prefix(key_prefix)
    following = follow(faulty, key_prefix, start_revision=start + 1, what="the test", resync=resync)
    async with aclosing(following) as events:
        await store.put(f"{key_prefix}/a", b"")
        assert isinstance(await events.__anext__(), StoreEvent)
        faulty.break_watches()
        for i in range(5):  # more than the history keeps, while no watch runs
            await store.put(f"{key_prefix}/{i}", b"")
        resynced = await events.__anext__()
        assert resynced == Resynced(reads[0])
        await store.put(f"{key_prefix}/after", b"")
        event = await events.__anext__()
    assert isinstance(event, StoreEvent)
    assert event.key == f"{key_prefix}/after"


async def test_an_error_thrown_in_at_an_event_brings_the_event_again(
    store: LeaseStore, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The caller's work on an event failed on a passing fault: it throws the error
    in, and follow backs off, logs it as the watch's, and gives the event again."""
    caplog.set_level(logging.WARNING, LOGGER)
    _, revision = await store.get_prefix(key_prefix)
    following = follow(store, key_prefix, start_revision=revision + 1, what="the test")
    async with aclosing(following) as events:
        await store.put(f"{key_prefix}/a", b"")
        first = await events.__anext__()
        assert isinstance(first, StoreEvent)
        with anyio.fail_after(5):
            again = await events.athrow(StoreConnectionError("the caller's read failed"))
        await store.put(f"{key_prefix}/b", b"")
        after = await events.__anext__()
    assert again == first
    assert isinstance(after, StoreEvent)
    assert after.key == f"{key_prefix}/b"
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("watch on the test failed (the caller's read failed)" in m for m in messages)


async def test_an_error_thrown_in_at_a_resync_reads_again(key_prefix: str) -> None:
    store = MemoryStore(history_limit=1)
    for i in range(3):
        await store.put(f"{key_prefix}/{i}", b"")
    reads: list[int] = []

    async def resync() -> int:
        _, revision = await store.get_prefix(key_prefix)
        reads.append(revision)
        return revision

    following = follow(store, key_prefix, start_revision=1, what="the test", resync=resync)
    async with aclosing(following) as events:
        assert await events.__anext__() == Resynced(reads[-1])
        with anyio.fail_after(5):
            again = await events.athrow(StoreConnectionError("the caller's work failed"))
        assert again == Resynced(reads[-1])
        await store.put(f"{key_prefix}/after", b"")
        event = await events.__anext__()
    assert len(reads) == 2
    assert isinstance(event, StoreEvent)
    assert event.key == f"{key_prefix}/after"


async def test_a_compaction_without_resync_is_raised(key_prefix: str) -> None:
    store = MemoryStore(history_limit=1)
    for i in range(3):
        await store.put(f"{key_prefix}/{i}", b"")
    following = follow(store, key_prefix, start_revision=1, what="the test")
    with pytest.raises(StoreCompacted):
        async with aclosing(following) as events:
            await events.__anext__()


@pytest.mark.slow
async def test_resumes_across_an_etcd_restart(own_etcd_server: EtcdServer, key_prefix: str) -> None:
    from anyrdzv import EtcdStore

    async with EtcdStore(own_etcd_server.endpoint, timeout=2) as store:
        _, revision = await store.get_prefix(key_prefix)
        following = follow(store, key_prefix, start_revision=revision + 1, what="the test")
        async with aclosing(following) as events:
            await store.put(f"{key_prefix}/before", b"")
            assert (await events.__anext__()).key == f"{key_prefix}/before"  # type: ignore[union-attr]
            own_etcd_server.kill()
            own_etcd_server.start()
            await store.put(f"{key_prefix}/after", b"")
            with anyio.fail_after(20):
                event = await events.__anext__()
    assert isinstance(event, StoreEvent)
    assert event.key == f"{key_prefix}/after"


def test_check_retry_for() -> None:
    assert check_retry_for(0) == 0.0
    assert check_retry_for(float("inf")) == float("inf")
    with pytest.raises(ValueError, match="retry_for must be at least 0, got -1"):
        check_retry_for(-1)
    with pytest.raises(ValueError, match="retry_for must be at least 0, got nan"):
        check_retry_for(float("nan"))
    with pytest.raises(TypeError, match="retry_for must be a number of seconds, got str"):
        check_retry_for("1")
