"""The etcd v3 JSON gateway's wire format: encoding requests, decoding every answer and
watch line, and the one mapping from the gateway's errors to anyrdzv's.

Pure: no I/O, no event loop. Every decoder takes what the server sent, whatever it is,
and either returns typed values or raises a :class:`StoreError` subclass, never anything
else (a hypothesis test feeds them arbitrary bytes and JSON).

What the gateway sends (etcd 3.4): int64 fields come as JSON strings; fields that are
false, zero or empty are left out; keys and values are base64.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._checks import MAX_ECHO, echo
from .._exceptions import (
    LeaseExpired,
    StoreConnectionError,
    StoreError,
    StorePermissionError,
    StoreProtocolError,
)
from .._stores._model import EventType, lease_id_of
from .._stores._txn import Compare, Delete, Get, Put, TxnOp

if TYPE_CHECKING:
    from collections.abc import Sequence

# gRPC status codes, as the gateway reports them.
_CANCELLED = 1
_DEADLINE_EXCEEDED = 4
_NOT_FOUND = 5
_PERMISSION_DENIED = 7
_UNAVAILABLE = 14
_UNAUTHENTICATED = 16
_RETRYABLE_CODES = frozenset({_CANCELLED, _DEADLINE_EXCEEDED, _UNAVAILABLE})
# What etcd says when it cannot serve a request now, whatever the code: a leader
# election, a member shutting down, the gateway's own gRPC hop closing.
_RETRYABLE_MESSAGES = (
    "no leader",
    "leader changed",
    "stopping",
    "server stopped",
    "raft: stopped",
    "transport is closing",
    "connection is closing",
    "connection refused",
    "request timed out",
    "timed out waiting for read index",
    "too many requests",
    "not capable",
    "unhealthy cluster",
)
# etcd 3.4 reports these auth failures as InvalidArgument (code 3), so the text decides.
_AUTH_MESSAGES = (
    "user name is empty",
    "authentication failed",
    "invalid auth token",
    "permission denied",
    "revision of auth store is old",
    "auth: ",
)
# The token is gone or stale: logging in again fixes these.
_TOKEN_MESSAGES = ("invalid auth token", "revision of auth store is old", "user name is empty")
# Proxies' answers when the server behind them is away: a passing fault.
_GATEWAY_DOWN_STATUSES = frozenset({502, 503, 504})


class InvalidToken(StorePermissionError):
    """etcd did not accept the auth token: it expired, or the member restarted."""


def b64(data: bytes) -> str:
    """Encode bytes for a JSON field."""
    return base64.b64encode(data).decode("ascii")


def b64_text(text: str) -> str:
    """Encode a key for a JSON field, as UTF-8."""
    return b64(text.encode())


def prefix_start(prefix: str) -> str:
    """The ``key`` that starts a range of every key with ``prefix``, encoded.

    etcd takes no empty key: the empty prefix starts at ``\\0``, below every key.
    """
    return b64_text(prefix) if prefix else b64(b"\0")


def prefix_end(prefix: str) -> str:
    """The ``range_end`` that selects every key starting with ``prefix``, encoded."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b64(b"\0")  # the whole key space
    raw[-1] += 1
    return b64(bytes(raw))


def prefix_range(prefix: str) -> dict[str, str]:
    """The ``key`` and ``range_end`` of a request for every key under ``prefix``."""
    return {"key": prefix_start(prefix), "range_end": prefix_end(prefix)}


def encode(payload: object) -> bytes:
    """A request body."""
    return json.dumps(payload, separators=(",", ":")).encode()


# -- errors -------------------------------------------------------------------------------


def _is_retryable(code: object, message: str) -> bool:
    return code in _RETRYABLE_CODES or any(text in message for text in _RETRYABLE_MESSAGES)


