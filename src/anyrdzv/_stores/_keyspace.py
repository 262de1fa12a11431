"""The state of a :class:`~anyrdzv.MemoryStore`, and what each operation does to it, with
etcd's semantics: keys with their revisions and versions, leases with their deadlines,
one store revision, and the history of changes.

Pure and synchronous: no I/O, no event loop. Whatever depends on time takes the time
from its caller (:class:`~anyrdzv.MemoryStore` passes anyio's clock), and the arguments
are checked by the caller too: this is the state machine behind the async facade.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .._exceptions import LeaseExpired
from ._history import History
from ._model import CasResult, EventType, KeyValue, Lease, StoreEvent, lease_id_of
from ._txn import DeleteResult, Get, GetResult, Put, PutResult, TxnOpResult, TxnResult

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from ._txn import Compare, TxnOp


@dataclass
class _LeaseState:
    ttl: int
    deadline: float
    keys: set[str] = field(default_factory=set)


def _utf8_order(kv: KeyValue) -> bytes:
    """etcd's order of keys: by their bytes."""
    return kv.key.encode()


def _gone(lease_id: int) -> LeaseExpired:
    return LeaseExpired(f"lease {lease_id} has expired or was revoked")


class KeySpace:
    """Keys, leases and their history, changed one operation at a time.

    Every change happens at one new store revision, is recorded in :attr:`history`, and
    then ``on_change`` is called. A lease outlives its deadline until :meth:`expire` is
    called: the caller calls it before each operation.

    :param history_limit: how many events :attr:`history` keeps
    :param on_change: called after each change, once it is in the history
    """

    def __init__(self, history_limit: int, on_change: Callable[[], object]) -> None:
        #: the events of the latest changes
        self.history: History = History(history_limit)
        self._on_change = on_change
        self._revision = 1
        self._data: dict[str, KeyValue] = {}
        self._leases: dict[int, _LeaseState] = {}
        self._deadlines: list[tuple[float, int]] = []  # a heap; stale entries are skipped
        self._next_lease_id = 1

    @property
    def revision(self) -> int:
        """The store revision: that of the latest change."""
        return self._revision

    # -- leases ------------------------------------------------------------------------

    def expire(self, now: float) -> float:
        """Drop every lease whose deadline is ``now`` or earlier, with its keys; return the
        next deadline (infinity if there is none)."""
        while self._deadlines and self._deadlines[0][0] <= now:
            _, lease_id = heapq.heappop(self._deadlines)
            state = self._leases.get(lease_id)
            if state is not None and state.deadline <= now:
                self.revoke(lease_id)
        return self._deadlines[0][0] if self._deadlines else math.inf

    def grant(self, ttl: int, now: float) -> Lease:
        """A new lease that lives ``ttl`` seconds from ``now`` unless kept alive."""
        lease_id = self._next_lease_id
        self._next_lease_id += 1
        self._leases[lease_id] = _LeaseState(ttl, now + ttl)
        heapq.heappush(self._deadlines, (now + ttl, lease_id))
        return Lease(lease_id, ttl)

    def keep_alive(self, lease_id: int, now: float) -> int:
        """Renew a lease to its full TTL from ``now``, and return that TTL.

        :raises LeaseExpired: if the lease is gone
        """
        state = self._leases.get(lease_id)
        if state is None:
            raise _gone(lease_id)
        state.deadline = now + state.ttl
        heapq.heappush(self._deadlines, (state.deadline, lease_id))
        return state.ttl

    def time_to_live(self, lease_id: int, now: float) -> int | None:
        """A lease's remaining time to live at ``now``, in whole seconds (rounded down), or
        ``None`` if it is gone."""
        state = self._leases.get(lease_id)
        if state is None:
            return None
        return max(0, int(state.deadline - now))

    def revoke(self, lease_id: int) -> None:
        """Drop a lease, if it lives, and delete its keys at one new revision."""
        state = self._leases.pop(lease_id, None)
        if state is not None:
            self._commit(self._revision + 1, self._unset(state.keys, self._revision + 1))

    def _check_lease(self, lease_id: int | None) -> None:
        if lease_id is not None and lease_id not in self._leases:
            raise _gone(lease_id)

    # -- keys ----------------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        """``key``, or ``None`` if it is absent."""
        return self._data.get(key)

    def range(self, key: str, prefix: bool) -> list[KeyValue]:
        """``key``, or every key under it if ``prefix``, sorted as etcd sorts them."""
        if not prefix:
            kv = self._data.get(key)
            return [] if kv is None else [kv]
        return sorted((kv for k, kv in self._data.items() if k.startswith(key)), key=_utf8_order)

    def count(self, prefix: str) -> int:
        """How many keys are under ``prefix``."""
        return sum(1 for k in self._data if k.startswith(prefix))

    def values(self, prefix: str) -> dict[str, bytes]:
        """Every key under ``prefix`` with its value."""
        return {k: kv.value for k, kv in self._data.items() if k.startswith(prefix)}

    def put(self, key: str, value: bytes, lease_id: int | None) -> KeyValue:
        """Set ``key`` at a new revision, under lease ``lease_id`` if given.

        :raises LeaseExpired: if the lease is gone
        """
        self._check_lease(lease_id)
        events: list[StoreEvent] = []
        kv = self._set(key, value, lease_id, self._revision + 1, events)
        self._commit(self._revision + 1, events)
        return kv

    def delete(self, key: str, prefix: bool) -> int:
        """Delete ``key``, or every key under it if ``prefix``, at one new revision (none
        if nothing is deleted); return how many keys were deleted."""
        keys = [kv.key for kv in self.range(key, prefix)]
        self._commit(self._revision + 1, self._unset(keys, self._revision + 1))
        return len(keys)

    def compare_and_swap(
        self, key: str, value: bytes, expected_mod_revision: int, lease_id: int | None
    ) -> CasResult:
        """Set ``key`` if its mod revision (0 if absent) is ``expected_mod_revision``.

        :raises LeaseExpired: if the comparison holds and the lease is gone
        """
        current = self._data.get(key)
        if (0 if current is None else current.mod_revision) != expected_mod_revision:
            return CasResult(False, current)
        # As etcd: the lease is checked only on the branch that runs.
        return CasResult(True, self.put(key, value, lease_id))

    def txn(
        self, compares: Sequence[Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp]
    ) -> TxnResult:
        """Run a checked transaction: the writes of the branch that runs, at one new
        revision.

        :raises LeaseExpired: if a :class:`Put` of the branch that runs is under a gone
            lease; nothing is written
        """
        succeeded = all(c.holds(self._data.get(c.key)) for c in compares)
        ops = success if succeeded else failure
        for op in ops:
            # As etcd: the leases of the branch that runs, and only those, must be alive.
            if isinstance(op, Put):
                self._check_lease(lease_id_of(op.lease))
        revision = self._revision + 1
        events: list[StoreEvent] = []
        results: list[TxnOpResult] = []
        for op in ops:
            if isinstance(op, Get):
                results.append(GetResult(tuple(self.range(op.key, op.prefix))))
            elif isinstance(op, Put):
                self._set(op.key, op.value, lease_id_of(op.lease), revision, events)
                results.append(PutResult(revision))
            else:
                keys = [kv.key for kv in self.range(op.key, op.prefix)]
                events.extend(self._unset(keys, revision))
                results.append(DeleteResult(len(keys)))
        self._commit(revision, events)
        return TxnResult(succeeded, self._revision, tuple(results))

    # -- changes -------------------------------------------------------------------------

    def _set(
        self, key: str, value: bytes, lease_id: int | None, revision: int, events: list[StoreEvent]
    ) -> KeyValue:
        """Put ``key`` at ``revision`` (the lease must be alive), and add its event."""
        previous = self._data.get(key)
        if previous is not None and previous.lease is not None and previous.lease in self._leases:
            self._leases[previous.lease].keys.discard(key)
        kv = KeyValue(
            key,
            value,
            revision if previous is None else previous.create_revision,
            revision,
            1 if previous is None else previous.version + 1,
            lease_id,
        )
        self._data[key] = kv
        if lease_id is not None:
            self._leases[lease_id].keys.add(key)
        events.append(
            StoreEvent(
                EventType.PUT, key, value, revision, kv.create_revision, kv.version, lease_id
            )
        )
        return kv

    def _unset(self, keys: Iterable[str], revision: int) -> list[StoreEvent]:
        """Delete ``keys``, which exist, at ``revision``, in etcd's order; their events
        (with no create revision, version or lease, as etcd sends them)."""
        events: list[StoreEvent] = []
        for key in sorted(keys):
            kv = self._data.pop(key)
            if kv.lease is not None and kv.lease in self._leases:
                self._leases[kv.lease].keys.discard(key)
            events.append(StoreEvent(EventType.DELETE, key, b"", revision))
        return events

    def _commit(self, revision: int, events: list[StoreEvent]) -> None:
        """Make ``revision`` the store's, if anything changed at it."""
        if events:
            self._revision = revision
            self.history.record(events)
            self._on_change()
