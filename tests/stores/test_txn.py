"""The txn builders and check_txn: what they take, what they refuse, and how they say so."""

from __future__ import annotations

import operator
import re
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anyrdzv import (
    Compare,
    Delete,
    DeleteResult,
    Get,
    GetResult,
    KeyValue,
    Lease,
    Put,
    PutResult,
    TxnResult,
)
from anyrdzv._stores._model import MAX_VALUE_BYTES
from anyrdzv._stores._txn import MAX_TXN_OPS, TXN_ITEM_BYTES, check_txn

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyrdzv._stores._txn import CompareOp, TxnOp

OPS: list[CompareOp] = ["==", "!=", "<", ">"]
PYTHON_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
INT_TARGETS = ["version", "create_revision", "mod_revision"]


class TestCompare:
    def test_constructors(self) -> None:
        assert Compare.value("/k", "==", b"v") == Compare("/k", "value", "==", b"v")
        assert Compare.version("/k", "!=", 2) == Compare("/k", "version", "!=", 2)
        assert Compare.create_revision("/k", "<", 3) == Compare("/k", "create_revision", "<", 3)
        assert Compare.mod_revision("/k", ">", 4) == Compare("/k", "mod_revision", ">", 4)
        assert Compare.absent("/k") == Compare("/k", "version", "==", 0)

    def test_a_lease_is_its_id_and_none_is_zero(self) -> None:
        assert Compare.lease("/k", "==", Lease(7, 10)).operand == 7
        assert Compare.lease("/k", "==", 7).operand == 7
        assert Compare.lease("/k", "==", None).operand == 0

    def test_frozen(self) -> None:
        compare = Compare.absent("/k")
        with pytest.raises(AttributeError):
            compare.key = "/other"  # type: ignore[misc]

    @pytest.mark.parametrize(
        "make",
        [
            lambda op: Compare.value("/k", op, b""),
            lambda op: Compare.version("/k", op, 0),
            lambda op: Compare.create_revision("/k", op, 0),
            lambda op: Compare.mod_revision("/k", op, 0),
            lambda op: Compare.lease("/k", op, None),
        ],
    )
    @pytest.mark.parametrize("op", ["=", "<=", ">=", "eq", "", "EQUAL"])
    def test_an_unknown_op_is_named(self, make: Callable[[object], Compare], op: str) -> None:
        expected = f"op must be one of '==', '!=', '<', '>', got {op!r}"
        with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
            make(op)

    def test_an_unknown_target_is_named(self) -> None:
        with pytest.raises(ValueError, match="^target must be one of 'value', .*got 'size'$"):
            Compare("/k", "size", "==", 0)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("make", "message"),
        [
            (lambda: Compare.version("/k", "==", -1), "version must be at least 0, got -1"),
            (
                lambda: Compare.create_revision("/k", "==", -5),
                "create_revision must be at least 0, got -5",
            ),
            (
                lambda: Compare.mod_revision("/k", "==", -1),
                "mod_revision must be at least 0, got -1",
            ),
            (lambda: Compare.lease("/k", "==", -2), "lease must be at least 0, got -2"),
            (lambda: Compare.value("", "==", b""), "key must not be empty"),
            (lambda: Compare.absent(""), "key must not be empty"),
        ],
    )
    def test_bad_values(self, make: Callable[[], Compare], message: str) -> None:
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            make()

    @pytest.mark.parametrize(
        ("make", "message"),
        [
            (lambda: Compare.version("/k", "==", True), "version must be an int, got bool True"),
            (lambda: Compare.version("/k", "==", 1.0), "version must be an int, got float 1.0"),  # type: ignore[arg-type]
            (
                lambda: Compare.mod_revision("/k", "==", "3"),  # type: ignore[arg-type]
                "mod_revision must be an int, got str '3'",
            ),
            (lambda: Compare.value("/k", "==", "v"), "value must be bytes, got str 'v'"),  # type: ignore[arg-type]
            (lambda: Compare.value("/k", "==", 1), "value must be bytes, got int 1"),  # type: ignore[arg-type]
            (
                lambda: Compare.lease("/k", "==", "7"),  # type: ignore[arg-type]
                "lease must be a Lease, an int or None, got str '7'",
            ),
            (
                lambda: Compare.lease("/k", "==", False),
                "lease must be a Lease, an int or None, got bool False",
            ),
            (lambda: Compare.absent(b"/k"), "key must be a str, got bytes b'/k'"),  # type: ignore[arg-type]
            (lambda: Compare("/k", "version", "==", b"1"), "version must be an int, got bytes"),
        ],
    )
    def test_wrong_types(self, make: Callable[[], Compare], message: str) -> None:
        with pytest.raises(TypeError, match=f"^{re.escape(message)}"):
            make()

    def test_a_long_bad_value_is_cut_in_the_message(self) -> None:
        with pytest.raises(TypeError) as info:
            Compare.value("/k", "==", "x" * 100_000)  # type: ignore[arg-type]
        assert len(str(info.value)) < 400

    @given(st.text(), st.sampled_from(["value", "version", "lease"]))
    def test_any_op_builds_or_is_a_value_error(self, op: str, target: str) -> None:
        operand: object = b"" if target == "value" else 0
        if op in OPS:
            assert Compare("/k", target, op, operand).op == op  # type: ignore[arg-type]
        else:
            with pytest.raises(ValueError, match="^op must be one of"):
                Compare("/k", target, op, operand)  # type: ignore[arg-type]

    @given(st.one_of(st.integers(), st.binary(), st.text(), st.none(), st.floats(), st.booleans()))
    def test_any_operand_builds_or_is_a_type_or_value_error(self, operand: object) -> None:
        for target in ("value", "version", "create_revision", "mod_revision", "lease"):
            try:
                compare = Compare("/k", target, "==", operand)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
            if target == "value":
                assert isinstance(compare.operand, bytes)
            else:
                assert isinstance(compare.operand, int)
                assert not isinstance(compare.operand, bool)
                assert compare.operand >= 0