def _decoded_key(field: object) -> str | None:
    if not isinstance(field, str):
        return None
    try:
        return base64.b64decode(field, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return None


def _request_keys(request: object) -> list[str]:
    """What keys ``request`` (a request's JSON object) names, for a message: ``'/a'``,
    or ``under '/p/'`` for a prefix; those of a txn's compares and ops too."""
    found: list[str] = []

    def visit(item: object) -> None:
        if isinstance(item, list):
            for each in item:
                visit(each)
            return
        if not isinstance(item, dict):
            return
        key = _decoded_key(item.get("key"))
        if key is not None:
            end = item.get("range_end")
            if end is None:
                found.append(repr(key))
            elif end == prefix_end(key):
                found.append(f"under {key!r}")
            else:
                found.append(f"from {key!r} to {_decoded_key(end)!r}")
        for name, value in item.items():
            if name not in ("key", "range_end", "value"):
                visit(value)

    visit(request)
    return list(dict.fromkeys(found))


def _refused(path: str, message: str, request: object, user: str | None) -> str:
    """What a refused request says: the keys it named, and the user it ran as."""
    keys = _request_keys(request)
    named = ""
    if keys:
        listed = ", ".join(keys)
        named = f" (key{'s' if len(keys) > 1 else ''} {listed[:MAX_ECHO]})"
    who = f" for user {user!r}" if user is not None else ""
    hint = (
        f": no role of user {user!r} grants it (etcdctl role grant-permission ROLE "
        "--prefix=true readwrite PREFIX)"
        if user is not None and "permission denied" in message
        else ""
    )
    return f"etcd refused {path}{named}{who}: {message}{hint}"


def error_from_answer(
    path: str,
    status: int,
    body: dict[str, Any],
    *,
    has_credentials: bool,
    request: object = None,
    user: str | None = None,
) -> StoreError:
    """The error for a gateway answer that is not a result.

    ``body`` is a unary call's error body, ``{"code": …, "message": …}``, or a stream's
    error line, ``{"error": {"grpc_code": …, "message": …}}``. A refusal names the keys
    of ``request`` (the request's JSON object, if given) and ``user``.
    """
    error = body.get("error")
    if isinstance(error, dict):
        code: object = error.get("grpc_code", error.get("code"))
        message = str(error.get("message") or error.get("http_status") or "")
    else:
        code = body.get("code")
        message = str(body.get("message") or error or "")
    message = message[:MAX_ECHO] or f"HTTP {status}"
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    if code == _NOT_FOUND and "lease not found" in message:
        return LeaseExpired(message)
    if _is_retryable(code, message) or (code is None and status in _GATEWAY_DOWN_STATUSES):
        return StoreConnectionError(
            f"etcd cannot serve {path} now: {message} (code {code}, HTTP {status})"
        )
    if (
        code in (_UNAUTHENTICATED, _PERMISSION_DENIED)
        or status in (401, 403)
        or any(text in message for text in _AUTH_MESSAGES)
    ):
        if has_credentials and any(text in message for text in _TOKEN_MESSAGES):
            return InvalidToken(f"etcd refused the auth token on {path}: {message}")
        hint = "" if has_credentials else " (etcd has auth enabled: pass username and password)"
        return StorePermissionError(_refused(path, message, request, user) + hint)
    return StoreError(f"etcd error on {path}: {message} (code {code}, HTTP {status})")


def _not_json(path: str, status: int, content: bytes) -> StoreError:
    text = content[:MAX_ECHO].decode("utf-8", "replace")
    if status in _GATEWAY_DOWN_STATUSES:
        return StoreConnectionError(
            f"HTTP {status} on {path}, and no etcd answer: a proxy whose etcd is away? "
            f"(body {text!r})"
        )
    return StoreProtocolError(
        f"the answer to {path} is not JSON (HTTP {status}, body {text!r}): "
        "the server is not an etcd v3 gateway"
    )


def _load(text: str | bytes) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _NOT_JSON


_NOT_JSON = object()


def read_answer(
    path: str,
    status: int,
    content: bytes,
    *,
    has_credentials: bool,
    request: object = None,
    user: str | None = None,
) -> dict[str, Any]:
    """The JSON object of a unary call's answer, or the error it stands for, raised (a
    refusal names the keys of ``request`` and ``user``)."""
    body = _load(content)
    if body is _NOT_JSON or not isinstance(body, dict):
        raise _not_json(path, status, content)
    if status != 200 or "error" in body or ("code" in body and "message" in body):
        raise error_from_answer(
            path, status, body, has_credentials=has_credentials, request=request, user=user
        )
    return body


# -- fields --------------------------------------------------------------------------------


def _missing(path: str, field: str, body: object) -> StoreProtocolError:
    return StoreProtocolError(
        f"etcd's answer to {path} has no valid {field!r}: the server is not an etcd v3 "
        f"gateway, or a newer one (answer {echo(body)})"
    )


def _int(path: str, body: dict[str, Any], field: str, *, required: bool = False) -> int:
    """An int64 field: a JSON string or number, and 0 when left out."""
    value = body.get(field)
    if value is None:
        if required:
            raise _missing(path, field, body)
        return 0
    if isinstance(value, bool):
        raise _missing(path, field, body)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit() and len(value) <= 20:
        return int(value)
    raise _missing(path, field, body)


def _bytes(path: str, body: dict[str, Any], field: str, *, required: bool = False) -> bytes:
    value = body.get(field)
    if value is None and not required:
        return b""
    if not isinstance(value, str):
        raise _missing(path, field, body)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _missing(path, field, body) from None


def _dict(path: str, body: dict[str, Any], field: str) -> dict[str, Any]:
    value = body.get(field)
    if not isinstance(value, dict):
        raise _missing(path, field, body)
    return value


def _list(path: str, body: dict[str, Any], field: str) -> list[Any]:
    value = body.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _missing(path, field, body)
    return value


def revision(path: str, body: dict[str, Any]) -> int:
    """The store revision in an answer's header."""
    return _int(path, _dict(path, body, "header"), "revision", required=True)


def grant(path: str, body: dict[str, Any], asked_ttl: int) -> tuple[int, int]:
    """A lease grant's lease id and granted TTL."""
    lease_id = _int(path, body, "ID", required=True)
    ttl = _int(path, body, "TTL") or asked_ttl
    return lease_id, ttl


@dataclass(frozen=True)
class RawStatus:
    """A member's answer to ``/v3/maintenance/status``."""

    member_id: int
    leader: int  # 0: it knows no leader
    version: str
    db_size: int
    raft_term: int
    errors: tuple[str, ...]


def status(path: str, body: dict[str, Any]) -> RawStatus:
    """Decode a maintenance status answer (``leader`` and ``errors`` may be left out)."""
    header = _dict(path, body, "header")
    version = body.get("version", "")
    if not isinstance(version, str):
        raise _missing(path, "version", body)
    errors = body.get("errors", [])
    if not isinstance(errors, list) or not all(isinstance(e, str) for e in errors):
        raise _missing(path, "errors", body)
    return RawStatus(
        member_id=_int(path, header, "member_id", required=True),
        leader=_int(path, body, "leader"),
        version=version[:MAX_ECHO],
        db_size=_int(path, body, "dbSize"),
        raft_term=_int(path, body, "raftTerm") or _int(path, header, "raft_term"),
        errors=tuple(e[:MAX_ECHO] for e in errors),
    )


@dataclass(frozen=True)
class RawKeyValue:
    """A key-value as the gateway sends it: the key still bytes."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


def key_value(path: str, kv: object) -> RawKeyValue:
    """Decode one ``kv`` object."""
    if not isinstance(kv, dict):
        raise _missing(path, "kv", kv)
    return RawKeyValue(
        _bytes(path, kv, "key", required=True),
        _bytes(path, kv, "value"),
        _int(path, kv, "create_revision"),
        _int(path, kv, "mod_revision"),
        _int(path, kv, "version"),
        _int(path, kv, "lease"),
    )


def range_result(path: str, body: dict[str, Any]) -> tuple[list[RawKeyValue], int]:
    """A range's key-values and the revision it was read at."""
    return [key_value(path, kv) for kv in _list(path, body, "kvs")], revision(path, body)


def count_result(path: str, body: dict[str, Any]) -> int:
    """A count-only range's count of keys (left out when 0)."""
    count = _int(path, body, "count")
    if count < 0:
        raise _missing(path, "count", body)
    return count


def deleted(path: str, body: dict[str, Any]) -> tuple[int, int]:
    """A delete-range's count of deleted keys, and the revision after it."""
    count = _int(path, body, "deleted")
    if count < 0:
        raise _missing(path, "deleted", body)
    return count, revision(path, body)


# -- transactions ------------------------------------------------------------------------


def compare_and_swap_request(
    key: str, value: bytes, expected_mod_revision: int, lease_id: int | None
) -> dict[str, Any]:
    """A txn that puts ``key`` if its mod_revision is ``expected_mod_revision``, and reads
    the key back in either branch: the new key-value or the current one, in one trip.

    An absent key's mod_revision compares as 0.
    """
    encoded = b64_text(key)
    put: dict[str, Any] = {"key": encoded, "value": b64(value)}
    if lease_id is not None:
        put["lease"] = str(lease_id)
    read = {"request_range": {"key": encoded}}
    return {
        "compare": [
            {
                "key": encoded,
                "target": "MOD",
                "result": "EQUAL",
                "mod_revision": str(expected_mod_revision),
            }
        ],
        "success": [{"request_put": put}, read],
        "failure": [read],
    }


@dataclass(frozen=True)
class TxnResponse:
    """One operation's answer in a txn.

    :ivar kind: ``"response_put"``, ``"response_range"`` or ``"response_delete_range"``
    :ivar kvs: a range's key-values
    :ivar deleted: a delete-range's count
    """

    kind: str
    kvs: tuple[RawKeyValue, ...]
    deleted: int


@dataclass(frozen=True)
class TxnResult:
    """A txn's answer: which branch ran, at what revision, and each operation's answer."""

    succeeded: bool
    revision: int
    responses: tuple[TxnResponse, ...]


_RESPONSE_KINDS = ("response_put", "response_range", "response_delete_range")


def txn_result(path: str, body: dict[str, Any]) -> TxnResult:
    """Decode a txn's answer (nested txns are not read)."""
    succeeded = body.get("succeeded", False)
    if not isinstance(succeeded, bool):
        raise _missing(path, "succeeded", body)
    responses = []
    for response in _list(path, body, "responses"):
        if not isinstance(response, dict):
            raise _missing(path, "responses", body)
        kinds = [kind for kind in _RESPONSE_KINDS if kind in response]
        if len(kinds) != 1:
            raise _missing(path, "responses", body)
        kind = kinds[0]
        inner = _dict(path, response, kind)
        kvs = tuple(key_value(path, kv) for kv in _list(path, inner, "kvs"))
        responses.append(TxnResponse(kind, kvs, _int(path, inner, "deleted")))
    return TxnResult(succeeded, revision(path, body), tuple(responses))


def compare_and_swap_result(
    path: str, body: dict[str, Any], key: str
) -> tuple[bool, RawKeyValue | None]:
    """The answer to :func:`compare_and_swap_request`: whether the put ran, and the key
    as the txn read it last (``None`` if absent)."""
    result = txn_result(path, body)
    expected = 2 if result.succeeded else 1
    if len(result.responses) != expected or result.responses[-1].kind != "response_range":
        raise _missing(path, "responses", body)
    kvs = result.responses[-1].kvs
    raw_key = key.encode()
    if len(kvs) > 1 or any(kv.key != raw_key for kv in kvs) or (result.succeeded and not kvs):
        raise _missing(path, "kvs", body)
    return result.succeeded, kvs[0] if kvs else None


_TARGETS = {
    "value": ("VALUE", "value"),
    "version": ("VERSION", "version"),
    "create_revision": ("CREATE", "create_revision"),
    "mod_revision": ("MOD", "mod_revision"),
    "lease": ("LEASE", "lease"),
}
_RESULTS = {"==": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}


def _range(key: str, prefix: bool) -> dict[str, Any]:
    if prefix:
        return {"key": prefix_start(key), "range_end": prefix_end(key)}
    return {"key": b64_text(key)}


def _compare(compare: Compare) -> dict[str, Any]:
    target, field = _TARGETS[compare.target]
    operand = compare.operand
    return {
        "key": b64_text(compare.key),
        "target": target,
        "result": _RESULTS[compare.op],
        field: b64(operand) if isinstance(operand, bytes) else str(operand),
    }


def _request_op(op: TxnOp) -> dict[str, Any]:
    if isinstance(op, Put):
        put: dict[str, Any] = {"key": b64_text(op.key), "value": b64(op.value)}
        lease_id = lease_id_of(op.lease)
        if lease_id is not None:
            put["lease"] = str(lease_id)
        return {"request_put": put}
    if isinstance(op, Delete):
        return {"request_delete_range": _range(op.key, op.prefix)}
    return {"request_range": _range(op.key, op.prefix)}


def txn_request(
    compare: Sequence[Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp]
) -> dict[str, Any]:
    """A txn, checked already (:func:`~anyrdzv._stores._txn.check_txn`), as the gateway takes it.

    Every comparison names its target, operator and operand, zeros included: the
    gateway would read a left-out one as 0, VERSION or EQUAL, but nothing is left to that.
    """
    return {
        "compare": [_compare(c) for c in compare],
        "success": [_request_op(op) for op in success],
        "failure": [_request_op(op) for op in failure],
    }


def _response_kind(op: TxnOp) -> str:
    if isinstance(op, Put):
        return "response_put"
    return "response_delete_range" if isinstance(op, Delete) else "response_range"


def txn_answer(
    path: str, body: dict[str, Any], success: Sequence[TxnOp], failure: Sequence[TxnOp]
) -> TxnResult:
    """Decode the answer to :func:`txn_request`, and check that it answers each operation
    of the branch that ran, in order, each read with keys in its range."""
    result = txn_result(path, body)
    ops = success if result.succeeded else failure
    if len(result.responses) != len(ops):
        raise _missing(path, "responses", body)
    for op, response in zip(ops, result.responses, strict=True):
        if response.kind != _response_kind(op):
            raise _missing(path, "responses", body)
        if response.deleted < 0:
            raise _missing(path, "deleted", body)
        if isinstance(op, Get):
            start = op.key.encode()
            if op.prefix:
                in_range = all(kv.key.startswith(start) for kv in response.kvs)
            else:
                in_range = len(response.kvs) <= 1 and all(kv.key == start for kv in response.kvs)
            if not in_range:
                raise _missing(path, "kvs", body)
    return result


# -- streams ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawEvent:
    """One watch event."""

    type: EventType
    kv: RawKeyValue


@dataclass(frozen=True)
class WatchMessage:
    """One line of a watch stream.

    :ivar revision: the header's revision: every change up to it has been sent
    :ivar created: the watch was just created
    :ivar events: the changes it carries
    :ivar compact_revision: non-zero when the start revision was compacted
    :ivar canceled: etcd ended the watch
    :ivar cancel_reason: why
    """

    revision: int
    created: bool
    events: tuple[RawEvent, ...]
    compact_revision: int
    canceled: bool
    cancel_reason: str


_WATCH = "/v3/watch"


def watch_line(
    line: str, *, has_credentials: bool, request: object = None, user: str | None = None
) -> WatchMessage:
    """Decode one line of a watch stream; an error line is raised as its error (a
    refusal names the keys of ``request`` and ``user``)."""
    message = _load(line)
    if message is _NOT_JSON or not isinstance(message, dict):
        raise StoreProtocolError(
            f"a line of the watch stream is not JSON ({echo(line)}): "
            "the server is not an etcd v3 gateway"
        )
    if "error" in message:
        raise error_from_answer(
            _WATCH, 200, message, has_credentials=has_credentials, request=request, user=user
        )
    result = _dict(_WATCH, message, "result")
    header = result.get("header")
    rev = _int(_WATCH, header, "revision") if isinstance(header, dict) else 0
    events = []
    for event in _list(_WATCH, result, "events"):
        if not isinstance(event, dict):
            raise _missing(_WATCH, "events", result)
        kind = EventType.DELETE if event.get("type") == "DELETE" else EventType.PUT
        events.append(RawEvent(kind, key_value(_WATCH, event.get("kv"))))
    reason = result.get("cancel_reason", "")
    return WatchMessage(
        rev,
        result.get("created") is True,
        tuple(events),
        _int(_WATCH, result, "compact_revision"),
        result.get("canceled") is True,
        str(reason)[:MAX_ECHO],
    )


def watch_cancelled(
    reason: str, *, has_credentials: bool, request: object = None, user: str | None = None
) -> StoreError:
    """The error for a watch that etcd cancelled: refused (naming the keys of
    ``request`` and ``user``), or to be made again."""
    message = f"etcd cancelled the watch: {reason[:MAX_ECHO]}"
    if any(text in reason for text in _AUTH_MESSAGES):
        return error_from_answer(
            _WATCH,
            200,
            {"message": message},
            has_credentials=has_credentials,
            request=request,
            user=user,
        )
    return StoreConnectionError(message)


_KEEPALIVE = "/v3/lease/keepalive"


def renewals(text: str, *, has_credentials: bool) -> tuple[dict[int, int], StoreError | None]:
    """Read the gateway's answers to a batch of keep-alives, one JSON object a line.

    Return the TTL of each lease answered (0 for a gone lease), and the error that a
    line which is not an answer stands for. The answers before such a line are kept.
    """
    renewed: dict[int, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        message = _load(line)
        if message is _NOT_JSON or not isinstance(message, dict):
            return renewed, StoreProtocolError(
                f"an answer to {_KEEPALIVE} is not JSON ({echo(line)}): "
                "the server is not an etcd v3 gateway"
            )
        if "error" in message:
            return renewed, error_from_answer(
                _KEEPALIVE, 200, message, has_credentials=has_credentials
            )
        result = message.get("result")
        if not isinstance(result, dict):
            return renewed, _missing(_KEEPALIVE, "result", message)
        try:
            renewed[_int(_KEEPALIVE, result, "ID", required=True)] = _int(_KEEPALIVE, result, "TTL")
        except StoreError as exc:
            return renewed, exc
    return renewed, None


def time_to_live(path: str, body: dict[str, Any]) -> int | None:
    """A lease's remaining TTL from ``/v3/lease/timetolive``, or ``None`` if it is gone
    (etcd answers a TTL of -1, or leaves the TTL out with the ID)."""
    ttl = body.get("TTL")
    if ttl is None:
        return None
    remaining = _int(path, body, "TTL")
    return None if remaining < 0 else remaining
