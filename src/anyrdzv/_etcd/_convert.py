"""etcd's answers, as :mod:`._wire` reads them, turned into the store's model: keys as
text (a foreign key that is not UTF-8 is skipped, with a WARNING), key-values sorted by
key, watch events, and each operation's result in a txn."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .._checks import echo
from .._stores._model import KeyValue, StoreEvent
from .._stores._txn import DeleteResult, Get, GetResult, Put, PutResult, TxnResult

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from .._stores._txn import TxnOp, TxnOpResult
    from . import _wire

logger = logging.getLogger(__name__)


def key_text(raw: bytes, *, what: str, server: str) -> str | None:
    """A key as text, or ``None`` (logged) for a foreign key that is not UTF-8.

    :param what: what the key came in, for the log: ``"the watch on '/p/'"``
    :param server: how the log names etcd
    """
    try:
        return raw.decode()
    except UnicodeDecodeError:
        logger.warning(
            "skipping a key in %s from etcd at %s that is not UTF-8: %s", what, server, echo(raw)
        )
        return None


def key_values(raws: Iterable[_wire.RawKeyValue], *, what: str, server: str) -> list[KeyValue]:
    """The key-values whose keys are text, sorted by key."""
    found: list[KeyValue] = []
    for raw in sorted(raws, key=lambda kv: kv.key):
        key = key_text(raw.key, what=what, server=server)
        if key is not None:
            found.append(key_value(raw, key))
    return found


def key_value(raw: _wire.RawKeyValue, key: str) -> KeyValue:
    """``raw`` as a :class:`KeyValue`, under its key as text."""
    return KeyValue(
        key, raw.value, raw.create_revision, raw.mod_revision, raw.version, raw.lease or None
    )


def store_event(event: _wire.RawEvent, key: str) -> StoreEvent:
    """A watch event as a :class:`StoreEvent`, under its key as text."""
    kv = event.kv
    return StoreEvent(
        event.type, key, kv.value, kv.mod_revision, kv.create_revision, kv.version, kv.lease or None
    )


def txn_result(answer: _wire.TxnResult, ran: Sequence[TxnOp], *, server: str) -> TxnResult:
    """A txn's answer, with the result of each operation of the branch that ``ran``."""
    results: list[TxnOpResult] = []
    for op, response in zip(ran, answer.responses, strict=True):
        if isinstance(op, Get):
            what = f"the txn's get of {op.key!r}"
            results.append(GetResult(tuple(key_values(response.kvs, what=what, server=server))))
        elif isinstance(op, Put):
            results.append(PutResult(answer.revision))
        else:
            results.append(DeleteResult(response.deleted))
    return TxnResult(answer.succeeded, answer.revision, tuple(results))
