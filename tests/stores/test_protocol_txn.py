"""The store contract's transactions, on both stores (the rest of the contract is in
test_protocol.py)."""

from __future__ import annotations

import dataclasses
import operator
from typing import TYPE_CHECKING, Any

import pytest

from anyrdzv import (
    Compare,
    Delete,
    DeleteResult,
    EventType,
    Get,
    GetResult,
    KeyValue,
    LeaseExpired,
    LeaseStore,
    Put,
    PutResult,
    StoreEvent,
    TxnResult,
)
from anyrdzv._stores._model import MAX_VALUE_BYTES
from anyrdzv._stores._txn import MAX_TXN_OPS, TXN_ITEM_BYTES
from tests._support.stores import collect

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyrdzv._stores._txn import CompareOp, CompareTarget, TxnOp

pytestmark = pytest.mark.anyio


_PYTHON_OPS: dict[CompareOp, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}


class TestTxn:
    async def test_every_comparison_on_a_key_and_on_an_absent_key(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        key, absent = f"{key_prefix}/k", f"{key_prefix}/absent"
        lease = await store.grant(60)
        await store.put(key, b"m")
        await store.put(f"{key_prefix}/between", b"")
        await store.put(key, b"m", lease=lease)
        kv = await store.get(key)
        assert kv is not None
        assert (kv.version, kv.create_revision < kv.mod_revision) == (2, True)
        current: dict[CompareTarget, Any] = {
            "value": kv.value,
            "version": kv.version,
            "create_revision": kv.create_revision,
            "mod_revision": kv.mod_revision,
            "lease": lease.id,
        }
        for target, now in current.items():
            operands = (
                [b"", b"l", b"m", b"m\0", b"n"] if target == "value" else [0, now - 1, now, now + 1]
            )
            for op, holds in _PYTHON_OPS.items():
                for operand in operands:
                    compare = Compare(key, target, op, operand)
                    result = await store.txn([compare])
                    assert result.succeeded is holds(now, operand), compare
                    assert result.results == ()
                    # An absent key: 0 for every number, and no value to compare.
                    compare = Compare(absent, target, op, operand)
                    expected = target != "value" and holds(0, operand)
                    assert (await store.txn([compare])).succeeded is expected, compare
        await store.revoke(lease)

    async def test_every_comparison_must_hold(self, store: LeaseStore, key_prefix: str) -> None:
        key = f"{key_prefix}/k"
        await store.put(key, b"v")
        holds, fails = Compare.value(key, "==", b"v"), Compare.absent(key)
        assert (await store.txn([holds, holds])).succeeded
        assert not (await store.txn([holds, fails])).succeeded
        assert not (await store.txn([fails, holds])).succeeded

    async def test_the_writes_take_one_revision_and_a_get_sees_them(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        new, old, gone = f"{key_prefix}/new", f"{key_prefix}/old", f"{key_prefix}/gone"
        created = await store.put(old, b"0")
        await store.put(gone, b"x")
        _, before = await store.get_prefix_kv(f"{key_prefix}/")
        result = await store.txn(
            [Compare.absent(new), Compare.value(old, "==", b"0")],
            [
                Get(new),
                Put(new, b"1"),
                Put(old, b"2"),
                Get(new),
                Delete(gone),
                Get(f"{key_prefix}/", prefix=True),
            ],
        )
        rev = before + 1
        new_kv = KeyValue(new, b"1", rev, rev, 1, None)
        old_kv = KeyValue(old, b"2", created, rev, 2, None)
        assert result == TxnResult(
            True,
            rev,
            (
                GetResult(()),
                PutResult(rev),
                PutResult(rev),
                GetResult((new_kv,)),
                DeleteResult(1),
                GetResult((new_kv, old_kv)),
            ),
        )
        assert await store.get_prefix_kv(f"{key_prefix}/") == ([new_kv, old_kv], rev)
        events = await collect(store, f"{key_prefix}/", rev, 3)
        assert events == [
            StoreEvent(EventType.PUT, new, b"1", rev, rev, 1, None),
            StoreEvent(EventType.PUT, old, b"2", rev, created, 2, None),
            StoreEvent(EventType.DELETE, gone, b"", rev),
        ]
        after = await store.put(f"{key_prefix}/next", b"")
        assert after == rev + 1

    async def test_the_failure_branch(self, store: LeaseStore, key_prefix: str) -> None:
        key, other = f"{key_prefix}/k", f"{key_prefix}/other"
        revision = await store.put(key, b"v")
        result = await store.txn(
            [Compare.mod_revision(key, "!=", revision)],
            [Put(key, b"success")],
            [Get(key), Put(other, b"failure")],
        )
        assert result == TxnResult(
            False,
            revision + 1,
            (
                GetResult((KeyValue(key, b"v", revision, revision, 1, None),)),
                PutResult(revision + 1),
            ),
        )
        assert (await store.get(key), await store.get(other)) == (
            KeyValue(key, b"v", revision, revision, 1, None),
            KeyValue(other, b"failure", revision + 1, revision + 1, 1, None),
        )

    async def test_a_txn_that_changes_nothing_keeps_the_revision(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        revision = await store.put(f"{key_prefix}/k", b"v")
        assert await store.txn([]) == TxnResult(True, revision, ())
        result = await store.txn(
            [Compare.absent(f"{key_prefix}/k")],
            [Put(f"{key_prefix}/k", b"not run")],
            [Delete(f"{key_prefix}/absent"), Delete(f"{key_prefix}/none/", prefix=True)],
        )
        assert result == TxnResult(False, revision, (DeleteResult(0), DeleteResult(0)))
        assert await store.put(f"{key_prefix}/k", b"w") == revision + 1

    async def test_prefixes(self, store: LeaseStore, key_prefix: str) -> None:
        for name in ("a/1", "a/2", "a", "b/1"):
            await store.put(f"{key_prefix}/{name}", name.encode())
        result = await store.txn(
            [],
            [
                Delete(f"{key_prefix}/a/", prefix=True),
                Get(f"{key_prefix}/", prefix=True),
                Delete(f"{key_prefix}/a/", prefix=True),
                Delete(f"{key_prefix}/a"),
            ],
        )
        rev = result.revision
        first, second, third, fourth = result.results
        assert (first, third, fourth) == (DeleteResult(2), DeleteResult(0), DeleteResult(1))
        assert isinstance(second, GetResult)
        assert [kv.key for kv in second.kvs] == [f"{key_prefix}/a", f"{key_prefix}/b/1"]
        events = await collect(store, f"{key_prefix}/", rev, 3)
        assert [(e.type, e.key, e.revision) for e in events] == [
            (EventType.DELETE, f"{key_prefix}/a/1", rev),
            (EventType.DELETE, f"{key_prefix}/a/2", rev),
            (EventType.DELETE, f"{key_prefix}/a", rev),
        ]

    async def test_a_put_deleted_in_one_branch_and_another_put_in_the_other(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        key = f"{key_prefix}/k"
        result = await store.txn([Compare.absent(key)], [Put(key, b"1")], [Delete(key)])
        assert result.succeeded
        result = await store.txn([Compare.absent(key)], [Put(key, b"1")], [Delete(key)])
        assert result == TxnResult(False, result.revision, (DeleteResult(1),))

    async def test_put_under_a_lease_and_compare_it(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        key = f"{key_prefix}/k"
        lease = await store.grant(60)
        result = await store.txn([Compare.lease(key, "==", None)], [Put(key, b"", lease), Get(key)])
        kv = KeyValue(key, b"", result.revision, result.revision, 1, lease.id)
        assert result.results == (PutResult(result.revision), GetResult((kv,)))
        assert (await store.txn([Compare.lease(key, "==", lease)])).succeeded
        assert (await store.txn([Compare.lease(key, ">", 0)])).succeeded
        assert not (await store.txn([Compare.lease(key, "!=", lease.id)])).succeeded
        await store.revoke(lease)
        assert await store.get(key) is None

    @pytest.mark.parametrize("branch", ["success", "failure"])
    async def test_a_gone_lease_on_the_branch_that_runs_writes_nothing(
        self, store: LeaseStore, key_prefix: str, branch: str
    ) -> None:
        lease = await store.grant(60)
        await store.revoke(lease)
        revision = await store.put(f"{key_prefix}/old", b"0")
        ops: list[TxnOp] = [
            Put(f"{key_prefix}/a", b"1"),
            Delete(f"{key_prefix}/old"),
            Put(f"{key_prefix}/b", b"2", lease),
        ]
        if branch == "success":
            compare, success, failure = [Compare.value(f"{key_prefix}/old", "==", b"0")], ops, []
        else:
            compare, success, failure = [Compare.absent(f"{key_prefix}/old")], [], ops
        with pytest.raises(LeaseExpired):
            await store.txn(compare, success, failure)
        assert await store.get_prefix_kv(f"{key_prefix}/") == (
            [KeyValue(f"{key_prefix}/old", b"0", revision, revision, 1, None)],
            revision,
        )

    async def test_a_gone_lease_on_the_branch_that_does_not_run_is_not_looked_at(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        key = f"{key_prefix}/k"
        lease = await store.grant(60)
        await store.revoke(lease)
        result = await store.txn([Compare.absent(key)], [Put(key, b"1")], [Put(key, b"2", lease)])
        assert result.succeeded
        result = await store.txn([Compare.absent(key)], [Put(key, b"3", lease)], [Put(key, b"4")])
        assert not result.succeeded
        kv = await store.get(key)
        assert kv is not None
        assert (kv.value, kv.version) == (b"4", 2)

    @pytest.mark.parametrize(
        ("compare", "success", "failure", "error", "message"),
        [
            (
                [Compare.absent("/x")] * (MAX_TXN_OPS + 1),
                [],
                [],
                ValueError,
                "compare has 129 comparisons, and a txn takes at most 128",
            ),
            (
                [],
                [Put("/x", b"")] + [Get(f"/x{i}") for i in range(MAX_TXN_OPS)],
                [],
                ValueError,
                "success has 129 operations, and a txn branch takes at most 128",
            ),
            (
                [],
                [],
                [Get(f"/x{i}") for i in range(MAX_TXN_OPS)] + [Put("/x", b"")],
                ValueError,
                "failure has 129 operations, and a txn branch takes at most 128",
            ),
            ([], [Put("/x", b"1"), Put("/x", b"2")], [], ValueError, "success puts key '/x' twice"),
            (
                [],
                [Put("/y", b"")],
                [Delete("/x/", prefix=True), Put("/x/y", b"")],
                ValueError,
                "failure puts key '/x/y' and deletes it",
            ),
            (
                [],
                [
                    Put("/x", b"x" * (MAX_VALUE_BYTES // 2)),
                    Put("/y", b"y" * (MAX_VALUE_BYTES // 2)),
                ],
                [],
                ValueError,
                "the txn is too large",
            ),
            (Compare.absent("/x"), [Put("/x", b"")], [], TypeError, "compare must be a sequence"),
            ([], Put("/x", b""), [], TypeError, "success must be a sequence"),
            ([], [Put("/x", b""), "/y"], [], TypeError, "success\\[1\\] must be a Put"),
            ([], [], {"/x": b""}, TypeError, "failure must be a sequence"),
        ],
    )
    async def test_bad_txns_are_refused_and_write_nothing(
        self,
        store: LeaseStore,
        key_prefix: str,
        compare: Any,
        success: Any,
        failure: Any,
        error: type[Exception],
        message: str,
    ) -> None:
        def mine(item: Any) -> Any:
            """The same item, under this test's keys."""
            if isinstance(item, (Compare, Put, Delete, Get)):
                return dataclasses.replace(item, key=key_prefix + item.key)
            if isinstance(item, list):
                return [mine(i) for i in item]
            return item

        revision = await store.put(f"{key_prefix}/before", b"")
        with pytest.raises(error, match=message.replace("'/", f"'{key_prefix}/")):
            await store.txn(mine(compare), mine(success), mine(failure))
        assert await store.get_prefix_kv(f"{key_prefix}/") == (
            [KeyValue(f"{key_prefix}/before", b"", revision, revision, 1, None)],
            revision,
        )

    async def test_the_largest_txns_go_through(self, store: LeaseStore, key_prefix: str) -> None:
        key = f"{key_prefix}/big"
        size = MAX_VALUE_BYTES - TXN_ITEM_BYTES - len(key)
        result = await store.txn([], [Put(key, b"x" * size)])
        assert result.succeeded
        # As many comparisons and operations as a txn takes, at the size limit.
        keys = [f"{key_prefix}/{i:03d}" for i in range(3 * MAX_TXN_OPS)]
        each = (MAX_VALUE_BYTES - sum(TXN_ITEM_BYTES + len(k) for k in keys)) // len(keys)
        value = b"v" * each
        compares = [Compare.value(k, "!=", value) for k in keys[:MAX_TXN_OPS]]
        success: list[TxnOp] = [Put(k, value) for k in keys[MAX_TXN_OPS : 2 * MAX_TXN_OPS]]
        failure: list[TxnOp] = [Put(k, value) for k in keys[2 * MAX_TXN_OPS :]]
        result = await store.txn(compares, success, failure)
        assert result.succeeded is False  # the compared keys are absent
        assert len(result.results) == MAX_TXN_OPS