class TestHolds:
    KV = KeyValue("/k", b"m", create_revision=5, mod_revision=9, version=3, lease=77)

    @pytest.mark.parametrize("op", OPS)
    @pytest.mark.parametrize("target", INT_TARGETS)
    @pytest.mark.parametrize("delta", [-1, 0, 1])
    def test_int_targets(self, op: CompareOp, target: str, delta: int) -> None:
        current: int = getattr(self.KV, target)
        compare = Compare("/k", target, op, current + delta)  # type: ignore[arg-type]
        assert compare.holds(self.KV) is PYTHON_OPS[op](current, current + delta)

    @pytest.mark.parametrize("op", OPS)
    @pytest.mark.parametrize("value", [b"", b"l", b"m", b"m\x00", b"n", b"\xff"])
    def test_values_compare_byte_by_byte(self, op: CompareOp, value: bytes) -> None:
        assert Compare.value("/k", op, value).holds(self.KV) is PYTHON_OPS[op](b"m", value)

    @pytest.mark.parametrize("op", OPS)
    @pytest.mark.parametrize("lease", [None, 76, 77, 78])
    def test_lease(self, op: CompareOp, lease: int | None) -> None:
        expected = PYTHON_OPS[op](77, lease or 0)
        assert Compare.lease("/k", op, lease).holds(self.KV) is expected
        no_lease = KeyValue("/k", b"", 1, 1, 1, None)
        assert Compare.lease("/k", op, lease).holds(no_lease) is PYTHON_OPS[op](0, lease or 0)

    @pytest.mark.parametrize("op", OPS)
    @pytest.mark.parametrize("target", [*INT_TARGETS, "lease"])
    @pytest.mark.parametrize("operand", [0, 1])
    def test_an_absent_key_compares_as_zero(self, op: CompareOp, target: str, operand: int) -> None:
        compare = Compare("/k", target, op, operand)  # type: ignore[arg-type]
        assert compare.holds(None) is PYTHON_OPS[op](0, operand)

    @pytest.mark.parametrize("op", OPS)
    @pytest.mark.parametrize("value", [b"", b"x"])
    def test_no_value_comparison_holds_for_an_absent_key(self, op: CompareOp, value: bytes) -> None:
        assert Compare.value("/k", op, value).holds(None) is False

    def test_absent(self) -> None:
        assert Compare.absent("/k").holds(None)
        assert not Compare.absent("/k").holds(self.KV)


