from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from .._checks import check_int, check_str
from .._exceptions import LeaseExpired, StoreCompacted, StoreConnectionError
from ._model import (
    CasResult,
    EventType,
    KeyValue,
    Lease,
    StoreEvent,
    check_key,
    check_lease_id,
    check_mod_revision,
    check_put,
    check_ttl,
)
from ._txn import DeleteResult, Get, GetResult, Put, PutResult, TxnOpResult, TxnResult, check_txn

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._txn import Compare, TxnOp


@dataclass
class _LeaseState:
    ttl: int
    deadline: float
    keys: set[str] = field(default_factory=set)


def _utf8_order(kv: KeyValue) -> bytes:
    """etcd's order of keys: by their bytes."""
    return kv.key.encode("utf-8", "surrogatepass")


class MemoryStore:
    """An in-process :class:`LeaseStore`: the default for single-process agents and tests.

    Lease TTLs run on anyio's clock. Expiry needs no background task: every operation,
    and every waiting watch, expires the leases that are due, so a watcher sees a
    member leave as soon as its lease runs out. Revisions and watches behave like
    etcd's: a lease revoke deletes all its keys at one revision, and a watch can resume
    from any revision still in the history.

    Use one ``MemoryStore`` within one event loop.

    :param history_limit: how many events to keep for watches to resume from; older
        ones are compacted away

    .. versionchanged:: 0.2
       Keys carry etcd's create and mod revisions and versions; :meth:`get`,
       :meth:`get_prefix_kv`, :meth:`delete`, :meth:`delete_prefix`,
       :meth:`compare_and_swap` and :meth:`txn` answer as etcd does, and watch events
       carry the key's create revision, version and lease. A key and value over 1.5 MiB
       together (:data:`MAX_VALUE_BYTES`) are refused, as etcd refuses them.
    """

    def __init__(self, *, history_limit: int = 100_000) -> None:
        self._history_limit = check_int("history_limit", history_limit, least=1)
        self._revision = 1
        self._data: dict[str, KeyValue] = {}
        self._leases: dict[int, _LeaseState] = {}
        self._deadlines: list[tuple[float, int]] = []  # a heap; stale entries are skipped
        self._next_lease_id = 1
        self._history: list[StoreEvent] = []
        self._history_revisions: list[int] = []
        self._history_base = 0  # absolute index of _history[0]
        self._compacted_through = 0  # the newest revision no longer in the history
        self._changed: anyio.Event | None = None
        self._generation = 0  # bumped by _break_watches()

    # -- internals ---------------------------------------------------------------------

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _record(self, events: list[StoreEvent]) -> None:
        self._history.extend(events)
        self._history_revisions.extend(e.revision for e in events)
        excess = len(self._history) - self._history_limit
        if excess > 0:
            self._compacted_through = self._history_revisions[excess - 1]
            del self._history[:excess]
            del self._history_revisions[:excess]
            self._history_base += excess
        self._notify()

    def _set(
        self, key: str, value: bytes, lease: Lease | None, revision: int, events: list[StoreEvent]
    ) -> KeyValue:
        """Put ``key`` at ``revision`` (the lease must be alive), and add its event."""
        previous = self._data.get(key)
        if previous is not None and previous.lease is not None and previous.lease in self._leases:
            self._leases[previous.lease].keys.discard(key)
        lease_id = None if lease is None else lease.id
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

    def _unset(self, keys: list[str], revision: int, events: list[StoreEvent]) -> None:
        """Delete ``keys``, which exist, at ``revision``, in etcd's order, and add their
        events (with no create revision, version or lease, as etcd sends them)."""
        for key in sorted(keys):
            kv = self._data.pop(key)
            if kv.lease is not None and kv.lease in self._leases:
                self._leases[kv.lease].keys.discard(key)
            events.append(StoreEvent(EventType.DELETE, key, b"", revision))

    def _commit(self, revision: int, events: list[StoreEvent]) -> None:
        """Make ``revision`` the store's, if anything changed at it."""
        if events:
            self._revision = revision
            self._record(events)

    def _write(self, key: str, value: bytes, lease: Lease | None) -> KeyValue:
        """Put ``key`` at a new revision, as etcd does; the lease must be alive."""
        events: list[StoreEvent] = []
        kv = self._set(key, value, lease, self._revision + 1, events)
        self._commit(self._revision + 1, events)
        return kv

    def _delete(self, keys: list[str]) -> None:
        """Delete ``keys``, which exist, at one new revision."""
        events: list[StoreEvent] = []
        self._unset(keys, self._revision + 1, events)
        self._commit(self._revision + 1, events)

    def _range(self, key: str, prefix: bool) -> list[KeyValue]:
        """The keys in a range, sorted as etcd sorts them."""
        if not prefix:
            kv = self._data.get(key)
            return [] if kv is None else [kv]
        return sorted((kv for k, kv in self._data.items() if k.startswith(key)), key=_utf8_order)

    def _drop_lease(self, lease_id: int) -> None:
        state = self._leases.pop(lease_id, None)
        if state is not None:
            self._delete(list(state.keys))

    def _expire(self) -> None:
        now = anyio.current_time()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, lease_id = heapq.heappop(self._deadlines)
            state = self._leases.get(lease_id)
            if state is not None and state.deadline <= now:
                self._drop_lease(lease_id)

    def _next_deadline(self) -> float:
        return self._deadlines[0][0] if self._deadlines else math.inf

    def _break_watches(self) -> None:
        """Make every open watch fail as if its connection dropped (for tests)."""
        self._generation += 1
        self._notify()

    # -- the LeaseStore protocol -----------------------------------------------------------

    async def grant(self, ttl: int) -> Lease:
        """Grant a lease that lives ``ttl`` seconds unless kept alive.

        :raises ValueError: if ``ttl`` is less than 1
        """
        check_ttl(ttl)
        await anyio.lowlevel.checkpoint()
        self._expire()
        lease_id = self._next_lease_id
        self._next_lease_id += 1
        deadline = anyio.current_time() + ttl
        self._leases[lease_id] = _LeaseState(ttl, deadline)
        heapq.heappush(self._deadlines, (deadline, lease_id))
        return Lease(lease_id, ttl)

    async def keep_alive(self, lease: Lease) -> int:
        """Renew ``lease`` to its full TTL and return that TTL.

        :raises LeaseExpired: if the lease is gone
        """
        await anyio.lowlevel.checkpoint()
        self._expire()
        state = self._leases.get(lease.id)
        if state is None:
            raise LeaseExpired(f"lease {lease.id} has expired or was revoked")
        state.deadline = anyio.current_time() + state.ttl
        heapq.heappush(self._deadlines, (state.deadline, lease.id))
        return state.ttl

    async def time_to_live(self, lease: Lease | int) -> int | None:
        """Return the remaining time to live of ``lease``, in whole seconds (rounded
        down, as etcd does); or ``None`` if the lease is gone (expired, revoked or never
        granted). It does not renew the lease. It is not part of
        :class:`~anyrdzv.LeaseStore`.

        :param lease: the lease, or its id (as :attr:`KeyValue.lease` gives it)
        :raises TypeError: if ``lease`` is neither a :class:`Lease` nor an int

        .. versionadded:: 0.2
        """
        lease_id = check_lease_id(lease)
        await anyio.lowlevel.checkpoint()
        self._expire()
        state = self._leases.get(lease_id)
        if state is None:
            return None
        return max(0, int(state.deadline - anyio.current_time()))

    async def revoke(self, lease: Lease) -> None:
        """Revoke ``lease`` now, deleting its keys."""
        await anyio.lowlevel.checkpoint()
        self._expire()
        self._drop_lease(lease.id)

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        """Set ``key`` to ``value``, under ``lease`` if given; return the new revision.

        :raises LeaseExpired: if ``lease`` is gone
        """
        check_put(key, value)
        await anyio.lowlevel.checkpoint()
        self._expire()
        if lease is not None and lease.id not in self._leases:
            raise LeaseExpired(f"lease {lease.id} has expired or was revoked")
        return self._write(key, value, lease).mod_revision

    async def get_prefix(self, prefix: str) -> tuple[dict[str, bytes], int]:
        """Return every key under ``prefix`` with its value, and the store revision."""
        check_str("prefix", prefix)
        await anyio.lowlevel.checkpoint()
        self._expire()
        found = {k: kv.value for k, kv in self._data.items() if k.startswith(prefix)}
        return found, self._revision

    async def get(self, key: str) -> KeyValue | None:
        """Return ``key`` with its value and revisions, or ``None`` if it is absent.

        .. versionadded:: 0.2
        """
        check_key(key)
        await anyio.lowlevel.checkpoint()
        self._expire()
        return self._data.get(key)

    async def get_prefix_kv(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Return every key under ``prefix``, sorted by key, and the revision read at.

        .. versionadded:: 0.2
        """
        check_str("prefix", prefix)
        await anyio.lowlevel.checkpoint()
        self._expire()
        return self._range(prefix, True), self._revision

    async def delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed. Deleting an absent key changes
        nothing, not even the store revision.

        .. versionadded:: 0.2
        """
        check_key(key)
        await anyio.lowlevel.checkpoint()
        self._expire()
        if key not in self._data:
            return False
        self._delete([key])
        return True

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``, at one revision; return how many there were.

        .. versionadded:: 0.2
        """
        check_str("prefix", prefix)
        await anyio.lowlevel.checkpoint()
        self._expire()
        keys = [k for k in self._data if k.startswith(prefix)]
        self._delete(keys)
        return len(keys)

    async def compare_and_swap(
        self,
        key: str,
        value: bytes,
        *,
        expected_mod_revision: int,
        lease: Lease | None = None,
    ) -> CasResult:
        """Set ``key`` to ``value`` only if its ``mod_revision`` is
        ``expected_mod_revision`` (0: only if the key is absent), atomically.

        :param lease: the lease to put the key under, if any
        :return: whether it was written, with the key as written, or as it is now
        :raises LeaseExpired: if the comparison held but ``lease`` is gone; nothing is
            written
        :raises ValueError: if ``expected_mod_revision`` is negative, or the value too large

        .. versionadded:: 0.2
        """
        check_put(key, value)
        check_mod_revision("expected_mod_revision", expected_mod_revision)
        await anyio.lowlevel.checkpoint()
        self._expire()
        current = self._data.get(key)
        if (0 if current is None else current.mod_revision) != expected_mod_revision:
            return CasResult(False, current)
        # As etcd: the lease is checked only on the branch that runs.
        if lease is not None and lease.id not in self._leases:
            raise LeaseExpired(f"lease {lease.id} has expired or was revoked")
        return CasResult(True, self._write(key, value, lease))

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        """Run a transaction, atomically: if every comparison in ``compare`` holds, run
        the operations of ``success``, else those of ``failure``, in order.

        All the writes of the branch that runs happen at one new revision; a txn that
        changes nothing leaves the revision as it is. A :class:`Get` sees the writes
        before it in its branch. An absent key's version, revisions and lease compare as
        0, and a comparison of its value is false. These are etcd's semantics.

        :param compare: the comparisons, at most 128
        :param success: the operations to run if they all hold, at most 128
        :param failure: the operations to run if one does not, at most 128
        :return: which branch ran, the revision after the txn, and each operation's answer
        :raises LeaseExpired: if a :class:`Put` of the branch that runs is under a gone
            lease; nothing is written
        :raises ValueError: if there are too many comparisons or operations, if a branch
            writes one key twice (two puts, or a put and a delete that covers it), or if
            the txn is over 1.5 MiB; checked before anything is written
        :raises TypeError: if an argument is not a sequence of the right kind

        .. versionadded:: 0.2
        """
        compares, on_success, on_failure = check_txn(compare, success, failure)
        await anyio.lowlevel.checkpoint()
        self._expire()
        succeeded = all(c.holds(self._data.get(c.key)) for c in compares)
        ops = on_success if succeeded else on_failure
        for op in ops:
            # As etcd: the leases of the branch that runs, and only those, must be alive.
            if isinstance(op, Put) and op.lease is not None and op.lease.id not in self._leases:
                raise LeaseExpired(f"lease {op.lease.id} has expired or was revoked")
        revision = self._revision + 1
        events: list[StoreEvent] = []
        results: list[TxnOpResult] = []
        for op in ops:
            if isinstance(op, Get):
                results.append(GetResult(tuple(self._range(op.key, op.prefix))))
            elif isinstance(op, Put):
                self._set(op.key, op.value, op.lease, revision, events)
                results.append(PutResult(revision))
            else:
                keys = [kv.key for kv in self._range(op.key, op.prefix)]
                self._unset(keys, revision, events)
                results.append(DeleteResult(len(keys)))
        self._commit(revision, events)
        return TxnResult(succeeded, self._revision, tuple(results))

    def watch_prefix(
        self,
        prefix: str,
        *,
        start_revision: int,
        on_open: Callable[[], object] | None = None,
    ) -> _MemoryWatch:
        """Yield every change under ``prefix`` from ``start_revision`` on, in order.

        :param on_open: called when the watch is first waited on
        :raises StoreCompacted: if ``start_revision`` is older than the kept history
        """
        check_str("prefix", prefix)
        return _MemoryWatch(self, prefix, start_revision, on_open)


class _MemoryWatch:
    def __init__(
        self,
        store: MemoryStore,
        prefix: str,
        start_revision: int,
        on_open: Callable[[], object] | None,
    ) -> None:
        self._store = store
        self._on_open = on_open
        self._prefix = prefix
        self._generation = store._generation
        self._position = store._history_base + bisect.bisect_left(
            store._history_revisions, start_revision
        )
        self._start_revision = start_revision
        if start_revision <= store._compacted_through:
            self._position = -1  # reported as compacted on the first __anext__

    def __aiter__(self) -> _MemoryWatch:
        return self

    async def aclose(self) -> None:
        """Stop watching (nothing to release: the history stays in the store)."""
        await anyio.lowlevel.checkpoint()

    async def __anext__(self) -> StoreEvent:
        store = self._store
        await anyio.lowlevel.checkpoint()
        if self._on_open is not None and self._generation == store._generation:
            on_open, self._on_open = self._on_open, None
            on_open()
        while True:
            if self._generation != store._generation:
                raise StoreConnectionError("the watch stream was cut")
            store._expire()
            if self._position < store._history_base:
                oldest = store._history_revisions[0] if store._history_revisions else 0
                raise StoreCompacted(
                    f"revision {self._start_revision} has been compacted; "
                    f"the oldest kept is {oldest}",
                    oldest,
                )
            history = store._history
            index = self._position - store._history_base
            while index < len(history):
                event = history[index]
                index += 1
                self._position += 1
                if event.key.startswith(self._prefix):
                    return event
            if store._changed is None:
                store._changed = anyio.Event()
            changed = store._changed
            with anyio.move_on_after(store._next_deadline() - anyio.current_time()):
                await changed.wait()
