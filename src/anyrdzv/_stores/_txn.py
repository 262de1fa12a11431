"""Transactions: what a txn compares, what it does in each branch, and what it answers.

Pure: no I/O. The builders check their arguments when they are made, and
:func:`check_txn` checks a whole txn, before either store sends or applies any of it,
so that both stores refuse the same txns with the same errors and write nothing.

The semantics are etcd's (checked against etcd 3.4):

- A comparison on an absent key sees its version, create and mod revisions and lease
  as 0; a comparison of an absent key's *value* is false, whatever the operator.
- Every comparison must hold for the success branch to run; else the failure branch runs.
- The operations of the branch that runs apply in order (a :class:`Get` after a
  :class:`Put` of the same key sees the new value), and all its writes happen at one new
  revision. A txn that changes nothing, such as one whose deletes find no key, leaves
  the revision as it is.
- A :class:`Put` under a gone lease fails the txn with :class:`LeaseExpired`, and nothing
  is written; a gone lease in the branch that does not run is not looked at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias, TypeVar

from .._checks import check_bytes, check_int, cut, echo, is_int, type_name, wrong_type
from ._model import (
    MAX_VALUE_BYTES,
    KeyValue,
    Lease,
    check_key,
    check_lease_id,
    check_optional_lease,
    check_prefix,
    check_put,
)

__all__ = (
    "MAX_TXN_OPS",
    "TXN_ITEM_BYTES",
    "Compare",
    "CompareOp",
    "CompareTarget",
    "Delete",
    "DeleteResult",
    "Get",
    "GetResult",
    "Put",
    "PutResult",
    "TxnOp",
    "TxnOpResult",
    "TxnResult",
    "check_txn",
)

#: An operator of a :class:`Compare`.
CompareOp = Literal["==", "!=", "<", ">"]
#: The field of a key that a :class:`Compare` looks at.
CompareTarget = Literal["value", "version", "create_revision", "mod_revision", "lease"]

_OPS: tuple[CompareOp, ...] = ("==", "!=", "<", ">")
_TARGETS: tuple[CompareTarget, ...] = (
    "value",
    "version",
    "create_revision",
    "mod_revision",
    "lease",
)

#: The most comparisons a txn, and operations a branch, may hold: etcd's default
#: ``--max-txn-ops``.
MAX_TXN_OPS = 128

#: What :func:`check_txn` counts for each comparison and operation, on top of its keys
#: and values, when it bounds the size of a txn: more than etcd's encoding takes.
TXN_ITEM_BYTES = 64


def _utf8_size(text: str) -> int:
    return len(text.encode())


def _check_prefix_flag(prefix: object) -> bool:
    if not isinstance(prefix, bool):
        raise wrong_type("prefix", prefix, "a bool")
    return prefix


def _check_range_key(key: object, prefix: bool) -> str:
    """A key, or with ``prefix`` a prefix, which may be empty: every key."""
    return check_prefix(key, "key") if prefix else check_key(key)


def _in_range(key: str, start: str, prefix: bool) -> bool:
    return key.startswith(start) if prefix else key == start


@dataclass(frozen=True)
class Compare:
    """One comparison of a txn: a field of a key, against an operand.

    Make one with :meth:`value`, :meth:`version`, :meth:`create_revision`,
    :meth:`mod_revision`, :meth:`lease` or :meth:`absent`::

        Compare.mod_revision("/lock", "==", token)
        Compare.absent("/lock")

    An absent key's version, revisions and lease compare as 0, and a comparison of an
    absent key's value is false, whatever the operator: as in etcd.

    :ivar key: the key
    :ivar target: which field of the key: ``"value"``, ``"version"``,
        ``"create_revision"``, ``"mod_revision"`` or ``"lease"``
    :ivar op: ``"=="``, ``"!="``, ``"<"`` or ``">"``; values compare byte by byte
    :ivar operand: ``bytes`` for the value; an ``int`` of at least 0 for the others (a
        lease as its id, 0 for none)
    :raises TypeError: if a field has the wrong type
    :raises ValueError: if the key is empty, the operator or target unknown, or an
        ``int`` operand negative
    """

    key: str
    target: CompareTarget
    op: CompareOp
    operand: bytes | int

    def __post_init__(self) -> None:
        check_key(self.key)
        if self.target not in _TARGETS:
            raise ValueError(
                f"target must be one of {', '.join(map(repr, _TARGETS))}, got {echo(self.target)}"
            )
        if self.op not in _OPS:
            raise ValueError(f"op must be one of {', '.join(map(repr, _OPS))}, got {echo(self.op)}")
        if self.target == "value":
            check_bytes("value", self.operand)
        else:
            check_int(self.target, self.operand, least=0)

    @classmethod
    def value(cls, key: str, op: CompareOp, value: bytes) -> Compare:
        """Compare the key's value with ``value``, byte by byte. False if the key is absent.

        :param key: the key
        :param op: ``"=="``, ``"!="``, ``"<"`` or ``">"``
        :param value: the bytes to compare with
        :raises TypeError: if ``key`` is not a ``str``, or ``value`` not ``bytes``
        :raises ValueError: if ``key`` is empty or ``op`` unknown
        """
        return cls(key, "value", op, value)

    @classmethod
    def version(cls, key: str, op: CompareOp, version: int) -> Compare:
        """Compare how many puts the key has had since it was created (0 if absent).

        :param key: the key
        :param op: ``"=="``, ``"!="``, ``"<"`` or ``">"``
        :param version: the count to compare with, at least 0
        :raises TypeError: if ``key`` is not a ``str``, or ``version`` not an ``int``
        :raises ValueError: if ``key`` is empty, ``op`` unknown or ``version`` negative
        """
        return cls(key, "version", op, version)

    @classmethod
    def create_revision(cls, key: str, op: CompareOp, revision: int) -> Compare:
        """Compare the revision at which the key was created (0 if absent).

        :param key: the key
        :param op: ``"=="``, ``"!="``, ``"<"`` or ``">"``
        :param revision: the revision to compare with, at least 0
        :raises TypeError: if ``key`` is not a ``str``, or ``revision`` not an ``int``
        :raises ValueError: if ``key`` is empty, ``op`` unknown or ``revision`` negative
        """
        return cls(key, "create_revision", op, revision)

    @classmethod
    def mod_revision(cls, key: str, op: CompareOp, revision: int) -> Compare:
        """Compare the revision of the key's last put (0 if absent): its fencing token.

        :param key: the key
        :param op: ``"=="``, ``"!="``, ``"<"`` or ``">"``
        :param revision: the revision to compare with, at least 0
        :raises TypeError: if ``key`` is not a ``str``, or ``revision`` not an ``int``
        :raises ValueError: if ``key`` is empty, ``op`` unknown or ``revision`` negative
        """
        return cls(key, "mod_revision", op, revision)

    @classmethod
    def lease(cls, key: str, op: CompareOp, lease: Lease | int | None) -> Compare:
        """Compare the id of the lease the key lives under (0 if none, or absent).

        :param key: the key
        :param op: ``"=="``, ``"!="``, ``"<"`` or ``">"``
        :param lease: the lease, its id, or ``None`` for no lease
        :raises TypeError: if ``key`` is not a ``str``, or ``lease`` not one of those
        :raises ValueError: if ``key`` is empty, ``op`` unknown or the id negative
        """
        if lease is not None and not isinstance(lease, Lease) and not is_int(lease):
            raise wrong_type("lease", lease, "a Lease, an int or None")
        return cls(key, "lease", op, 0 if lease is None else check_lease_id(lease, least=0))

    @classmethod
    def absent(cls, key: str) -> Compare:
        """The key does not exist: its version is 0.

        :param key: the key
        :raises TypeError: if ``key`` is not a ``str``
        :raises ValueError: if ``key`` is empty
        """
        return cls(key, "version", "==", 0)

    def holds(self, kv: KeyValue | None) -> bool:
        """Whether the comparison holds for ``kv``, or for an absent key if ``None``.

        :param kv: the key as it is, or ``None`` if it is absent
        :return: what etcd would decide
        """
        operand = self.operand
        if isinstance(operand, bytes):
            # etcd: an absent key has no value, and no comparison of it holds.
            return kv is not None and _holds(self.op, kv.value, operand)
        return _holds(self.op, 0 if kv is None else _int_field(kv, self.target), operand)


_T = TypeVar("_T", bytes, int)


def _holds(op: CompareOp, current: _T, operand: _T) -> bool:
    if op == "==":
        return current == operand
    if op == "!=":
        return current != operand
    if op == "<":
        return current < operand
    return current > operand


def _int_field(kv: KeyValue, target: CompareTarget) -> int:
    if target == "version":
        return kv.version
    if target == "create_revision":
        return kv.create_revision
    if target == "mod_revision":
        return kv.mod_revision
    return kv.lease or 0


@dataclass(frozen=True)
class Put:
    """Set ``key`` to ``value`` in a txn, under ``lease`` if given.

    :ivar key: the key, not empty
    :ivar value: its new value
    :ivar lease: the lease to put it under, a :class:`Lease` or its id; or ``None``: a
        put without a lease takes the key out of the lease it was under
    :raises TypeError: if a field has the wrong type
    :raises ValueError: if the key is empty, the key and value together are over 1.5 MiB
        (etcd's limit on a request), or the lease id is out of range
    """

    key: str
    value: bytes
    lease: Lease | int | None = None

    def __post_init__(self) -> None:
        check_put(self.key, self.value)
        check_optional_lease(self.lease)


@dataclass(frozen=True)
class Delete:
    """Delete ``key`` in a txn, or with ``prefix=True`` every key that starts with it.

    :ivar key: the key, not empty; with ``prefix``, the prefix ("" for every key)
    :ivar prefix: whether ``key`` is a prefix
    :raises TypeError: if a field has the wrong type
    :raises ValueError: if the key is empty and ``prefix`` is false
    """

    key: str
    prefix: bool = False

    def __post_init__(self) -> None:
        _check_range_key(self.key, _check_prefix_flag(self.prefix))


@dataclass(frozen=True)
class Get:
    """Read ``key`` in a txn, or with ``prefix=True`` every key that starts with it.

    It sees the writes that come before it in its branch.

    :ivar key: the key, not empty; with ``prefix``, the prefix ("" for every key)
    :ivar prefix: whether ``key`` is a prefix
    :raises TypeError: if a field has the wrong type
    :raises ValueError: if the key is empty and ``prefix`` is false
    """

    key: str
    prefix: bool = False

    def __post_init__(self) -> None:
        _check_range_key(self.key, _check_prefix_flag(self.prefix))


#: An operation of a txn.
TxnOp: TypeAlias = Put | Delete | Get


@dataclass(frozen=True)
class GetResult:
    """What a :class:`Get` read.

    :ivar kvs: the keys found, sorted by key (UTF-8 bytes, as etcd sorts them)
    """

    kvs: tuple[KeyValue, ...]


@dataclass(frozen=True)
class PutResult:
    """What a :class:`Put` did.

    :ivar revision: the revision it wrote the key at: the txn's new revision
    """

    revision: int


@dataclass(frozen=True)
class DeleteResult:
    """What a :class:`Delete` did.

    :ivar deleted: how many keys it deleted (0 if none existed)
    """

    deleted: int


#: The answer to one operation of a txn.
TxnOpResult: TypeAlias = GetResult | PutResult | DeleteResult


@dataclass(frozen=True)
class TxnResult:
    """What :meth:`LeaseStore.txn` did.

    :ivar succeeded: whether every comparison held, so that the success branch ran
        (else the failure branch ran)
    :ivar revision: the store revision after the txn: the revision of its writes, if it
        wrote anything
    :ivar results: one answer for each operation of the branch that ran, in order
    """

    succeeded: bool
    revision: int
    results: tuple[TxnOpResult, ...]


def _items(name: str, items: object, what: str) -> Sequence[object]:
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise TypeError(
            f"{name} must be a sequence of {what}, got {type_name(items)} {echo(items)}"
        )
    return items


def _bad_item(name: str, index: int, what: str, item: object) -> TypeError:
    return TypeError(f"{name}[{index}] must be a {what}, got {type_name(item)} {echo(item)}")


def _compares(items: object) -> tuple[Compare, ...]:
    checked: list[Compare] = []
    for index, item in enumerate(_items("compare", items, "Compare")):
        if not isinstance(item, Compare):
            raise _bad_item("compare", index, "Compare", item)
        checked.append(item)
    if len(checked) > MAX_TXN_OPS:
        raise ValueError(
            f"compare has {len(checked)} comparisons, and a txn takes at most "
            f"{MAX_TXN_OPS} (etcd's --max-txn-ops)"
        )
    return tuple(checked)


def _ops(name: str, items: object) -> tuple[TxnOp, ...]:
    what = "Put, Delete or Get"
    checked: list[TxnOp] = []
    for index, item in enumerate(_items(name, items, what)):
        if not isinstance(item, (Put, Delete, Get)):
            raise _bad_item(name, index, what, item)
        checked.append(item)
    _check_branch(name, checked)
    return tuple(checked)


def _check_branch(name: str, ops: list[TxnOp]) -> None:
    """Refuse a branch that writes one key twice, as etcd does (its "duplicate key")."""
    if len(ops) > MAX_TXN_OPS:
        raise ValueError(
            f"{name} has {len(ops)} operations, and a txn branch takes at most "
            f"{MAX_TXN_OPS} (etcd's --max-txn-ops)"
        )
    puts: set[str] = set()
    deletes = [op for op in ops if isinstance(op, Delete)]
    for op in ops:
        if not isinstance(op, Put):
            continue
        if op.key in puts:
            raise ValueError(
                f"{name} puts key {cut(repr(op.key))} twice: a txn branch may write a key "
                "once (etcd refuses a duplicate key)"
            )
        puts.add(op.key)
        for delete in deletes:
            # etcd 3.4 misses this when the delete's range runs to the end of the key
            # space (the prefix ""); both stores refuse it anyway.
            if _in_range(op.key, delete.key, delete.prefix):
                what = f"prefix {cut(repr(delete.key))}" if delete.prefix else "key"
                raise ValueError(
                    f"{name} puts key {cut(repr(op.key))} and deletes it (the delete of "
                    f"{what}): a txn branch may write a key once (etcd refuses a duplicate "
                    "key)"
                )


def _size(item: Compare | TxnOp) -> int:
    """The bytes :func:`check_txn` counts for one comparison or operation."""
    size = TXN_ITEM_BYTES + _utf8_size(item.key)
    if isinstance(item, (Get, Delete)) and item.prefix:
        size += _utf8_size(item.key)  # the range's end
    elif isinstance(item, Put):
        size += len(item.value)
    elif isinstance(item, Compare) and isinstance(item.operand, bytes):
        size += len(item.operand)
    return size


def check_txn(
    compare: object, success: object, failure: object
) -> tuple[tuple[Compare, ...], tuple[TxnOp, ...], tuple[TxnOp, ...]]:
    """Check the arguments of :meth:`LeaseStore.txn`, and return them as tuples.

    Both stores call it before they send or apply anything, so they refuse the same
    txns, with the same errors, and write nothing.

    :raises TypeError: if an argument is not a sequence of :class:`Compare`, or of
        :class:`Put`, :class:`Delete` and :class:`Get`
    :raises ValueError: if there are more than :data:`MAX_TXN_OPS` comparisons, or
        operations in a branch; if a branch writes one key twice (two puts, or a put and
        a delete that covers it); or if the txn is too large: its keys and values, with
        :data:`TXN_ITEM_BYTES` for each comparison and operation, over
        :data:`~._model.MAX_VALUE_BYTES`
    """
    compares = _compares(compare)
    on_success = _ops("success", success)
    on_failure = _ops("failure", failure)
    size = sum(map(_size, (*compares, *on_success, *on_failure)))
    if size > MAX_VALUE_BYTES:
        raise ValueError(
            f"the txn is too large: its keys and values hold {size} bytes, counting "
            f"{TXN_ITEM_BYTES} for each comparison and operation, and a store takes at "
            f"most {MAX_VALUE_BYTES} (etcd refuses requests over 1.5 MiB)"
        )
    return compares, on_success, on_failure
