"""The LeaseStore contract, run over MemoryStore and a real etcd, on every backend."""

from __future__ import annotations

import re
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import pytest

from anyrdzv import (
    CasResult,
    Compare,
    Delete,
    EtcdStore,
    EventType,
    Get,
    Heartbeat,
    KeyValue,
    Lease,
    LeaseExpired,
    LeaseStore,
    MemoryStore,
    Put,
    StoreEvent,
    members,
)
from anyrdzv._stores._model import MAX_VALUE_BYTES
from anyrdzv.testing import StoreWrapper
from tests._support.stores import collect

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import TracebackType

    from typing_extensions import Self

    from anyrdzv._stores._txn import TxnOp

pytestmark = pytest.mark.anyio


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

    @pytest.mark.slow
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

    @pytest.mark.slow
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
        with pytest.raises(ValueError, match="ttl must be at least 1, got"):
            await store.grant(ttl)

    async def test_ttl_type(self, store: LeaseStore) -> None:
        with pytest.raises(TypeError, match="ttl must be an int"):
            await store.grant(1.5)  # type: ignore[arg-type]


class TestLeaseHandles:
    """Every parameter that takes a lease takes a Lease or its id, as a key's
    ``KeyValue.lease`` gives it: no TTL has to be made up."""

    async def test_a_key_s_lease_id_renews_and_revokes_it(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        lease = await store.grant(10)
        await store.put(f"{key_prefix}/a", b"1", lease=lease)
        kv = await store.get(f"{key_prefix}/a")
        assert kv is not None
        assert kv.lease == lease.id
        assert 0 < await store.keep_alive(kv.lease) <= 10
        remaining = await store.time_to_live(kv.lease)
        assert remaining is not None
        await store.revoke(kv.lease)
        assert await store.get(f"{key_prefix}/a") is None
        with pytest.raises(LeaseExpired):
            await store.keep_alive(kv.lease)
        await store.revoke(kv.lease)  # again: not an error

    async def test_writes_take_a_lease_id(self, store: LeaseStore, key_prefix: str) -> None:
        lease = await store.grant(10)
        await store.put(f"{key_prefix}/put", b"1", lease=lease.id)
        swapped = await store.compare_and_swap(
            f"{key_prefix}/swap", b"2", expected_mod_revision=0, lease=lease.id
        )
        assert swapped.succeeded
        await store.txn([], [Put(f"{key_prefix}/txn", b"3", lease.id)])
        kvs, _ = await store.get_prefix_kv(f"{key_prefix}/")
        assert [(kv.key.rsplit("/", 1)[1], kv.lease) for kv in kvs] == [
            ("put", lease.id),
            ("swap", lease.id),
            ("txn", lease.id),
        ]
        assert (await store.txn([Compare.lease(f"{key_prefix}/put", "==", lease.id)])).succeeded
        await store.revoke(lease.id)
        assert (await store.get_prefix_kv(f"{key_prefix}/"))[0] == []

    async def test_a_gone_lease_id_is_lease_expired(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        lease = await store.grant(10)
        await store.revoke(lease)
        with pytest.raises(LeaseExpired):
            await store.put(f"{key_prefix}/x", b"", lease=lease.id)
        with pytest.raises(LeaseExpired):
            await store.compare_and_swap(
                f"{key_prefix}/x", b"", expected_mod_revision=0, lease=lease.id
            )
        with pytest.raises(LeaseExpired):
            await store.txn([], [Put(f"{key_prefix}/x", b"", lease.id)])
        assert await store.time_to_live(lease.id) is None
        assert await store.get(f"{key_prefix}/x") is None

    @pytest.mark.parametrize(
        ("bad", "error", "message"),
        [
            ("7", TypeError, "lease must be a Lease or an int, got str '7'"),
            (1.0, TypeError, "lease must be a Lease or an int, got float 1.0"),
            (True, TypeError, "lease must be a Lease or an int, got bool True"),
            (0, ValueError, "lease must be at least 1, got 0"),
            (-5, ValueError, "lease must be at least 1, got -5"),
            (2**63, ValueError, "lease must be at most 9223372036854775807"),
        ],
    )
    async def test_a_bad_lease_is_refused_before_any_request(
        self, store: LeaseStore, key_prefix: str, bad: Any, error: type[Exception], message: str
    ) -> None:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: store.keep_alive(bad),
            lambda: store.revoke(bad),
            lambda: store.time_to_live(bad),
        ]
        for call in calls:
            with pytest.raises(error, match=re.escape(message)):
                await call()
        # Where a lease is optional, None is taken too, and the message says so.
        message = message.replace("a Lease or an int", "a Lease, an int or None")
        writes: list[Callable[[], Awaitable[object]]] = [
            lambda: store.put(f"{key_prefix}/x", b"", lease=bad),
            lambda: store.compare_and_swap(
                f"{key_prefix}/x", b"", expected_mod_revision=0, lease=bad
            ),
        ]
        for call in writes:
            with pytest.raises(error, match=re.escape(message)):
                await call()
        with pytest.raises(error, match=re.escape(message)):
            Put(f"{key_prefix}/x", b"", bad)
        assert await store.get(f"{key_prefix}/x") is None


class TestTimeToLive:
    async def test_a_fresh_lease_has_its_ttl(self, store: LeaseStore) -> None:
        lease = await store.grant(10)
        remaining = await store.time_to_live(lease)
        assert remaining is not None
        assert 0 < remaining <= 10

    async def test_takes_the_lease_id(self, store: LeaseStore) -> None:
        lease = await store.grant(10)
        await store.put("/ttl-test/by-id", b"x", lease=lease)
        kv = await store.get("/ttl-test/by-id")
        assert kv is not None
        assert kv.lease == lease.id
        remaining = await store.time_to_live(kv.lease)
        assert remaining is not None
        assert 0 < remaining <= 10
        await store.revoke(lease)

    @pytest.mark.slow
    async def test_keep_alive_restores_it(self, store: LeaseStore) -> None:
        lease = await store.grant(3)
        await anyio.sleep(1.1)
        before = await store.time_to_live(lease)
        assert before is not None
        assert before <= 2
        await store.keep_alive(lease)
        after = await store.time_to_live(lease)
        assert after is not None
        assert before < after <= 3

    async def test_revoked_lease_is_none(self, store: LeaseStore) -> None:
        lease = await store.grant(10)
        await store.revoke(lease)
        assert await store.time_to_live(lease) is None

    async def test_unknown_lease_is_none(self, store: LeaseStore) -> None:
        assert await store.time_to_live(0x7EADBEEF12345) is None

    @pytest.mark.slow
    async def test_expired_lease_is_none(self, store: LeaseStore) -> None:
        lease = await store.grant(1)  # etcd may raise it to its minimum TTL
        await anyio.sleep(lease.ttl + 1.5)
        assert await store.time_to_live(lease) is None

    @pytest.mark.parametrize("bad", ["1", 1.5, True, None])
    async def test_rejects_a_non_lease(self, store: LeaseStore, bad: object) -> None:
        with pytest.raises(TypeError, match="lease must be a Lease or an int"):
            await store.time_to_live(bad)  # type: ignore[arg-type]


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

    async def test_from_revision_0_it_yields_what_comes_after_it_opens(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        """As etcd: 0 is the store's revision when the watch opens, however fresh the
        store (a MemoryStore that has seen nothing has compacted nothing)."""
        await store.put(f"{key_prefix}/before", b"0")
        opened = anyio.Event()
        seen: list[StoreEvent] = []

        async def watch() -> None:
            stream = store.watch_prefix(f"{key_prefix}/", start_revision=0, on_open=opened.set)
            async with aclosing(stream):
                async for event in stream:
                    seen.append(event)
                    if len(seen) == 2:
                        break

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                await opened.wait()
                first = await store.put(f"{key_prefix}/after", b"1")
                second = await store.put(f"{key_prefix}/before", b"2")
        assert [(e.key, e.value, e.revision) for e in seen] == [
            (f"{key_prefix}/after", b"1", first),
            (f"{key_prefix}/before", b"2", second),
        ]

    async def test_a_watch_from_0_on_a_fresh_store_is_no_compaction(self) -> None:
        store = MemoryStore(history_limit=1)
        opened = anyio.Event()
        async with aclosing(store.watch_prefix("/", start_revision=0, on_open=opened.set)) as w:
            with anyio.move_on_after(0.05) as waited:
                await anext(w)
        assert waited.cancelled_caught
        assert opened.is_set()

    @pytest.mark.parametrize(
        ("start", "error", "message"),
        [
            (-1, ValueError, "start_revision must be at least 0, got -1"),
            ("1", TypeError, "start_revision must be an int, got str '1'"),
            (True, TypeError, "start_revision must be an int, got bool True"),
        ],
    )
    async def test_a_bad_start_revision_is_refused_at_once(
        self, store: LeaseStore, start: Any, error: type[Exception], message: str
    ) -> None:
        with pytest.raises(error, match=f"^{re.escape(message)}$"):
            store.watch_prefix("/", start_revision=start)

    @pytest.mark.slow
    async def test_watch_sees_lease_expiry(self, store: LeaseStore, key_prefix: str) -> None:
        _, start = await store.get_prefix(f"{key_prefix}/")
        lease = await store.grant(2)
        await store.put(f"{key_prefix}/m", b"x", lease=lease)
        events = await collect(store, f"{key_prefix}/", start + 1, 2)
        assert [e.type for e in events] == [EventType.PUT, EventType.DELETE]


def no_utf8(name: str, text: str) -> str:
    """The error for ``text``, which holds a lone surrogate, given as ``name``."""
    index = next(i for i, c in enumerate(text) if "\ud800" <= c <= "\udfff")
    return re.escape(
        f"{name} must be text that UTF-8 can encode, got {text!r}, which holds a lone "
        f"surrogate at index {index}"
    )


#: A key with a byte that is not UTF-8, as ``os.fsdecode`` gives it.
SURROGATE = "/k/\udcff"

#: Every store method that takes a key or a prefix, called with ``SURROGATE``.
WITH_A_SURROGATE: dict[str, Callable[[LeaseStore], Awaitable[object]]] = {
    "get": lambda s: s.get(SURROGATE),
    "put": lambda s: s.put(SURROGATE, b"v"),
    "delete": lambda s: s.delete(SURROGATE),
    "compare_and_swap": lambda s: s.compare_and_swap(SURROGATE, b"v", expected_mod_revision=0),
    "get_prefix": lambda s: s.get_prefix(SURROGATE),
    "get_prefix_kv": lambda s: s.get_prefix_kv(SURROGATE),
    "delete_prefix": lambda s: s.delete_prefix(SURROGATE),
}


class TestKeysUtf8:
    """etcd's keys are bytes, sent in UTF-8: a lone surrogate has no UTF-8 form, and
    every store refuses it alike, with a ValueError naming the parameter and the value."""

    @pytest.mark.parametrize("method", WITH_A_SURROGATE)
    async def test_every_method_refuses_a_key_or_prefix_with_a_lone_surrogate(
        self, store: LeaseStore, method: str
    ) -> None:
        name = "prefix" if method.endswith("prefix") or method == "get_prefix_kv" else "key"
        with pytest.raises(ValueError, match=f"^{no_utf8(name, SURROGATE)}$"):
            await WITH_A_SURROGATE[method](store)

    async def test_a_watch_refuses_it_at_once(self, store: LeaseStore) -> None:
        with pytest.raises(ValueError, match=f"^{no_utf8('prefix', SURROGATE)}$"):
            store.watch_prefix(SURROGATE, start_revision=0)

    @pytest.mark.parametrize(
        "make",
        [
            lambda: Put(SURROGATE, b"v"),
            lambda: Delete(SURROGATE),
            lambda: Delete(SURROGATE, prefix=True),
            lambda: Get(SURROGATE),
            lambda: Get(SURROGATE, prefix=True),
            lambda: Compare.value(SURROGATE, "==", b"v"),
            lambda: Compare.mod_revision(SURROGATE, "==", 0),
        ],
        ids=["put", "delete", "delete-prefix", "get", "get-prefix", "value", "mod-revision"],
    )
    def test_a_txn_op_refuses_it_when_made(self, make: Callable[[], Compare | TxnOp]) -> None:
        with pytest.raises(ValueError, match=f"^{no_utf8('key', SURROGATE)}$"):
            make()

    async def test_any_other_text_is_a_key(self, store: LeaseStore, key_prefix: str) -> None:
        key = f"{key_prefix}/\u00e9\u4e00\U0001f600\ufffd"
        revision = await store.put(key, b"v")
        assert await store.get(key) == KeyValue(key, b"v", revision, revision, 1, None)
        assert (await store.get_prefix(f"{key_prefix}/\u00e9"))[0] == {key: b"v"}


class TestGet:
    async def test_absent_key_is_none(self, store: LeaseStore, key_prefix: str) -> None:
        assert await store.get(f"{key_prefix}/nothing") is None

    async def test_version_counts_puts_and_create_revision_stays(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        key = f"{key_prefix}/k"
        first = await store.put(key, b"1")
        assert await store.get(key) == KeyValue(key, b"1", first, first, 1, None)
        await store.put(key, b"2")
        last = await store.put(key, b"3")
        assert await store.get(key) == KeyValue(key, b"3", first, last, 3, None)

    async def test_lease_id_or_none(self, store: LeaseStore, key_prefix: str) -> None:
        lease = await store.grant(10)
        revision = await store.put(f"{key_prefix}/leased", b"x", lease=lease)
        kv = await store.get(f"{key_prefix}/leased")
        assert kv == KeyValue(f"{key_prefix}/leased", b"x", revision, revision, 1, lease.id)
        await store.put(f"{key_prefix}/leased", b"y")  # a put without the lease drops it
        kv = await store.get(f"{key_prefix}/leased")
        assert kv is not None
        assert kv.lease is None
        await store.revoke(lease)
        assert await store.get(f"{key_prefix}/leased") == KeyValue(
            f"{key_prefix}/leased", b"y", revision, kv.mod_revision, 2, None
        )

    async def test_a_key_deleted_and_put_again_is_new(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        key = f"{key_prefix}/k"
        await store.put(key, b"1")
        await store.put(key, b"2")
        assert await store.delete(key)
        again = await store.put(key, b"3")
        assert await store.get(key) == KeyValue(key, b"3", again, again, 1, None)

    async def test_bad_key(self, store: LeaseStore) -> None:
        with pytest.raises(TypeError, match="key must be a str"):
            await store.get(b"k")  # type: ignore[arg-type]

    async def test_no_store_takes_an_empty_key(self, store: LeaseStore) -> None:
        with pytest.raises(ValueError, match="key must not be empty"):
            await store.get("")
        with pytest.raises(ValueError, match="key must not be empty"):
            await store.put("", b"v")
        with pytest.raises(ValueError, match="key must not be empty"):
            await store.compare_and_swap("", b"v", expected_mod_revision=0)
        with pytest.raises(ValueError, match="key must not be empty"):
            await store.delete("")


class TestGetPrefixKv:
    async def test_sorted_by_key_with_the_read_revision(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        keys = [f"{key_prefix}/{name}" for name in ("z", "a", "\u00e9", "\u4e00", "m")]
        revisions = {key: await store.put(key, key.encode()) for key in keys}
        await store.put(f"{key_prefix}x/other", b"not under the prefix")
        kvs, revision = await store.get_prefix_kv(f"{key_prefix}/")
        assert [kv.key for kv in kvs] == sorted(keys, key=str.encode)
        assert revision >= max(revisions.values())
        for kv in kvs:
            assert kv == KeyValue(
                kv.key, kv.key.encode(), revisions[kv.key], revisions[kv.key], 1, None
            )
        values, _ = await store.get_prefix(f"{key_prefix}/")
        assert values == {kv.key: kv.value for kv in kvs}

    async def test_empty(self, store: LeaseStore, key_prefix: str) -> None:
        kvs, revision = await store.get_prefix_kv(f"{key_prefix}/")
        assert kvs == []
        assert revision >= 1

    async def test_the_empty_prefix_is_every_key(self, store: LeaseStore, key_prefix: str) -> None:
        revision = await store.put(f"{key_prefix}/k", b"1")
        kvs, _ = await store.get_prefix_kv("")
        assert KeyValue(f"{key_prefix}/k", b"1", revision, revision, 1, None) in kvs
        assert [kv.key for kv in kvs] == sorted((kv.key for kv in kvs), key=str.encode)
        values, _ = await store.get_prefix("")
        assert values[f"{key_prefix}/k"] == b"1"

    async def test_bad_prefix(self, store: LeaseStore) -> None:
        with pytest.raises(TypeError, match="prefix must be a str"):
            await store.get_prefix_kv(None)  # type: ignore[arg-type]


class TestDelete:
    async def test_delete_reports_whether_the_key_existed(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        key = f"{key_prefix}/k"
        put = await store.put(key, b"1")
        assert await store.delete(key) is True
        assert await store.get(key) is None
        assert await store.delete(key) is False
        events = await collect(store, f"{key_prefix}/", put, 2)
        assert [(e.type, e.key, e.revision) for e in events] == [
            (EventType.PUT, key, put),
            (EventType.DELETE, key, put + 1),
        ]

    async def test_deleting_an_absent_key_leaves_the_revision(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        before = await store.put(f"{key_prefix}/a", b"1")
        assert await store.delete(f"{key_prefix}/absent") is False
        after = await store.put(f"{key_prefix}/b", b"1")
        assert after == before + 1

    async def test_a_deleted_key_leaves_its_lease(self, store: LeaseStore, key_prefix: str) -> None:
        key = f"{key_prefix}/k"
        lease = await store.grant(10)
        await store.put(key, b"leased", lease=lease)
        assert await store.delete(key)
        await store.put(key, b"plain")
        await store.revoke(lease)
        kv = await store.get(key)
        assert kv is not None
        assert (kv.value, kv.version, kv.lease) == (b"plain", 1, None)

    async def test_bad_key(self, store: LeaseStore) -> None:
        with pytest.raises(TypeError, match="key must be a str"):
            await store.delete(1)  # type: ignore[arg-type]


class TestDeletePrefix:
    async def test_counts_and_deletes_at_one_revision(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        lease = await store.grant(10)
        for name in ("c", "a", "b"):
            await store.put(f"{key_prefix}/{name}", b"1", lease=lease if name == "a" else None)
        outside = await store.put(f"{key_prefix}x/keep", b"kept")
        _, start = await store.get_prefix_kv(f"{key_prefix}/")
        assert await store.delete_prefix(f"{key_prefix}/") == 3
        assert await store.get_prefix_kv(f"{key_prefix}/") == ([], start + 1)
        events = await collect(store, f"{key_prefix}/", start + 1, 3)
        assert [(e.type, e.key, e.revision) for e in events] == [
            (EventType.DELETE, f"{key_prefix}/{name}", start + 1) for name in ("a", "b", "c")
        ]
        assert await store.get(f"{key_prefix}x/keep") == KeyValue(
            f"{key_prefix}x/keep", b"kept", outside, outside, 1, None
        )
        assert await store.delete_prefix(f"{key_prefix}/") == 0
        assert (await store.get_prefix_kv(f"{key_prefix}/"))[1] == start + 1
        await store.revoke(lease)  # its key is gone already: nothing changes
        assert (await store.get_prefix_kv(f"{key_prefix}/"))[1] == start + 1


class TestCompareAndSwap:
    async def test_create_if_absent(self, store: LeaseStore, key_prefix: str) -> None:
        key = f"{key_prefix}/k"
        created = await store.compare_and_swap(key, b"1", expected_mod_revision=0)
        assert isinstance(created, CasResult)
        assert created.succeeded
        assert created.kv is not None
        revision = created.kv.mod_revision
        assert created.kv == KeyValue(key, b"1", revision, revision, 1, None)
        again = await store.compare_and_swap(key, b"2", expected_mod_revision=0)
        assert again == CasResult(False, created.kv)
        assert await store.get(key) == created.kv

    async def test_success_returns_the_new_kv(self, store: LeaseStore, key_prefix: str) -> None:
        key = f"{key_prefix}/k"
        first = await store.put(key, b"1")
        swapped = await store.compare_and_swap(key, b"2", expected_mod_revision=first)
        assert swapped.succeeded
        assert swapped.kv is not None
        assert swapped.kv.mod_revision > first
        assert swapped.kv == KeyValue(key, b"2", first, swapped.kv.mod_revision, 2, None)
        assert await store.get(key) == swapped.kv
        after = await store.put(f"{key_prefix}/other", b"")
        assert after == swapped.kv.mod_revision + 1  # the swap took exactly one revision

    async def test_a_stale_token_fails_and_returns_the_current_kv(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        key = f"{key_prefix}/k"
        first = await store.put(key, b"1")
        current = await store.compare_and_swap(key, b"2", expected_mod_revision=first)
        stale = await store.compare_and_swap(key, b"3", expected_mod_revision=first)
        assert stale == CasResult(False, current.kv)
        assert await store.get(key) == current.kv

    async def test_a_token_for_an_absent_key_fails_with_none(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        key = f"{key_prefix}/k"
        revision = await store.put(key, b"1")
        await store.delete(key)
        result = await store.compare_and_swap(key, b"2", expected_mod_revision=revision)
        assert result == CasResult(False, None)
        assert await store.get(key) is None

    async def test_under_a_lease(self, store: LeaseStore, key_prefix: str) -> None:
        key = f"{key_prefix}/k"
        lease = await store.grant(10)
        result = await store.compare_and_swap(key, b"1", expected_mod_revision=0, lease=lease)
        assert result.kv is not None
        assert result.kv.lease == lease.id
        await store.revoke(lease)
        assert await store.get(key) is None

    async def test_a_gone_lease_raises_and_writes_nothing(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        lease = await store.grant(10)
        await store.revoke(lease)
        with pytest.raises(LeaseExpired):
            await store.compare_and_swap(
                f"{key_prefix}/new", b"1", expected_mod_revision=0, lease=lease
            )
        assert await store.get(f"{key_prefix}/new") is None
        revision = await store.put(f"{key_prefix}/old", b"1")
        before = await store.get(f"{key_prefix}/old")
        with pytest.raises(LeaseExpired):
            await store.compare_and_swap(
                f"{key_prefix}/old", b"2", expected_mod_revision=revision, lease=lease
            )
        assert await store.get(f"{key_prefix}/old") == before
        assert (await store.get_prefix_kv(f"{key_prefix}/"))[1] == revision

    async def test_a_gone_lease_on_a_failed_comparison_is_just_a_failure(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        # As etcd: the lease is checked only in the branch that runs.
        lease = await store.grant(10)
        await store.revoke(lease)
        revision = await store.put(f"{key_prefix}/k", b"1")
        result = await store.compare_and_swap(
            f"{key_prefix}/k", b"2", expected_mod_revision=revision + 1000, lease=lease
        )
        assert result == CasResult(False, await store.get(f"{key_prefix}/k"))

    async def test_concurrent_increments_lose_no_update(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        key = f"{key_prefix}/counter"
        successes = 0
        failures = 0

        async def increment(times: int) -> None:
            nonlocal successes, failures
            done = 0
            kv = await store.get(key)
            while done < times:
                expected = 0 if kv is None else kv.mod_revision
                count = 0 if kv is None else int(kv.value)
                result = await store.compare_and_swap(
                    key, str(count + 1).encode(), expected_mod_revision=expected
                )
                if result.succeeded:
                    successes += 1
                    done += 1
                else:
                    failures += 1
                kv = result.kv

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(increment, 20)
        final = await store.get(key)
        assert successes == 80
        assert final is not None
        assert (final.value, final.version) == (b"80", 80)

    @pytest.mark.parametrize(
        ("token", "error", "message"),
        [
            (-1, ValueError, "expected_mod_revision must be at least 0, got -1"),
            (True, TypeError, "expected_mod_revision must be an int, got bool"),
            (2.0, TypeError, "expected_mod_revision must be an int, got float"),
            ("3", TypeError, "expected_mod_revision must be an int, got str"),
            (None, TypeError, "expected_mod_revision must be an int, got NoneType"),
        ],
    )
    async def test_bad_token(
        self,
        store: LeaseStore,
        key_prefix: str,
        token: object,
        error: type[Exception],
        message: str,
    ) -> None:
        with pytest.raises(error, match=message):
            await store.compare_and_swap(
                f"{key_prefix}/k",
                b"1",
                expected_mod_revision=token,  # type: ignore[arg-type]
            )
        assert await store.get(f"{key_prefix}/k") is None

    async def test_bad_key_and_value(self, store: LeaseStore) -> None:
        with pytest.raises(TypeError, match="key must be a str"):
            await store.compare_and_swap(b"k", b"v", expected_mod_revision=0)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="value must be bytes"):
            await store.compare_and_swap("k", "v", expected_mod_revision=0)  # type: ignore[arg-type]


class TestValueSize:
    async def test_the_largest_value_is_written(self, store: LeaseStore, key_prefix: str) -> None:
        key = f"{key_prefix}/big"
        value = b"x" * (MAX_VALUE_BYTES - len(key))
        await store.put(key, value)
        kv = await store.get(key)
        assert kv is not None
        assert kv.value == value
        swapped = await store.compare_and_swap(
            key, value[::-1], expected_mod_revision=kv.mod_revision
        )
        assert swapped.succeeded

    async def test_a_larger_value_is_refused_up_front(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        key = f"{key_prefix}/big"
        value = b"x" * (MAX_VALUE_BYTES - len(key) + 1)
        message = f"value is too large: the key and value hold {MAX_VALUE_BYTES + 1} bytes"
        with pytest.raises(ValueError, match=message):
            await store.put(key, value)
        with pytest.raises(ValueError, match=message):
            await store.compare_and_swap(key, value, expected_mod_revision=0)
        assert await store.get(key) is None

    async def test_a_wide_key_counts_its_utf8_bytes(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        key = f"{key_prefix}/\u4e00"  # three bytes in UTF-8
        value = b"x" * (MAX_VALUE_BYTES - len(key))
        with pytest.raises(ValueError, match="value is too large"):
            await store.put(key, value)


class TestWatchEventFields:
    async def test_events_carry_the_keys_revisions_version_and_lease(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        key = f"{key_prefix}/k"
        lease = await store.grant(60)
        first = await store.put(key, b"1", lease=lease)
        second = await store.put(key, b"2")
        await store.delete(key)
        third = await store.put(key, b"3", lease=lease)
        await store.revoke(lease)
        events = await collect(store, f"{key_prefix}/", first, 5)
        # A DELETE carries no create revision, version or lease: etcd sends none.
        assert events == [
            StoreEvent(EventType.PUT, key, b"1", first, first, 1, lease.id),
            StoreEvent(EventType.PUT, key, b"2", second, first, 2, None),
            StoreEvent(EventType.DELETE, key, b"", second + 1, 0, 0, None),
            StoreEvent(EventType.PUT, key, b"3", third, third, 1, lease.id),
            StoreEvent(EventType.DELETE, key, b"", third + 1, 0, 0, None),
        ]
        assert [e.mod_revision for e in events] == [e.revision for e in events]


async def test_the_empty_prefix_watches_every_key(store: LeaseStore, key_prefix: str) -> None:
    _, revision = await store.get_prefix(key_prefix)
    written = await store.put(f"{key_prefix}/any", b"v")
    async with aclosing(store.watch_prefix("", start_revision=revision + 1)) as events:
        with anyio.fail_after(5):
            async for event in events:
                if event.key == f"{key_prefix}/any":
                    assert event.revision == written
                    break


class OpenableStore(LeaseStore, Protocol):
    """Any store that is also an async context manager, as code written for both
    stores may ask for: the LeaseStore protocol itself does not ask for it, so that
    stores written before (like :class:`~anyrdzv.testing.StoreWrapper`) stay stores."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None: ...


async def write_and_read(store: OpenableStore, key: str) -> bytes | None:
    """Code written for any store: open it, write and read."""
    async with store as opened:
        assert opened is store
        await opened.put(key, b"v")
        kv = await opened.get(key)
        return None if kv is None else kv.value


class TestAsyncWith:
    @pytest.mark.parametrize("kind", ["memory", "etcd"])
    async def test_either_store_opens_with_async_with(
        self, kind: str, key_prefix: str, request: pytest.FixtureRequest
    ) -> None:
        store: OpenableStore
        if kind == "memory":
            store = MemoryStore()
        else:
            store = EtcdStore(request.getfixturevalue("etcd_server").endpoint)
        assert await write_and_read(store, f"{key_prefix}/k") == b"v"

    async def test_a_store_with_only_the_protocols_methods_is_still_a_store(self) -> None:
        # StoreWrapper has no __aenter__: as a third-party store written before.
        store: LeaseStore = StoreWrapper(MemoryStore())
        async with Heartbeat(store, "g", "m", interval=0.5):
            assert set((await members(store, "g")).members) == {"m"}
