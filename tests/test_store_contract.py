"""The LeaseStore contract, run over MemoryStore and a real etcd, on every backend."""

from __future__ import annotations

from contextlib import aclosing

import anyio
import httpx
import pytest

from anyrdzv import (
    EtcdStore,
    EventType,
    Lease,
    LeaseExpired,
    LeaseStore,
    MemoryStore,
    StoreCompacted,
    StoreEvent,
)

pytestmark = pytest.mark.anyio


async def collect(store: LeaseStore, prefix: str, start: int, count: int) -> list[StoreEvent]:
    events: list[StoreEvent] = []
    with anyio.fail_after(10):
        async with aclosing(store.watch_prefix(prefix, start_revision=start)) as stream:
            async for event in stream:
                events.append(event)
                if len(events) == count:
                    break
    return events


async def renew_all(store: LeaseStore, leases: list[Lease]) -> dict[int, int | BaseException]:
    """Keep every lease alive at once; each one's TTL, or the error it raised."""
    answers: dict[int, int | BaseException] = {}

    async def renew(lease: Lease) -> None:
        try:
            answers[lease.id] = await store.keep_alive(lease)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            answers[lease.id] = exc

    async with anyio.create_task_group() as tg:
        for lease in leases:
            tg.start_soon(renew, lease)
    return answers


