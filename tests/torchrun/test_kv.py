"""TorchKV: TCPStore's semantics on a LeaseStore, in async code and with no torch.

Each test runs on asyncio, asyncio+uvloop and trio, and most on MemoryStore and a real
etcd. torch is never imported: the torch facade (``test_store.py``) only converts
arguments and errors around these.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any, cast

import anyio
import pytest

from anyrdzv import MemoryStore, Rendezvous, StoreConnectionError, StoreError
from anyrdzv.testing import CountingStore, FaultyStore
from anyrdzv.torchrun._kv import TorchKV, WaitTimeout

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyrdzv import LeaseStore

pytestmark = pytest.mark.anyio

LOGGER = "anyrdzv.torchrun._kv"
#: A generous bound on a call that should be quick, or on the overshoot of a timeout:
#: the tests run two at a time on two cores.
SLACK = 3.0
#: Loop clocks are floats: a deadline of start + 0.4 can read as 0.39999999999 after start.
EPSILON = 1e-6


@pytest.fixture
def counting(store: LeaseStore) -> CountingStore:
    return CountingStore(store)


@pytest.fixture
def kv(counting: CountingStore, key_prefix: str) -> TorchKV:
    return TorchKV(counting, f"{key_prefix}/kv/")


def take(store: CountingStore | FaultyStore) -> Counter[str]:
    """The calls counted so far, with the count started again."""
    calls = Counter(store.calls)
    store.calls.clear()
    return calls


async def called(store: CountingStore | FaultyStore, name: str, count: int = 1) -> None:
    """Wait until ``store`` has had ``count`` calls of ``name``."""
    with anyio.fail_after(SLACK):
        # The count has no event to wait for: look at it again and again.
        while store.calls[name] < count:  # noqa: ASYNC110 - see above
            await anyio.sleep(0.005)


class Outcome:
    """What a call run as a task returned or raised, and when."""

    def __init__(self) -> None:
        self.result: object = None
        self.error: BaseException | None = None
        self.at: float | None = None

    async def run(self, call: Callable[[], Awaitable[object]]) -> None:
        try:
            self.result = await call()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            self.error = exc
        self.at = anyio.current_time()


def test_importing_it_imports_no_torch() -> None:
    code = "import sys, anyrdzv.torchrun._kv\nassert 'torch' not in sys.modules\nprint('ok')"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


class TestConstruction:
    async def test_bad_arguments(self) -> None:
        memory = MemoryStore()
        with pytest.raises(TypeError, match="store must be a LeaseStore instance"):
            TorchKV(cast("Any", object()), "/p/")
        with pytest.raises(TypeError, match="store must be a LeaseStore instance"):
            TorchKV(cast("Any", MemoryStore), "/p/")
        with pytest.raises(TypeError, match="prefix must be a str, got bytes"):
            TorchKV(memory, cast("Any", b"/p/"))
        with pytest.raises(ValueError, match="prefix must end with '/', got '/p'"):
            TorchKV(memory, "/p")

    async def test_store_prefix_and_repr(self) -> None:
        memory = MemoryStore()
        kv = TorchKV(memory, "/p/")
        assert kv.store is memory
        assert kv.prefix == "/p/"
        assert "prefix='/p/'" in repr(kv)


class TestKeys:
    async def test_set_and_get(self, kv: TorchKV, counting: CountingStore) -> None:
        await kv.set("bytes", b"\xff\x00")
        await kv.set("", b"the empty key")
        assert await kv.get("bytes", None) == b"\xff\x00"
        assert await kv.get("", None) == b"the empty key"
        take(counting)
        await kv.set("k", b"v")
        assert take(counting) == Counter(put=1)
        assert await kv.get("k", None) == b"v"
        assert take(counting) == Counter(txn=1)
        await kv.set("k", b"")
        assert await kv.get("k", 0) == b""
        # Where it lives: prefix + key.
        stored = await counting.inner.get(f"{kv.prefix}k")
        assert stored is not None
        assert stored.value == b""

    async def test_add(self, kv: TorchKV, counting: CountingStore) -> None:
        assert await kv.add("zero", 0) == 0
        assert await kv.get("zero", None) == b"0"
        assert take(counting) == Counter(compare_and_swap=1, txn=1)
        assert await kv.add("n", 2) == 2
        assert take(counting) == Counter(compare_and_swap=1)  # created at once
        assert await kv.add("n", 5) == 7
        assert take(counting) == Counter(compare_and_swap=2)  # found, then swapped
        assert await kv.add("n", -10) == -3
        assert await kv.get("n", None) == b"-3"
        await kv.set("round/text", b"seven")
        started = anyio.current_time()
        with pytest.raises(ValueError, match="key 'round/text' holds b'seven', not an integer"):
            await kv.add("round/text", 1)
        assert anyio.current_time() - started < SLACK
        assert await kv.get("round/text", None) == b"seven"

    async def test_add_is_atomic(self, kv: TorchKV) -> None:
        answers: list[int] = []

        async def adder() -> None:
            for _ in range(5):
                answers.append(await kv.add("counter", 1))

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(adder)
        assert sorted(answers) == list(range(1, 16))
        assert await kv.get("counter", None) == b"15"

    async def test_compare_set(self, kv: TorchKV, counting: CountingStore) -> None:
        # missing, expected "": set, and the desired value returned
        assert await kv.compare_set("a", b"", b"first") == b"first"
        assert take(counting) == Counter(txn=1)
        assert await kv.get("a", None) == b"first"
        # missing, other expected: the expected value returned, nothing created
        assert await kv.compare_set("b", b"old", b"new") == b"old"
        assert not await kv.check(["b"])
        # present, mismatched: the current value returned
        assert await kv.compare_set("a", b"other", b"second") == b"first"
        assert await kv.compare_set("a", b"", b"second") == b"first"
        assert await kv.get("a", None) == b"first"
        take(counting)
        # present, matched: set, and the desired value returned
        assert await kv.compare_set("a", b"first", b"second") == b"second"
        assert take(counting) == Counter(txn=1)
        assert await kv.get("a", None) == b"second"
        # present and empty: "" matches it
        await kv.set("e", b"")
        assert await kv.compare_set("e", b"", b"filled") == b"filled"
        assert await kv.get("e", None) == b"filled"
        assert await kv.compare_set("c", b"", b"") == b""
        assert await kv.check(["c"])

    async def test_append(self, kv: TorchKV) -> None:
        await kv.append("log", b"a")
        await kv.append("log", b"b")
        assert await kv.get("log", None) == b"ab"

    async def test_check_delete_and_num_keys(self, kv: TorchKV, counting: CountingStore) -> None:
        assert await kv.check([])
        assert not await kv.check(["a"])
        await kv.set("a", b"1")
        await kv.set("b", b"2")
        take(counting)
        assert await kv.check(["a", "b", "a"])
        assert not await kv.check(["a", "c"])
        assert take(counting) == Counter(txn=2)
        assert await kv.num_keys() == 2
        assert await kv.delete("a")
        assert not await kv.delete("a")
        assert await kv.delete("b")
        assert await kv.num_keys() == 0

    async def test_multi_get_and_multi_set(self, kv: TorchKV, counting: CountingStore) -> None:
        keys = [f"k{index}" for index in range(130)]
        await kv.multi_set(keys, [str(index).encode() for index in range(130)])
        assert take(counting) == Counter(txn=2)  # 128 puts a txn
        values = await kv.multi_get([*reversed(keys), "k7"], None)
        assert values == [str(index).encode() for index in reversed(range(130))] + [b"7"]
        assert take(counting) == Counter(txn=2)
        assert await kv.multi_get([], None) == []
        await kv.multi_set(["d", "d"], [b"first", b"last"])
        assert await kv.get("d", None) == b"last"
        await kv.multi_set([], [])
        with pytest.raises(ValueError, match="shorter"):
            await kv.multi_set(["a", "b"], [b"1"])

    async def test_multi_set_splits_by_size(self, kv: TorchKV) -> None:
        big = b"x" * 600_000
        await kv.multi_set(["a", "b", "c"], [big, big, big])
        assert await kv.multi_get(["a", "b", "c"], None) == [big, big, big]


class TestWaits:
    async def test_get_waits_for_the_key(self, kv: TorchKV, counting: CountingStore) -> None:
        outcome = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(outcome.run, lambda: kv.get("late", None))
            await called(counting, "watch_prefix")
            await anyio.sleep(0.2)  # it waits on the watch: no more reads meanwhile
            assert outcome.at is None
            set_at = anyio.current_time()
            await kv.set("late", b"here")
        assert outcome.result == b"here"
        assert outcome.at is not None
        assert outcome.at >= set_at
        calls = take(counting)
        assert calls["txn"] == 1
        assert calls["watch_prefix"] == 1

    async def test_wait_and_multi_get_wait_for_every_key(
        self, kv: TorchKV, counting: CountingStore
    ) -> None:
        waited, got = Outcome(), Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(waited.run, lambda: kv.wait(["a", "b", "c", "a"], None))
            tg.start_soon(got.run, lambda: kv.multi_get(["c", "a", "b", "c"], None))
            await called(counting, "watch_prefix", 2)
            await kv.set("a", b"1")
            await kv.set("b", b"2")
            await kv.delete("a")
            await kv.set("c", b"3")
            await anyio.sleep(0.1)
            assert waited.at is None
            assert got.at is None
            last_at = anyio.current_time()
            await kv.set("a", b"4")
        assert waited.error is None
        assert waited.result is None
        assert got.result == [b"3", b"4", b"2", b"3"]
        assert waited.at is not None
        assert got.at is not None
        assert min(waited.at, got.at) >= last_at
        calls = take(counting)
        assert calls["txn"] == 2  # one read each
        assert calls["watch_prefix"] == 2

    async def test_wait_for_present_keys(self, kv: TorchKV) -> None:
        await kv.set("a", b"1")
        await kv.wait(["a"], None)
        await kv.wait(["a"], 0)
        await kv.wait([], None)
        assert await kv.multi_get(["a"], 0) == [b"1"]

    async def test_timeouts(self, kv: TorchKV) -> None:
        await kv.set("there", b"1")
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: kv.get("missing", 0.3),
            lambda: kv.wait(["there", "missing"], 0.3),
            lambda: kv.multi_get(["there", "missing", "gone"], 0.3),
            lambda: kv.wait(["missing"], 0.4),
        ]
        outcomes = [Outcome() for _ in calls]
        started = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for outcome, call in zip(outcomes, calls, strict=True):
                tg.start_soon(outcome.run, call)
        errors = [outcome.error for outcome in outcomes]
        assert all(isinstance(error, WaitTimeout) for error in errors), errors
        full = kv.prefix
        assert [str(error) for error in errors] == [
            f"wait timeout after 300ms, keys: {full}missing",
            f"wait timeout after 300ms, keys: {full}missing",
            f"wait timeout after 300ms, keys: {full}missing, {full}gone",
            f"wait timeout after 400ms, keys: {full}missing",
        ]
        elapsed = [cast("float", outcome.at) - started for outcome in outcomes]
        assert min(elapsed[:3]) >= 0.3 - EPSILON
        assert elapsed[3] >= 0.4 - EPSILON
        assert max(elapsed) < 0.4 + SLACK

    async def test_zero_only_checks_and_none_waits_for_ever(self, kv: TorchKV) -> None:
        started = anyio.current_time()
        with pytest.raises(WaitTimeout, match="wait timeout after 0ms"):
            await kv.wait(["missing"], 0)
        assert anyio.current_time() - started < SLACK
        outcome = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(outcome.run, lambda: kv.get("late", None))
            await anyio.sleep(0.25)
            assert outcome.at is None
            await kv.set("late", b"1")
        assert outcome.result == b"1"


async def watching(kv: TorchKV, counting: CountingStore, key: str) -> None:
    """Wait until the wait for ``key`` is on its watch: a key beside it, which the wait
    does not want, has come through the watch (``counting`` is under the watch's
    faults, so a fault made after this hits the watch)."""
    await kv.set(f"{key}-beside", b"")
    with anyio.fail_after(SLACK):
        while counting.events < 1:  # noqa: ASYNC110 - no event to wait for
            await anyio.sleep(0.005)


class TestBrokenWatches:
    @pytest.fixture
    def counting_faulty(self, store: LeaseStore) -> tuple[CountingStore, FaultyStore]:
        counting = CountingStore(store)
        return counting, FaultyStore(counting)

    async def test_a_broken_watch_resumes_with_no_read(
        self,
        counting_faulty: tuple[CountingStore, FaultyStore],
        key_prefix: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.WARNING, LOGGER)
        counting, faulty = counting_faulty
        kv = TorchKV(faulty, f"{key_prefix}/kv/")
        outcome = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(outcome.run, lambda: kv.get("k", None))
            await called(faulty, "watch_prefix")
            await watching(kv, counting, "k")
            faulty.break_watches()
            await called(faulty, "watch_prefix", 2)
            await kv.set("k", b"v")
        assert outcome.result == b"v"
        assert take(faulty)["txn"] == 1  # watched again from the next revision
        messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
        assert any("failed" in m and "was cut" in m for m in messages), messages

    async def test_a_watch_the_store_refuses_again_is_decided_by_a_read(
        self,
        counting_faulty: tuple[CountingStore, FaultyStore],
        key_prefix: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.WARNING, LOGGER)
        counting, faulty = counting_faulty
        kv = TorchKV(faulty, f"{key_prefix}/kv/")
        outcome = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(outcome.run, lambda: kv.get("k", None))
            await called(faulty, "watch_prefix")
            await watching(kv, counting, "k")
            faulty.fail("watch_prefix")
            faulty.hang("txn", times=1)  # the read: the test heals the store meanwhile
            faulty.break_watches()
            await called(faulty, "txn", 2)
            faulty.heal()
            await called(faulty, "watch_prefix", 3)  # the first, one refused, and one more
            await kv.set("k", b"v")
        assert outcome.result == b"v"
        calls = take(faulty)
        assert calls["txn"] == 2  # the keys read again
        assert "connection refused (a fault)" in caplog.text

    async def test_a_store_that_stays_down_fails_the_wait(
        self, counting_faulty: tuple[CountingStore, FaultyStore], key_prefix: str
    ) -> None:
        counting, faulty = counting_faulty
        kv = TorchKV(faulty, f"{key_prefix}/kv/")
        outcome = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(outcome.run, lambda: kv.get("never", None))
            await called(faulty, "watch_prefix")
            await watching(kv, counting, "never")
            cut_at = anyio.current_time()
            faulty.partition()
        assert isinstance(outcome.error, StoreConnectionError)
        assert outcome.at is not None
        assert outcome.at - cut_at < SLACK


class TestCompaction:
    """A watch that starts after its history was compacted: the keys are read again.
    MemoryStore alone, whose history is as short as a test wants."""

    @staticmethod
    async def compacted_during_the_watch(
        faulty: FaultyStore, memory: MemoryStore, write: Callable[[], Awaitable[object]]
    ) -> None:
        """Hold the wait's first watch until ``write()`` and two more writes have
        compacted the history it should start from."""
        await called(faulty, "watch_prefix")
        await write()
        for index in range(2):
            await memory.put(f"/elsewhere/{index}", b"")
        faulty.heal()

    async def test_a_key_written_meanwhile_is_found_by_the_read(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, LOGGER)
        memory = MemoryStore(history_limit=1)
        faulty = FaultyStore(memory)
        faulty.hang("watch_prefix", times=1)
        kv = TorchKV(faulty, "/p/")
        outcome = Outcome()
        async with anyio.create_task_group() as tg:
            tg.start_soon(outcome.run, lambda: kv.get("k", None))
            await self.compacted_during_the_watch(faulty, memory, lambda: memory.put("/p/k", b"v"))
        assert outcome.result == b"v"
        calls = take(faulty)
        assert calls["txn"] == 2
        assert calls["watch_prefix"] == 1
        assert "reading afresh" in caplog.text

    async def test_the_watch_widens_to_a_key_the_read_finds_gone(self) -> None:
        memory = MemoryStore(history_limit=1)
        faulty = FaultyStore(memory)
        kv = TorchKV(faulty, "/p/")
        await kv.set("a/x", b"1")
        faulty.hang("watch_prefix", times=1)
        outcome = Outcome()
        async with anyio.create_task_group() as tg:
            # a/x is there: the wait watches b/y alone.
            tg.start_soon(outcome.run, lambda: kv.multi_get(["a/x", "b/y"], None))
            await self.compacted_during_the_watch(faulty, memory, lambda: kv.delete("a/x"))
            await called(faulty, "watch_prefix", 2)  # both, from the read
            await kv.set("b/y", b"2")
            await anyio.sleep(0.05)
            assert outcome.at is None
            await kv.set("a/x", b"3")
        assert outcome.result == [b"3", b"2"]


class TestLease:
    """Every write puts its key under the lease it is given (the run's, in the backend),
    so that the keys expire with it when no node is left to delete them."""

    async def test_every_write_is_under_the_lease_and_goes_with_it(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        lease = await store.grant(60)
        kv = TorchKV(store, f"{key_prefix}/kv/", lease=lambda: lease.id)
        await kv.set("set", b"v")
        await kv.add("add", 2)
        await kv.add("add", 3)
        await kv.append("append", b"a")
        await kv.append("append", b"b")
        await kv.compare_set("cas-new", b"", b"x")
        await kv.compare_set("cas-new", b"x", b"y")
        await kv.multi_set(["m1", "m2"], [b"1", b"2"])
        kvs, _ = await store.get_prefix_kv(f"{key_prefix}/kv/")
        assert {kv.key.rsplit("/", 1)[1]: kv.lease for kv in kvs} == {
            name: lease.id for name in ("set", "add", "append", "cas-new", "m1", "m2")
        }
        await store.revoke(lease)
        assert await kv.num_keys() == 0

    async def test_without_a_lease_none(self, store: LeaseStore, key_prefix: str) -> None:
        kv = TorchKV(store, f"{key_prefix}/kv/", lease=lambda: None)
        await kv.set("k", b"v")
        found = await store.get(f"{key_prefix}/kv/k")
        assert found is not None
        assert found.lease is None


class TestRunLease:
    """The torchrun backend writes the torch store's keys under the run's lease
    (``Rendezvous.data_lease``): when the last node to leave was not the last alive (a
    killed node's lease outlived the others), no node deletes them, and they expire
    with the run lease."""

    @pytest.mark.slow
    async def test_the_keys_go_with_the_run_when_no_node_is_left_to_delete_them(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        options: dict[str, Any] = {
            "min_nodes": 2,
            "max_nodes": 2,
            "prefix": key_prefix,
            "keep_alive_interval": 0.5,
            "keep_alive_max_attempt": 4,  # a TTL of 2 s
            "last_call_timeout": 0.3,
        }
        run = f"{key_prefix}/run/"
        faulty = FaultyStore(store)
        b = Rendezvous(faulty, "run", node="b", **options)
        async with Rendezvous(store, "run", node="a", **options) as a:
            await b.__aenter__()
            async with anyio.create_task_group() as tg:
                tg.start_soon(b.next_rendezvous)
                await a.next_rendezvous()
            kv = TorchKV(store, a.data_prefix, lease=lambda: a.data_lease)
            await kv.set("MASTER_ADDR", b"10.0.0.1")
            await kv.add("counter", 1)
            # b crashes: its link to the store is cut, so its lease outlives it.
            faulty.partition()
            with contextlib.suppress(StoreError):
                await b.__aexit__(None, None, None)
        # a left first, within b's TTL: it was not the last alive, and deleted nothing.
        left = [kv.key for kv in (await store.get_prefix_kv(run))[0]]
        assert f"{run}store/MASTER_ADDR" in left
        assert f"{run}state" in left
        with anyio.fail_after(2 + 9 + SLACK):  # b's TTL, then the run lease's (2 x 2 + 5)
            while (await store.get_prefix_kv(run))[0]:  # noqa: ASYNC110 - expiry has no event
                await anyio.sleep(0.1)
