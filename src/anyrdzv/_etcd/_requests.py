"""Each store operation as an etcd request: its path and payload, whether it may be sent
again after a passing fault, whether it goes ahead of the queue, and its answer in the
store's model. Arguments come checked (the facade's job); the answers are read by
:mod:`._wire` and :mod:`._convert`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._exceptions import LeaseExpired
from .._stores._model import CasResult, Lease
from .._stores._txn import Put
from . import _wire
from ._convert import key_value, key_values, txn_result

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._stores._model import KeyValue
    from .._stores._txn import Compare, TxnOp, TxnResult
    from ._gateway import Gateway

_RANGE = "/v3/kv/range"
_DELETE = "/v3/kv/deleterange"
_TXN = "/v3/kv/txn"


async def grant(gateway: Gateway, ttl: int) -> Lease:
    path = "/v3/lease/grant"
    body = await gateway.call(path, {"TTL": str(ttl)})
    lease_id, granted = _wire.grant(path, body, ttl)
    return Lease(lease_id, granted)


async def revoke(gateway: Gateway, lease_id: int) -> None:
    """Revoke a lease, ahead of the queue; a gone lease is not an error."""
    try:
        await gateway.call("/v3/lease/revoke", {"ID": str(lease_id)}, urgent=True)
    except LeaseExpired:
        pass


async def time_to_live(gateway: Gateway, lease_id: int) -> int | None:
    path = "/v3/lease/timetolive"
    try:
        body = await gateway.call(path, {"ID": str(lease_id)})
    except LeaseExpired:
        return None
    return _wire.time_to_live(path, body)


async def put(gateway: Gateway, key: str, value: bytes, lease_id: int | None) -> int:
    path = "/v3/kv/put"
    payload: dict[str, Any] = {"key": _wire.b64_text(key), "value": _wire.b64(value)}
    if lease_id is not None:
        payload["lease"] = str(lease_id)
    # A put under a lease is a member joining: its lease is already ticking.
    answer = await gateway.call(path, payload, urgent=lease_id is not None)
    return _wire.revision(path, answer)


async def get(gateway: Gateway, key: str) -> KeyValue | None:
    body = await gateway.call(_RANGE, {"key": _wire.b64_text(key)})
    kvs, _ = _wire.range_result(_RANGE, body)
    raw_key = key.encode()
    for kv in kvs:
        if kv.key == raw_key:
            return key_value(kv, key)
    return None


async def get_prefix(gateway: Gateway, prefix: str) -> tuple[list[KeyValue], int]:
    """Every key under ``prefix`` whose key is text, sorted, and the revision read at."""
    body = await gateway.call(_RANGE, _wire.prefix_range(prefix))
    kvs, revision = _wire.range_result(_RANGE, body)
    return key_values(kvs, what=prefix, server=gateway.where), revision


async def count_prefix(gateway: Gateway, prefix: str) -> int:
    """How many keys are under ``prefix``: etcd counts them and sends none."""
    body = await gateway.call(_RANGE, {**_wire.prefix_range(prefix), "count_only": True})
    return _wire.count_result(_RANGE, body)


async def delete(gateway: Gateway, keys: dict[str, str]) -> int:
    """Delete ``keys`` (a key, or a range); not sent again after a passing fault, since
    a retry could not tell what the first try deleted. Return how many were deleted."""
    body = await gateway.call(_DELETE, keys, retry=False)
    count, _ = _wire.deleted(_DELETE, body)
    return count


async def compare_and_swap(
    gateway: Gateway, key: str, value: bytes, expected_mod_revision: int, lease_id: int | None
) -> CasResult:
    """One txn, not sent again after a passing fault: a retry of a swap that went
    through would fail against its own write."""
    request = _wire.compare_and_swap_request(key, value, expected_mod_revision, lease_id)
    body = await gateway.call(_TXN, request, retry=False, urgent=lease_id is not None)
    succeeded, raw = _wire.compare_and_swap_result(_TXN, body, key)
    return CasResult(succeeded, None if raw is None else key_value(raw, key))


async def txn(
    gateway: Gateway,
    compares: Sequence[Compare],
    on_success: Sequence[TxnOp],
    on_failure: Sequence[TxnOp],
) -> TxnResult:
    """One txn, not sent again after a passing fault: a retry of a txn that went
    through would meet its own writes."""
    request = _wire.txn_request(compares, on_success, on_failure)
    # A put under a lease is a member joining: its lease is already ticking.
    urgent = any(isinstance(op, Put) and op.lease is not None for op in (*on_success, *on_failure))
    body = await gateway.call(_TXN, request, retry=False, urgent=urgent)
    answer = _wire.txn_answer(_TXN, body, on_success, on_failure)
    ran = on_success if answer.succeeded else on_failure
    return txn_result(answer, ran, server=gateway.where)