class TestOps:
    def test_defaults(self) -> None:
        assert Put("/k", b"v") == Put("/k", b"v", None)
        assert Delete("/k") == Delete("/k", prefix=False)
        assert Get("/k") == Get("/k", prefix=False)

    def test_the_empty_prefix_is_every_key(self) -> None:
        assert Delete("", prefix=True).key == ""
        assert Get("", prefix=True).key == ""

    @pytest.mark.parametrize("kind", [Delete, Get])
    def test_an_empty_key_needs_prefix(self, kind: Callable[[str], object]) -> None:
        with pytest.raises(ValueError, match="^key must not be empty$"):
            kind("")

    @pytest.mark.parametrize(
        ("make", "error", "message"),
        [
            (lambda: Put("", b""), ValueError, "key must not be empty"),
            (lambda: Put(b"/k", b""), TypeError, "key must be a str, got bytes"),  # type: ignore[arg-type]
            (lambda: Put("/k", "v"), TypeError, "value must be bytes, got str"),  # type: ignore[arg-type]
            (
                lambda: Put("/k", b"", "5"),  # type: ignore[arg-type]
                TypeError,
                "lease must be a Lease, an int or None, got str '5'",
            ),
            (lambda: Delete(None), TypeError, "key must be a str, got NoneType"),  # type: ignore[arg-type]
            (lambda: Get(1, prefix=True), TypeError, "key must be a str, got int"),  # type: ignore[arg-type]
            (lambda: Get("/k", prefix=1), TypeError, "prefix must be a bool, got int 1"),  # type: ignore[arg-type]
            (lambda: Delete("/k", "yes"), TypeError, "prefix must be a bool, got str 'yes'"),  # type: ignore[arg-type]
        ],
    )
    def test_bad_arguments(
        self, make: Callable[[], object], error: type[Exception], message: str
    ) -> None:
        with pytest.raises(error, match=f"^{re.escape(message)}"):
            make()

    def test_a_put_too_large(self) -> None:
        Put("/k", b"x" * (MAX_VALUE_BYTES - 2))
        with pytest.raises(ValueError, match="^value is too large"):
            Put("/k", b"x" * (MAX_VALUE_BYTES - 1))

    def test_results(self) -> None:
        result = TxnResult(True, 5, (GetResult(()), PutResult(5), DeleteResult(2)))
        assert result.results[2] == DeleteResult(deleted=2)


