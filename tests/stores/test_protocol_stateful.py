"""MemoryStore against a real etcd: hypothesis drives one random sequence of operations into
both, and every answer, revision, lease, key and watch event must be the same.

Each test function has its own etcd member, and each example its own key prefix in it.
etcd's revisions run on from example to example, and its lease ids are its own, so its
answers are read in MemoryStore's numbering: revisions less the offset they started at,
lease ids mapped. Leases live 600 s, so none expires during a test: what happens is
decided by the operations alone.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from anyrdzv import (
    CasResult,
    Compare,
    Delete,
    EtcdStore,
    Get,
    GetResult,
    KeyValue,
    Lease,
    LeaseExpired,
    LeaseStore,
    MemoryStore,
    Put,
    PutResult,
    StoreEvent,
    TxnResult,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.abc import TaskStatus
    from anyio.from_thread import BlockingPortal

    from anyrdzv._stores._txn import CompareOp, CompareTarget, TxnOp, TxnOpResult
    from tests._support.etcd_server import EtcdServer

T = TypeVar("T")

TTL = 600
KEYS = ("a", "b", "a/x", "c")  # under the example's prefix
PREFIXES = ("", "a", "a/", "b")
VALUES = (b"", b"0", b"1", b"\xff")
OPS: tuple[CompareOp, ...] = ("==", "!=", "<", ">")
#: How long etcd's watch may take to deliver the events of one step.
WATCH_BOUND = 10.0


@dataclass(frozen=True)
class LeasePair:
    """One lease, granted on both stores."""

    memory: Lease
    etcd: Lease


@dataclass(frozen=True)
class Side:
    """One of the two stores, with what turns a step's arguments into its own."""

    store: LeaseStore
    is_etcd: bool
    offset: int  # this store's revision when MemoryStore's was 0

    def own(self, pair: LeasePair) -> Lease:
        return pair.etcd if self.is_etcd else pair.memory

    def lease(self, pair: LeasePair | None) -> Lease | None:
        return None if pair is None else self.own(pair)

    def revision(self, revision: int) -> int:
        """A revision in MemoryStore's numbering, in this store's."""
        return revision + self.offset if revision else 0


@dataclass(frozen=True)
class CompareSpec:
    """A comparison, before it is made for one store."""

    key: str
    target: CompareTarget
    op: CompareOp
    operand: bytes | int | LeasePair | None

    def on(self, side: Side) -> Compare:
        operand = self.operand
        if self.target == "lease":
            assert operand is None or isinstance(operand, LeasePair)
            return Compare.lease(self.key, self.op, side.lease(operand))
        assert isinstance(operand, bytes | int)
        if self.target in ("create_revision", "mod_revision"):
            assert isinstance(operand, int)
            operand = side.revision(operand)
        return Compare(self.key, self.target, self.op, operand)


@dataclass(frozen=True)
class OpSpec:
    """An operation of a txn, before it is made for one store."""

    kind: Literal["put", "delete", "get"]
    key: str
    prefix: bool = False
    value: bytes = b""
    lease: LeasePair | None = None

    def on(self, side: Side) -> TxnOp:
        if self.kind == "put":
            return Put(self.key, self.value, side.lease(self.lease))
        if self.kind == "delete":
            return Delete(self.key, self.prefix)
        return Get(self.key, self.prefix)


