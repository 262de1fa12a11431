"""WriteBatcher: concurrent puts go out together; when a batch cannot be written as
one, each caller is told to write alone, and nothing is half-written."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import anyio.abc
import pytest

from anyrdzv import EtcdStore, LeaseStore, MemoryStore, StoreConnectionError
from anyrdzv._rendezvous._write_batch import WriteBatcher
from anyrdzv._stores._txn import MAX_TXN_OPS, Put

pytestmark = pytest.mark.anyio


@pytest.fixture
def prefix() -> str:
    return f"/batch-{uuid.uuid4().hex[:12]}/"


class Counting:
    """A store that counts txns and puts, and can be told to fail its txns."""

    def __init__(self, inner: LeaseStore) -> None:
        self.inner = inner
        self.txns: list[int] = []  # the number of puts in each txn
        self.puts = 0
        self.fail_txns = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def txn(self, compare: Any, success: Any, failure: Any = ()) -> Any:
        self.txns.append(len(success))
        if self.fail_txns:
            raise StoreConnectionError("the store went away (test)")
        return await self.inner.txn(compare, success, failure)

    async def put(self, key: str, value: bytes, **kwargs: Any) -> int:
        self.puts += 1
        return await self.inner.put(key, value, **kwargs)


async def put_all(
    batcher: WriteBatcher, puts: list[tuple[Put, bool]]
) -> dict[str, int | None | BaseException]:
    """Call ``batcher.put`` for each at once; what each got back, or raised."""
    got: dict[str, int | None | BaseException] = {}

    async def one(put: Put, absent: bool) -> None:
        try:
            got[put.key] = await batcher.put(put, absent=absent)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            got[put.key] = exc

    async with anyio.create_task_group() as tg:
        for put, absent in puts:
            tg.start_soon(one, put, absent)
    return got


async def test_concurrent_puts_go_out_together(store: LeaseStore, prefix: str) -> None:
    counting = Counting(store)
    batcher = WriteBatcher(counting)  # type: ignore[arg-type]
    n = MAX_TXN_OPS * 2 + 10
    puts = [(Put(f"{prefix}{i:04d}", str(i).encode()), i % 2 == 0) for i in range(n)]
    got = await put_all(batcher, puts)
    # Every put is written, at the revision it was told, in txns of at most 128.
    assert all(isinstance(revision, int) and revision > 0 for revision in got.values())
    for put, _ in puts:
        kv = await store.get(put.key)
        assert kv is not None
        assert (kv.value, kv.mod_revision) == (put.value, got[put.key])
    assert counting.puts == 0
    assert sum(counting.txns) == n
    assert max(counting.txns) <= MAX_TXN_OPS
    assert len(counting.txns) < n // 10  # together, not one by one
    assert batcher.batched == n - sum(1 for size in counting.txns if size == 1)


async def test_a_lone_put_is_sent_at_once(store: LeaseStore, prefix: str) -> None:
    batcher = WriteBatcher(store)
    revision = await batcher.put(Put(prefix + "a", b"1"))
    kv = await store.get(prefix + "a")
    assert kv is not None
    assert kv.mod_revision == revision
    # Put-if-absent, alone: a present key is not overwritten, and the caller is told.
    assert await batcher.put(Put(prefix + "a", b"2"), absent=True) is None
    kv = await store.get(prefix + "a")
    assert kv is not None
    assert kv.value == b"1"


async def test_a_taken_key_sends_its_whole_batch_back(store: LeaseStore, prefix: str) -> None:
    """Callers that come together go out together. One absent put whose key is there
    fails the batch's txn: nothing of it is written, and every caller of it is told to
    write alone (``None``)."""
    await store.put(prefix + "taken", b"theirs")
    counting = Counting(store)
    batcher = WriteBatcher(counting)  # type: ignore[arg-type]
    got = await put_all(
        batcher,
        [
            (Put(prefix + "x", b"x"), True),
            (Put(prefix + "taken", b"mine"), True),
            (Put(prefix + "y", b"y"), False),
        ],
    )
    assert counting.txns == [3]  # one batch
    assert got == {prefix + "x": None, prefix + "taken": None, prefix + "y": None}
    assert await store.get(prefix + "x") is None
    assert await store.get(prefix + "y") is None
    kv = await store.get(prefix + "taken")
    assert kv is not None
    assert kv.value == b"theirs"


async def test_a_failed_batch_sends_its_callers_back_and_a_lone_put_raises(
    store: LeaseStore, prefix: str
) -> None:
    counting = Counting(store)
    batcher = WriteBatcher(counting)  # type: ignore[arg-type]
    counting.fail_txns = True
    # Alone, the put is the caller's own txn: its error is the caller's.
    with pytest.raises(StoreConnectionError):
        await batcher.put(Put(prefix + "lone", b"1"), absent=True)
    # A batch that fails sends each of its callers back, to write alone with its own
    # error handling.
    got = await put_all(batcher, [(Put(f"{prefix}{i}", b"v"), False) for i in range(5)])
    assert got == {f"{prefix}{i}": None for i in range(5)}
    assert counting.txns == [1, 5]
    # The batcher is not stuck: the next put goes through.
    counting.fail_txns = False
    assert isinstance(await batcher.put(Put(prefix + "after", b"1")), int)


async def test_a_cancelled_waiting_caller_is_not_written(prefix: str) -> None:
    store = MemoryStore()
    gate = anyio.Event()

    class Slow(Counting):
        async def put(self, key: str, value: bytes, **kwargs: Any) -> int:
            await gate.wait()
            return await super().put(key, value, **kwargs)

    slow = Slow(store)
    batcher = WriteBatcher(slow)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(batcher.put, Put(prefix + "first", b"1"))  # holds the sender's turn
        await anyio.wait_all_tasks_blocked()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await batcher.put(Put(prefix + "cancelled", b"1"))
        later = anyio.Event()

        async def put_later() -> None:
            await batcher.put(Put(prefix + "later", b"1"))
            later.set()

        tg.start_soon(put_later)
        await anyio.wait_all_tasks_blocked()
        gate.set()
        await later.wait()
    assert await store.get(prefix + "cancelled") is None
    assert await store.get(prefix + "first") is not None
    assert await store.get(prefix + "later") is not None


async def test_a_cancelled_sender_passes_the_turn(prefix: str) -> None:
    """The caller whose txn is in flight is cancelled: its batch's callers are told to
    write alone, and the next caller gets the turn, so nobody waits forever."""
    store = MemoryStore()
    hang = anyio.Event()

    class Hanging(Counting):
        async def txn(self, compare: Any, success: Any, failure: Any = ()) -> Any:
            if not hang.is_set():
                hang.set()
                await anyio.sleep_forever()
            return await super().txn(compare, success, failure)

        async def put(self, key: str, value: bytes, **kwargs: Any) -> int:
            if not hang.is_set():
                hang.set()
                await anyio.sleep_forever()
            return await super().put(key, value, **kwargs)

    batcher = WriteBatcher(Hanging(store))  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        sender = anyio.CancelScope()

        async def send() -> None:
            with sender:
                await batcher.put(Put(prefix + "sender", b"1"))

        tg.start_soon(send)
        await hang.wait()
        got: dict[str, int | None | BaseException] = {}

        async def queued(key: str) -> None:
            got[key] = await batcher.put(Put(prefix + key, b"1"))

        tg.start_soon(queued, "a")
        tg.start_soon(queued, "b")
        await anyio.wait_all_tasks_blocked()
        sender.cancel()
    assert set(got) == {"a", "b"}
    assert all(isinstance(revision, int) for revision in got.values())
    assert await store.get(prefix + "sender") is None


async def test_a_caller_cancelled_as_it_gets_the_turn_passes_it_on(prefix: str) -> None:
    """The turn to send reaches a waiting caller that is cancelled before it runs: it
    hands the turn to the next, and the batcher goes on."""
    store = MemoryStore()
    gate = anyio.Event()
    scopes: dict[str, anyio.CancelScope] = {}

    class Slow(Counting):
        async def put(self, key: str, value: bytes, **kwargs: Any) -> int:
            if key.endswith("first"):
                await gate.wait()
            revision = await super().put(key, value, **kwargs)
            if key.endswith("first"):
                scopes["second"].cancel()  # before the turn reaches it, and before it runs
            return revision

    batcher = WriteBatcher(Slow(store))  # type: ignore[arg-type]
    got: dict[str, int | None] = {}

    async def put(key: str) -> None:
        with anyio.CancelScope() as scope:
            scopes[key] = scope
            got[key] = await batcher.put(Put(prefix + key, b"1"))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(put, "first")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(put, "second")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(put, "third")
            await anyio.wait_all_tasks_blocked()
            gate.set()
    assert set(got) == {"first", "third"}
    assert await store.get(prefix + "second") is None
    assert await store.get(prefix + "third") is not None


async def test_a_gone_lease_sends_its_whole_batch_back(store: LeaseStore, prefix: str) -> None:
    """The store itself refuses the batch (a put under a revoked lease fails the txn):
    nothing of it is written, each caller is told to write alone, and alone the others'
    puts go through."""
    gone = await store.grant(5)
    await store.revoke(gone)
    batcher = WriteBatcher(store)
    puts = [
        (Put(prefix + "x", b"x"), True),
        (Put(prefix + "dead", b"d", lease=gone), False),
        (Put(prefix + "y", b"y"), False),
    ]
    got = await put_all(batcher, puts)
    assert got == {prefix + "x": None, prefix + "dead": None, prefix + "y": None}
    kvs, _ = await store.get_prefix_kv(prefix)
    assert kvs == []
    assert isinstance(await batcher.put(Put(prefix + "x", b"x"), absent=True), int)
    assert isinstance(await batcher.put(Put(prefix + "y", b"y")), int)


async def test_a_dead_etcd_sends_a_batch_back_and_fails_a_lone_put(
    own_etcd_server: Any, prefix: str
) -> None:
    """etcd SIGKILLed: a batch's txn fails after the store's timeout, and each of its
    callers is told to write alone; a lone put raises the store's error to its caller."""
    async with EtcdStore(own_etcd_server.endpoint, timeout=1) as store:
        batcher = WriteBatcher(store)
        own_etcd_server.kill()
        with anyio.fail_after(10):
            got = await put_all(batcher, [(Put(f"{prefix}{i}", b"v"), i == 0) for i in range(4)])
            assert got == {f"{prefix}{i}": None for i in range(4)}
            with pytest.raises(StoreConnectionError):
                await batcher.put(Put(prefix + "lone", b"1"))
        own_etcd_server.start()
        assert isinstance(await batcher.put(Put(prefix + "after", b"1")), int)