class TestLeases:
    async def test_grant_and_keep_alive(self, store: LeaseStore) -> None:
        lease = await store.grant(5)
        assert isinstance(lease, Lease)
        assert lease.ttl >= 5
        assert 0 < await store.keep_alive(lease) <= lease.ttl
        await store.revoke(lease)

    async def test_revoke_deletes_keys_and_is_idempotent(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        lease = await store.grant(10)
        await store.put(f"{key_prefix}/a", b"1", lease=lease)
        await store.put(f"{key_prefix}/b", b"2")
        await store.revoke(lease)
        found, _ = await store.get_prefix(f"{key_prefix}/")
        assert found == {f"{key_prefix}/b": b"2"}
        await store.revoke(lease)  # again: not an error

    async def test_gone_lease_raises_lease_expired(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        lease = await store.grant(10)
        await store.revoke(lease)
        with pytest.raises(LeaseExpired):
            await store.keep_alive(lease)
        with pytest.raises(LeaseExpired):
            await store.put(f"{key_prefix}/x", b"", lease=lease)

    async def test_concurrent_keep_alives_each_get_their_own_answer(
        self, store: LeaseStore
    ) -> None:
        leases = [await store.grant(10) for _ in range(40)]
        gone = leases[7]
        await store.revoke(gone)
        answers = await renew_all(store, [*leases, leases[3]])  # one lease twice at once
        assert isinstance(answers.pop(gone.id), LeaseExpired)
        assert len(answers) == 39
        assert all(isinstance(ttl, int) and 0 < ttl <= 10 for ttl in answers.values())
        for lease in leases:
            await store.revoke(lease)

    async def test_lease_expires_and_its_keys_vanish(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        lease = await store.grant(2)
        await store.put(f"{key_prefix}/ephemeral", b"x", lease=lease)
        start = anyio.current_time()
        with anyio.fail_after(lease.ttl + 3):
            while (await store.get_prefix(f"{key_prefix}/"))[0]:  # noqa: ASYNC110 - polls the store
                await anyio.sleep(0.05)
        assert anyio.current_time() - start >= lease.ttl - 0.6  # not before its time
        with pytest.raises(LeaseExpired):
            await store.keep_alive(lease)

    async def test_keep_alive_extends_the_lease(self, store: LeaseStore, key_prefix: str) -> None:
        lease = await store.grant(2)
        await store.put(f"{key_prefix}/kept", b"x", lease=lease)
        for _ in range(8):  # 4 s: twice the TTL
            await anyio.sleep(0.5)
            await store.keep_alive(lease)
        found, _ = await store.get_prefix(f"{key_prefix}/")
        assert found == {f"{key_prefix}/kept": b"x"}
        await store.revoke(lease)

    @pytest.mark.parametrize("ttl", [0, -1])
    async def test_bad_ttl(self, store: LeaseStore, ttl: int) -> None:
        with pytest.raises(ValueError, match="ttl must be at least 1 second"):
            await store.grant(ttl)

    async def test_ttl_type(self, store: LeaseStore) -> None:
        with pytest.raises(TypeError, match="ttl must be an int"):
            await store.grant(1.5)  # type: ignore[arg-type]


class TestKeys:
    async def test_put_and_get_prefix(self, store: LeaseStore, key_prefix: str) -> None:
        first = await store.put(f"{key_prefix}/a", b"1")
        second = await store.put(f"{key_prefix}/b", b"\x00\xff")
        await store.put(f"{key_prefix}x/other", b"not under the prefix")
        assert second > first
        found, revision = await store.get_prefix(f"{key_prefix}/")
        assert found == {f"{key_prefix}/a": b"1", f"{key_prefix}/b": b"\x00\xff"}
        assert revision >= second

    async def test_overwrite(self, store: LeaseStore, key_prefix: str) -> None:
        await store.put(f"{key_prefix}/a", b"1")
        await store.put(f"{key_prefix}/a", b"2")
        assert (await store.get_prefix(f"{key_prefix}/"))[0] == {f"{key_prefix}/a": b"2"}

    async def test_bad_key_and_value(self, store: LeaseStore) -> None:
        with pytest.raises(TypeError, match="key must be a str"):
            await store.put(b"k", b"v")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="value must be bytes"):
            await store.put("k", "v")  # type: ignore[arg-type]


class TestWatch:
    async def test_events_in_revision_order(self, store: LeaseStore, key_prefix: str) -> None:
        _, start = await store.get_prefix(f"{key_prefix}/")
        lease = await store.grant(10)
        await store.put(f"{key_prefix}/a", b"1", lease=lease)
        await store.put(f"{key_prefix}/b", b"2")
        await store.put(f"{key_prefix}/a", b"3", lease=lease)
        await store.revoke(lease)
        events = await collect(store, f"{key_prefix}/", start + 1, 4)
        assert [(e.type, e.key, e.value) for e in events] == [
            (EventType.PUT, f"{key_prefix}/a", b"1"),
            (EventType.PUT, f"{key_prefix}/b", b"2"),
            (EventType.PUT, f"{key_prefix}/a", b"3"),
            (EventType.DELETE, f"{key_prefix}/a", b""),
        ]
        revisions = [e.revision for e in events]
        assert revisions == sorted(revisions)
        assert len(set(revisions)) == 4

    async def test_live_events_and_resume_from_a_revision(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        _, start = await store.get_prefix(f"{key_prefix}/")
        seen: list[StoreEvent] = []

        async def watch() -> None:
            seen.extend(await collect(store, f"{key_prefix}/", start + 1, 3))

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await anyio.sleep(0.1)
            for value in (b"1", b"2", b"3"):
                await store.put(f"{key_prefix}/k", value)
        assert [e.value for e in seen] == [b"1", b"2", b"3"]
        # Resuming after the first event gives exactly the rest.
        rest = await collect(store, f"{key_prefix}/", seen[0].revision + 1, 2)
        assert [e.value for e in rest] == [b"2", b"3"]

    async def test_watch_sees_lease_expiry(self, store: LeaseStore, key_prefix: str) -> None:
        _, start = await store.get_prefix(f"{key_prefix}/")
        lease = await store.grant(2)
        await store.put(f"{key_prefix}/m", b"x", lease=lease)
        events = await collect(store, f"{key_prefix}/", start + 1, 2)
        assert [e.type for e in events] == [EventType.PUT, EventType.DELETE]


async def test_compacted_history_memory() -> None:
    store = MemoryStore(history_limit=2)
    for value in (b"1", b"2", b"3", b"4"):
        await store.put("/c/k", value)
    with pytest.raises(StoreCompacted) as info:
        await collect(store, "/c/", 1, 1)
    assert info.value.compact_revision >= 3


async def test_compacted_history_etcd(etcd_server: object, key_prefix: str) -> None:
    from etcd_server import EtcdServer

    assert isinstance(etcd_server, EtcdServer)
    async with EtcdStore(etcd_server.endpoint) as store:
        first = await store.put(f"{key_prefix}/k", b"1")
        last = await store.put(f"{key_prefix}/k", b"2")
        async with httpx.AsyncClient(base_url=etcd_server.url) as client:
            response = await client.post("/v3/kv/compaction", json={"revision": str(last)})
            assert response.status_code == 200, response.text
        with pytest.raises(StoreCompacted) as info:
            await collect(store, f"{key_prefix}/", first, 1)
        assert info.value.compact_revision >= last


def test_memory_store_validation() -> None:
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