class Watcher:
    """A watch on one store, run in the portal, that keeps every event."""

    def __init__(self, portal: BlockingPortal, store: LeaseStore, prefix: str, start: int) -> None:
        self.events: list[StoreEvent] = []
        self.error: BaseException | None = None
        self._grew: anyio.Event | None = None
        self._opened = threading.Event()
        self._future, self._scope = portal.start_task(self._run, store, prefix, start)

    async def _run(
        self,
        store: LeaseStore,
        prefix: str,
        start: int,
        *,
        task_status: TaskStatus[anyio.CancelScope] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            try:
                stream = store.watch_prefix(prefix, start_revision=start, on_open=self._open)
                async with aclosing(stream):
                    async for event in stream:
                        self.events.append(event)
                        self._wake()
            except Exception as exc:  # noqa: BLE001 - caught_up() raises it in the test
                self.error = exc
                self._wake()
                self._opened.set()

    def _open(self) -> None:
        self._opened.set()

    def wait_opened(self) -> None:
        """Wait, in the test's thread, until the store has confirmed the watch: a watch
        from revision 0 sees the changes after that."""
        if not self._opened.wait(WATCH_BOUND):
            raise TimeoutError(f"the watch did not open within {WATCH_BOUND} s")
        if self.error is not None:
            raise self.error

    def _wake(self) -> None:
        if self._grew is not None:
            self._grew.set()
            self._grew = None

    async def caught_up(self, revision: int) -> None:
        """Wait until the watch has delivered the events up to ``revision``."""
        with anyio.fail_after(WATCH_BOUND):
            while not self.events or self.events[-1].revision < revision:
                if self.error is not None:
                    raise self.error
                self._grew = anyio.Event()
                await self._grew.wait()

    def close(self, portal: BlockingPortal) -> None:
        portal.call(self._scope.cancel)
        self._future.result(timeout=WATCH_BOUND)


@dataclass(frozen=True)
class WatchPair:
    """One watch, started on both stores alike."""

    memory: Watcher
    etcd: Watcher
    after: int  # MemoryStore's revision that its first event comes after

    def close(self, portal: BlockingPortal) -> None:
        self.memory.close(portal)
        self.etcd.close(portal)


#: How many watches an example may run at once, the first one included.
MAX_WATCHES = 4

Outcome = tuple[str, object]


class StoreMachine(RuleBasedStateMachine):
    """Every rule runs one operation on both stores, and compares their answers; the
    invariant compares the keys, the revision and the events the watches have seen.

    One watch runs from the start; the ``watch`` rule starts more, from a revision or
    from 0 (from now on)."""

    def __init__(self, portal: BlockingPortal, etcd: EtcdStore) -> None:
        super().__init__()
        self.portal = portal
        self.prefix = f"/stateful-{uuid.uuid4().hex}/"
        memory = MemoryStore()
        memory_start = portal.call(memory.get_prefix_kv, self.prefix)[1]
        etcd_start = portal.call(etcd.get_prefix_kv, self.prefix)[1]
        self.memory_start = memory_start  # a revision with no event: the store's first
        self.memory = Side(memory, is_etcd=False, offset=0)
        self.etcd = Side(etcd, is_etcd=True, offset=etcd_start - memory_start)
        self.leases: list[LeasePair] = []
        self.lease_ids: dict[int, int] = {}  # etcd's id -> MemoryStore's
        self.watches = [
            WatchPair(
                Watcher(portal, memory, self.prefix, memory_start + 1),
                Watcher(portal, etcd, self.prefix, etcd_start + 1),
                memory_start,
            )
        ]

    def teardown(self) -> None:
        for watch in self.watches:
            watch.close(self.portal)
        for pair in self.leases:  # so that the next example starts clean
            self.portal.call(self.etcd.store.revoke, pair.etcd)

    # -- running a step on both stores ------------------------------------------------

    def _outcome(self, call: Callable[[Side], Awaitable[object]], side: Side) -> Outcome:
        try:
            return "answer", self.portal.call(call, side)
        except LeaseExpired:
            return "raised", LeaseExpired  # in each store's own words
        except (TypeError, ValueError) as exc:
            return "raised", (type(exc), str(exc))

    def both(
        self,
        call: Callable[[Side], Awaitable[T]],
        normalize: Callable[[T], object] | None = None,
    ) -> None:
        """Run ``call`` on MemoryStore, then on etcd; the answers must be the same, once
        etcd's is read in MemoryStore's numbering (by ``normalize``, or as a whole)."""
        expected = self._outcome(call, self.memory)
        got = self._outcome(call, self.etcd)
        if got[0] == "answer":
            answer: Any = got[1]
            got = "answer", (normalize or self.from_etcd)(answer)
        assert got == expected

    def rev(self, revision: int) -> int:
        """An etcd revision in MemoryStore's numbering."""
        return revision - self.etcd.offset if revision else 0

    def lease_id(self, lease: int | None) -> int | None:
        """An etcd lease id as MemoryStore's."""
        return None if lease is None else self.lease_ids[lease]

    def kv(self, kv: KeyValue) -> KeyValue:
        """An etcd key-value in MemoryStore's numbering."""
        return dataclasses.replace(
            kv,
            create_revision=self.rev(kv.create_revision),
            mod_revision=self.rev(kv.mod_revision),
            lease=self.lease_id(kv.lease),
        )

    def from_etcd(self, answer: object) -> object:
        """An etcd answer in MemoryStore's numbering: revisions shifted, lease ids mapped."""
        if isinstance(answer, KeyValue):
            return self.kv(answer)
        if isinstance(answer, StoreEvent):
            return dataclasses.replace(
                answer,
                revision=self.rev(answer.revision),
                create_revision=self.rev(answer.create_revision),
                lease=self.lease_id(answer.lease),
            )
        if isinstance(answer, CasResult):
            return CasResult(answer.succeeded, None if answer.kv is None else self.kv(answer.kv))
        if isinstance(answer, TxnResult):
            results = tuple(map(self.op_result, answer.results))
            return TxnResult(answer.succeeded, self.rev(answer.revision), results)
        if isinstance(answer, (tuple, list)):
            return type(answer)(self.from_etcd(item) for item in answer)
        return answer  # a count, a TTL, a bool, None

    def op_result(self, result: TxnOpResult) -> TxnOpResult:
        """One operation's answer in a txn, in MemoryStore's numbering."""
        if isinstance(result, GetResult):
            return GetResult(tuple(self.kv(kv) for kv in result.kvs))
        if isinstance(result, PutResult):
            return PutResult(self.rev(result.revision))
        return result

    def with_revision(self, answer: tuple[Any, int]) -> object:
        """A ``(found, revision)`` answer in MemoryStore's numbering."""
        found, revision = answer
        return self.from_etcd(found), self.rev(revision)

    def draw_lease(self, data: st.DataObject) -> LeasePair | None:
        if not self.leases:
            return None
        return data.draw(st.none() | st.sampled_from(self.leases), label="lease")

    def known_revisions(self) -> list[int]:
        """MemoryStore's revisions that a token or comparison may name: 0, every key's
        create and mod revisions, and the store's, with their neighbours."""
        kvs, revision = self.portal.call(self.memory.store.get_prefix_kv, self.prefix)
        found = {0, revision, revision + 1}
        for kv in kvs:
            found |= {kv.create_revision, kv.mod_revision, kv.mod_revision - 1}
        return sorted(found)

    def draw_compare(self, data: st.DataObject) -> CompareSpec:
        key = self.prefix + data.draw(st.sampled_from(KEYS), label="key")
        target: CompareTarget = data.draw(
            st.sampled_from(["value", "version", "create_revision", "mod_revision", "lease"]),
            label="target",
        )
        operand: bytes | int | LeasePair | None
        ops = OPS
        if target == "value":
            operand = data.draw(st.sampled_from(VALUES), label="value")
        elif target == "version":
            operand = data.draw(st.integers(0, 3), label="version")
        elif target == "lease":
            operand = self.draw_lease(data)
            if operand is not None:
                ops = ("==", "!=")  # the two stores number their leases apart
        else:
            operand = data.draw(st.sampled_from(self.known_revisions()), label="revision")
        return CompareSpec(key, target, data.draw(st.sampled_from(ops), label="op"), operand)

    def draw_op(self, data: st.DataObject) -> OpSpec:
        kind: Literal["put", "delete", "get"] = data.draw(
            st.sampled_from(["put", "delete", "get"]), label="op"
        )
        prefix = kind != "put" and data.draw(st.booleans(), label="prefix")
        key = self.prefix + data.draw(st.sampled_from(PREFIXES if prefix else KEYS), label="key")
        if kind != "put":
            return OpSpec(kind, key, prefix)
        value = data.draw(st.sampled_from(VALUES), label="value")
        return OpSpec(kind, key, value=value, lease=self.draw_lease(data))

    # -- the rules ----------------------------------------------------------------------

    @rule()
    def grant(self) -> None:
        memory = self.portal.call(self.memory.store.grant, TTL)
        etcd = self.portal.call(self.etcd.store.grant, TTL)
        assert (memory.ttl, etcd.ttl) == (TTL, TTL)
        self.leases.append(LeasePair(memory, etcd))
        self.lease_ids[etcd.id] = memory.id

    @precondition(lambda self: self.leases)
    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        pair = data.draw(st.sampled_from(self.leases), label="lease")
        self.both(lambda side: side.store.revoke(side.own(pair)))

    @precondition(lambda self: self.leases)
    @rule(data=st.data())
    def keep_alive(self, data: st.DataObject) -> None:
        pair = data.draw(st.sampled_from(self.leases), label="lease")
        self.both(lambda side: side.store.keep_alive(side.own(pair)))

    @rule(key=st.sampled_from(KEYS), value=st.sampled_from(VALUES), data=st.data())
    def put(self, key: str, value: bytes, data: st.DataObject) -> None:
        lease = self.draw_lease(data)
        self.both(
            lambda side: side.store.put(self.prefix + key, value, lease=side.lease(lease)),
            self.rev,
        )

    @rule(key=st.sampled_from(KEYS))
    def get(self, key: str) -> None:
        self.both(lambda side: side.store.get(self.prefix + key))

    @rule(prefix=st.sampled_from(PREFIXES))
    def get_prefix(self, prefix: str) -> None:
        self.both(lambda side: side.store.get_prefix(self.prefix + prefix), self.with_revision)

    @rule(prefix=st.sampled_from(PREFIXES))
    def get_prefix_kv(self, prefix: str) -> None:
        self.both(lambda side: side.store.get_prefix_kv(self.prefix + prefix), self.with_revision)

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key: str) -> None:
        self.both(lambda side: side.store.delete(self.prefix + key))

    @rule(prefix=st.sampled_from(PREFIXES))
    def delete_prefix(self, prefix: str) -> None:
        self.both(lambda side: side.store.delete_prefix(self.prefix + prefix))

    @rule(key=st.sampled_from(KEYS), value=st.sampled_from(VALUES), data=st.data())
    def compare_and_swap(self, key: str, value: bytes, data: st.DataObject) -> None:
        token = data.draw(st.sampled_from(self.known_revisions()), label="token")
        lease = self.draw_lease(data)
        self.both(
            lambda side: side.store.compare_and_swap(
                self.prefix + key,
                value,
                expected_mod_revision=side.revision(token),
                lease=side.lease(lease),
            )
        )

    @rule(data=st.data())
    def txn(self, data: st.DataObject) -> None:
        count = st.integers(0, 3)
        compares = [self.draw_compare(data) for _ in range(data.draw(count, label="compares"))]
        success = [self.draw_op(data) for _ in range(data.draw(count, label="success ops"))]
        failure = [self.draw_op(data) for _ in range(data.draw(count, label="failure ops"))]
        note(f"txn({compares}, {success}, {failure})")
        self.both(
            lambda side: side.store.txn(
                [c.on(side) for c in compares],
                [op.on(side) for op in success],
                [op.on(side) for op in failure],
            )
        )

    @precondition(lambda self: len(self.watches) < MAX_WATCHES)
    @rule(data=st.data())
    def watch(self, data: st.DataObject) -> None:
        """Start a watch on both stores: from a revision that a key names, the store's
        or the next; or from 0, etcd's "from now on", once both have confirmed it."""
        start = data.draw(st.sampled_from(self.known_revisions()), label="start_revision")
        now = self.portal.call(self.memory.store.get_prefix, self.prefix)[1]
        memory, etcd = (
            Watcher(self.portal, side.store, self.prefix, side.revision(start))
            for side in (self.memory, self.etcd)
        )
        after = now if start == 0 else max(start - 1, self.memory_start)
        self.watches.append(WatchPair(memory, etcd, after))
        memory.wait_opened()
        etcd.wait_opened()

    @invariant()
    def same_keys_revision_and_events(self) -> None:
        memory = self.portal.call(self.memory.store.get_prefix_kv, self.prefix)
        etcd = self.portal.call(self.etcd.store.get_prefix_kv, self.prefix)
        assert self.with_revision(etcd) == memory
        for watch in self.watches:
            if memory[1] > watch.after:  # something was written since: it has events
                self.portal.call(watch.memory.caught_up, memory[1])
                self.portal.call(watch.etcd.caught_up, etcd[1])
            assert [self.from_etcd(e) for e in watch.etcd.events] == watch.memory.events


# Deterministic enough for a test that talks to a real server: no deadline (etcd's
# fsyncs vary), and few examples, so that a backend's run stays well under a minute.
STATEFUL_SETTINGS = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.slow
def test_memory_store_and_etcd_answer_alike(
    own_etcd_server: EtcdServer, anyio_backend: tuple[str, dict[str, Any]]
) -> None:
    backend, options = anyio_backend
    with start_blocking_portal(backend, options) as portal:
        store = portal.call(EtcdStore, own_etcd_server.endpoint)
        with portal.wrap_async_context_manager(store):
            # Any factory will do, though hypothesis annotates it as a class.
            run_state_machine_as_test(
                lambda: StoreMachine(portal, store),  # type: ignore[arg-type]
                settings=STATEFUL_SETTINGS,
            )