class TestCheckTxn:
    def test_returns_tuples(self) -> None:
        compares = [Compare.absent("/a")]
        assert check_txn(compares, [Put("/a", b"")], (Get("/a"),)) == (
            (Compare.absent("/a"),),
            (Put("/a", b""),),
            (Get("/a"),),
        )
        assert check_txn((), (), ()) == ((), (), ())

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (
                (Compare.absent("/a"), (), ()),
                "compare must be a sequence of Compare, got Compare Compare(",
            ),
            (((), Put("/a", b""), ()), "success must be a sequence of Put, Delete or Get, got Put"),
            (((), (), "/a"), "failure must be a sequence of Put, Delete or Get, got str '/a'"),
            (((), (), None), "failure must be a sequence of Put, Delete or Get, got NoneType"),
            (((), iter([Get("/a")]), ()), "success must be a sequence of Put, Delete or Get"),
            (([Compare.absent("/a"), "/b"], (), ()), "compare[1] must be a Compare, got str '/b'"),
            (
                ((), [Get("/a"), Compare.absent("/a")], ()),
                "success[1] must be a Put, Delete or Get",
            ),
            (((), (), [None]), "failure[0] must be a Put, Delete or Get, got NoneType None"),
        ],
    )
    def test_wrong_types_are_named(self, args: tuple[object, object, object], message: str) -> None:
        with pytest.raises(TypeError, match=f"^{re.escape(message)}"):
            check_txn(*args)

    def test_at_most_128_comparisons(self) -> None:
        check_txn([Compare.absent("/a")] * MAX_TXN_OPS, (), ())
        message = "compare has 129 comparisons, and a txn takes at most 128 (etcd's --max-txn-ops)"
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            check_txn([Compare.absent("/a")] * (MAX_TXN_OPS + 1), (), ())

    @pytest.mark.parametrize("branch", ["success", "failure"])
    def test_at_most_128_operations_a_branch(self, branch: str) -> None:
        ops = [Get(f"/k{i}") for i in range(MAX_TXN_OPS)]
        check_txn((), ops, ops)
        many = [*ops, Delete("/x")]
        args: dict[str, object] = {"compare": (), "success": (), "failure": (), branch: many}
        message = (
            f"{branch} has 129 operations, and a txn branch takes at most 128 "
            "(etcd's --max-txn-ops)"
        )
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            check_txn(**args)

    @pytest.mark.parametrize(
        ("ops", "message"),
        [
            (
                [Put("/a", b"1"), Put("/a", b"2")],
                "success puts key '/a' twice: a txn branch may write a key once",
            ),
            (
                [Put("/a", b"1"), Delete("/a")],
                "success puts key '/a' and deletes it (the delete of key)",
            ),
            (
                [Delete("/a"), Get("/a"), Put("/a", b"1")],
                "success puts key '/a' and deletes it (the delete of key)",
            ),
            (
                [Delete("/a/", prefix=True), Put("/a/b", b"1")],
                "success puts key '/a/b' and deletes it (the delete of prefix '/a/')",
            ),
            (
                [Put("/a/b", b"1"), Delete("/a/b", prefix=True)],
                "success puts key '/a/b' and deletes it (the delete of prefix '/a/b')",
            ),
            # etcd 3.4 lets this one through; both stores refuse it.
            (
                [Put("/a", b"1"), Delete("", prefix=True)],
                "success puts key '/a' and deletes it (the delete of prefix '')",
            ),
        ],
    )
    def test_a_branch_writes_a_key_once(self, ops: list[TxnOp], message: str) -> None:
        with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
            check_txn((), ops, ())
        with pytest.raises(
            ValueError, match=f"^{re.escape(message.replace('success', 'failure'))}"
        ):
            check_txn((), (), ops)

    @pytest.mark.parametrize(
        "ops",
        [
            [Delete("/a"), Delete("/a")],
            [Delete("/a/", prefix=True), Delete("/a/b")],
            [Put("/a", b""), Get("/a"), Get("/a")],
            [Put("/a", b""), Delete("/a/", prefix=True), Delete("/b")],
            [Put("/ab", b""), Delete("/a")],
        ],
    )
    def test_what_a_branch_may_hold(self, ops: list[TxnOp]) -> None:
        check_txn((), ops, ops)

    def test_the_branches_are_apart(self) -> None:
        check_txn((), [Put("/a", b"1")], [Put("/a", b"2"), Delete("/b")])

    def test_the_largest_txn(self) -> None:
        key = "/k"
        check_txn((), [Put(key, b"x" * (MAX_VALUE_BYTES - TXN_ITEM_BYTES - len(key)))], ())
        with pytest.raises(ValueError, match="^the txn is too large: its keys and values hold"):
            check_txn((), [Put(key, b"x" * (MAX_VALUE_BYTES - TXN_ITEM_BYTES - len(key) + 1))], ())

    def test_everything_counts_toward_the_size(self) -> None:
        half = b"x" * (MAX_VALUE_BYTES // 2)
        message = (
            f"the txn is too large: its keys and values hold {2 * len(half) + 2 * 66} bytes, "
            f"counting 64 for each comparison and operation, and a store takes at most "
            f"{MAX_VALUE_BYTES} (etcd refuses requests over 1.5 MiB)"
        )
        for args in (
            ([Compare.value("/a", "==", half)], [Put("/b", half)], ()),
            ((), [Put("/a", half)], [Put("/b", half)]),
            ([Compare.value("/a", "==", half), Compare.value("/b", "!=", half)], (), ()),
        ):
            with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
                check_txn(*args)

    def test_prefix_ranges_count_their_end(self) -> None:
        key = "/" + "p" * 4000
        ops = [Get(key, prefix=True)] * 128
        with pytest.raises(ValueError, match="too large"):
            check_txn((), ops, ops)  # 2 x 128 x (64 + 2 x 4001): over; without the ends, not


keys = st.sampled_from(["/a", "/a/b", "/a/c", "/b", "/ab"])
prefixes = st.sampled_from(["", "/", "/a", "/a/", "/b"])
txn_ops = st.one_of(
    st.builds(Put, keys, st.sampled_from([b"", b"v"])),
    st.builds(Delete, keys),
    st.builds(Delete, prefixes, st.just(True)),
    st.builds(Get, keys),
    st.builds(Get, prefixes, st.just(True)),
)


def _writes_a_key_twice(ops: list[TxnOp]) -> bool:
    """The rule, written out plainly: two puts of a key, or a put within a delete."""
    puts = [op.key for op in ops if isinstance(op, Put)]
    deletes = [op for op in ops if isinstance(op, Delete)]
    return len(puts) != len(set(puts)) or any(
        key.startswith(d.key) if d.prefix else key == d.key for key in puts for d in deletes
    )


@given(st.lists(txn_ops, max_size=8), st.lists(txn_ops, max_size=8))
def test_check_txn_refuses_exactly_the_branches_that_write_a_key_twice(
    success: list[TxnOp], failure: list[TxnOp]
) -> None:
    if _writes_a_key_twice(success) or _writes_a_key_twice(failure):
        with pytest.raises(ValueError, match="a txn branch may write a key once"):
            check_txn((), success, failure)
    else:
        assert check_txn((), success, failure) == ((), tuple(success), tuple(failure))


@given(st.one_of(st.none(), st.integers(), st.text(), st.lists(st.one_of(st.none(), txn_ops))))
def test_check_txn_takes_anything_and_raises_only_type_and_value_errors(value: object) -> None:
    for args in ((value, (), ()), ((), value, ()), ((), (), value)):
        try:
            check_txn(*args)
        except (TypeError, ValueError):
            pass
