"""TorchStore: torch's Store on a LeaseStore, called as torch calls it.

Each test runs on the three loop backends and on both stores, mostly through
``PrefixStore`` (the C++ trampoline, as torchrun's agent calls it). torch is imported
inside the fixtures and tests, so that this module collects without it.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import threading
import time
import warnings
from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, cast

import anyio
import pytest

from anyrdzv import EtcdStore, LeaseStore, MemoryStore
from anyrdzv.testing import CountingStore
from anyrdzv.torchrun._loop import BACKENDS, LoopThread

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from torch._C._distributed_c10d import Store

    from anyrdzv.torchrun._store import TorchStore
    from tests._support.etcd_server import EtcdServer

pytestmark = pytest.mark.usefixtures("torch_installed")


class BoundStore(Protocol):
    """A ``PrefixStore`` as torch's binding has it: its 2.13 stubs lack ``timeout``,
    ``append``, ``multi_set`` and ``clone``, and take values as ``str`` alone."""

    @property
    def timeout(self) -> timedelta: ...

    def set_timeout(self, timeout: timedelta) -> None: ...

    def set(self, key: str, value: str | bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def add(self, key: str, value: int) -> int: ...

    def append(self, key: str, value: str | bytes) -> None: ...

    def compare_set(self, key: str, expected_value: str, desired_value: str) -> bytes: ...

    def wait(self, keys: list[str], timeout: timedelta = ...) -> None: ...

    def check(self, keys: list[str]) -> bool: ...

    def multi_get(self, keys: list[str]) -> list[bytes]: ...

    def multi_set(self, keys: list[str], values: list[str] | list[bytes]) -> None: ...

    def delete_key(self, key: str) -> bool: ...

    def num_keys(self) -> int: ...

    def clone(self) -> BoundStore: ...


ROUND = "torch.rendezvous.job.0"
SHORT = timedelta(seconds=0.3)
#: A generous bound on a call that should be quick, or on the overshoot of a timeout:
#: the tests run two at a time on two cores.
SLACK = 3.0
#: Loop clocks are floats: a deadline of start + 0.4 can read as 0.39999999999 after start.
EPSILON = 1e-6


def take(counting: CountingStore) -> Counter[str]:
    """The calls counted so far, with the count started again."""
    calls = Counter(counting.calls)
    counting.calls.clear()
    return calls


async def _memory_store() -> MemoryStore:
    return MemoryStore()


async def _task_count() -> int:
    return len(anyio.get_running_tasks())


async def _until_tasks_at_most(count: int) -> int:
    with anyio.move_on_after(SLACK):
        # The task list has no event to wait for: look at it again and again.
        while len(anyio.get_running_tasks()) > count + 1:  # noqa: ASYNC110 - + this task
            await anyio.sleep(0.01)
    return len(anyio.get_running_tasks()) - 1


@pytest.fixture(scope="module", params=BACKENDS)
def loop(request: pytest.FixtureRequest) -> Iterator[LoopThread]:
    """A loop thread on each backend, shared by the tests of this module."""
    loop = LoopThread(request.param)
    yield loop
    loop.stop()


@pytest.fixture(params=BACKENDS)
def own_loop(request: pytest.FixtureRequest) -> Iterator[LoopThread]:
    """A loop thread on each backend, for one test, which may stop it."""
    loop = LoopThread(request.param)
    yield loop
    loop.stop()


@pytest.fixture(scope="module", params=["memory", "etcd"])
def counting(request: pytest.FixtureRequest, loop: LoopThread) -> Iterator[CountingStore]:
    """Each store, entered in the loop thread, behind a call counter; shared by the
    tests of this module, each under its own key prefix."""
    if request.param == "memory":
        yield CountingStore(loop.run(_memory_store))
        return
    server: EtcdServer = request.getfixturevalue("etcd_server")
    with loop.check().wrap_async_context_manager(EtcdStore(server.endpoint)) as etcd:
        yield CountingStore(etcd)


@pytest.fixture
def torch_store(loop: LoopThread, counting: CountingStore, key_prefix: str) -> TorchStore:
    from anyrdzv.torchrun._store import TorchStore

    store = TorchStore(
        loop, cast("LeaseStore", counting), f"{key_prefix}/store/", timeout=timedelta(seconds=20)
    )
    take(counting)
    return store


@pytest.fixture
def prefix_store(torch_store: TorchStore) -> BoundStore:
    """The round store torchrun's agent is given: the test keeps the TorchStore alive."""
    from torch._C._distributed_c10d import PrefixStore

    return cast("BoundStore", PrefixStore(ROUND, torch_store))


def _in_thread(func: Callable[[], object]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``func`` in a thread; the dict gets its ``result`` or ``error``, and ``at``."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = func()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            outcome["error"] = exc
        outcome["at"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _wait_for_call(counting: CountingStore, name: str, count: int = 1) -> None:
    deadline = time.monotonic() + SLACK
    while counting.calls[name] < count:
        assert time.monotonic() < deadline, f"no {name} call: {counting.calls}"
        time.sleep(0.005)


class TestConstruction:
    def test_bad_arguments(self, loop: LoopThread) -> None:
        from anyrdzv.torchrun._store import TorchStore

        memory = loop.run(_memory_store)
        with pytest.raises(TypeError, match="loop must be a LoopThread, got str"):
            TorchStore(cast("Any", "asyncio"), memory, "/p/")
        with pytest.raises(TypeError, match="store must be a LeaseStore instance"):
            TorchStore(loop, cast("Any", object()), "/p/")
        with pytest.raises(TypeError, match="store must be a LeaseStore instance"):
            TorchStore(loop, cast("Any", MemoryStore), "/p/")
        with pytest.raises(TypeError, match="prefix must be a str, got bytes"):
            TorchStore(loop, memory, cast("Any", b"/p/"))
        with pytest.raises(ValueError, match="prefix must end with '/', got '/p'"):
            TorchStore(loop, memory, "/p")
        with pytest.raises(TypeError, match=r"timeout must be a datetime.timedelta, got int 5"):
            TorchStore(loop, memory, "/p/", timeout=cast("Any", 5))
        with pytest.raises(ValueError, match="timeout must not be negative"):
            TorchStore(loop, memory, "/p/", timeout=timedelta(seconds=-1))

    def test_timeout_and_repr(self, loop: LoopThread) -> None:
        from anyrdzv.torchrun._store import TorchStore

        memory = loop.run(_memory_store)
        assert TorchStore(loop, memory, "/p/").timeout == timedelta(seconds=300)
        store = TorchStore(loop, memory, "/p/", timeout=timedelta(seconds=7))
        assert store.timeout == timedelta(seconds=7)
        assert store.prefix == "/p/"
        assert "prefix='/p/'" in repr(store)


class TestTorchStore:
    def test_set_and_get(
        self,
        torch_store: TorchStore,
        prefix_store: BoundStore,
        counting: CountingStore,
        loop: LoopThread,
    ) -> None:
        torch_store.set("str", "välue")
        torch_store.set("bytes", b"\xff\x00")
        torch_store.set("bytearray", bytearray(b"ba"))
        torch_store.set("memoryview", memoryview(b"mv"))
        torch_store.set("", "the empty key")
        assert torch_store.get("str") == "välue".encode()
        assert torch_store.get("bytes") == b"\xff\x00"
        assert torch_store.get("bytearray") == b"ba"
        assert torch_store.get("memoryview") == b"mv"
        assert torch_store.get("") == b"the empty key"
        take(counting)
        prefix_store.set("k", "v")  # bytes through C++
        assert take(counting) == Counter(put=1)
        assert prefix_store.get("k") == b"v"
        assert take(counting) == Counter(txn=1)
        prefix_store.set("k", b"")
        assert prefix_store.get("k") == b""
        # Where it lives: prefix + key.
        kv = loop.run(counting.inner.get, f"{torch_store.prefix}{ROUND}/k")
        assert kv is not None
        assert kv.value == b""

    def test_bad_values_and_keys(self, torch_store: TorchStore) -> None:
        with pytest.raises(TypeError, match="value must be bytes, bytearray, memoryview or str"):
            torch_store.set("k", cast("Any", 5))
        with pytest.raises(TypeError, match="key must be a str, got int 5"):
            torch_store.get(cast("Any", 5))
        with pytest.raises(ValueError, match="value must be encodable as UTF-8"):
            torch_store.set("k", "\ud800")
        with pytest.raises(TypeError, match="keys must be a list of str, got str 'ab'"):
            torch_store.wait(cast("Any", "ab"))
        with pytest.raises(TypeError, match=r"keys\[1\] must be a str, got int 1"):
            torch_store.check(cast("Any", ["a", 1]))
        with pytest.raises(TypeError, match="timeout must be a datetime.timedelta, got float"):
            torch_store.wait(["a"], cast("Any", 1.0))
        with pytest.raises(ValueError, match="timeout must not be negative"):
            torch_store.wait(["a"], timedelta(seconds=-1))
        with pytest.raises(TypeError, match="value must be an int, got bool True"):
            torch_store.add("n", cast("Any", True))
        with pytest.raises(TypeError, match="expected_value must be bytes"):
            torch_store.compare_set("c", cast("Any", None), "x")
        with pytest.raises(ValueError, match="got 2 keys and 1 values"):
            torch_store.multi_set(["a", "b"], ["1"])
        with pytest.raises(TypeError, match=r"values\[0\] must be bytes"):
            torch_store.multi_set(["a"], cast("Any", [1]))
        with pytest.raises(ValueError, match="value is too large"):
            torch_store.set("big", b"x" * 2_000_000)
        assert not torch_store.check(["k", "a", "big"])  # nothing was written

    def test_add(
        self, prefix_store: BoundStore, torch_store: TorchStore, counting: CountingStore
    ) -> None:
        assert prefix_store.add("zero", 0) == 0
        assert prefix_store.get("zero") == b"0"
        assert take(counting) == Counter(compare_and_swap=1, txn=1)
        assert prefix_store.add("n", 2) == 2
        assert take(counting) == Counter(compare_and_swap=1)  # created at once
        assert prefix_store.add("n", 5) == 7
        assert take(counting) == Counter(compare_and_swap=2)  # found, then swapped
        assert prefix_store.add("n", -10) == -3
        assert prefix_store.get("n") == b"-3"
        prefix_store.set("text", "seven")
        started = time.monotonic()
        with pytest.raises(ValueError, match=rf"key '{ROUND}/text' holds b'seven', not an integer"):
            prefix_store.add("text", 1)
        assert time.monotonic() - started < SLACK
        assert prefix_store.get("text") == b"seven"
        assert torch_store.add(f"{ROUND}/n", 3) == 0  # direct calls see the same keys

    def test_compare_set(self, prefix_store: BoundStore, counting: CountingStore) -> None:
        # missing, expected "": set, and the desired value returned
        assert prefix_store.compare_set("a", "", "first") == b"first"
        assert take(counting) == Counter(txn=1)
        assert prefix_store.get("a") == b"first"
        # missing, other expected: the expected value returned, nothing created
        assert prefix_store.compare_set("b", "old", "new") == b"old"
        assert not prefix_store.check(["b"])
        # present, mismatched: the current value returned
        assert prefix_store.compare_set("a", "other", "second") == b"first"
        assert prefix_store.compare_set("a", "", "second") == b"first"
        assert prefix_store.get("a") == b"first"
        take(counting)
        # present, matched: set, and the desired value returned
        assert prefix_store.compare_set("a", "first", "second") == b"second"
        assert take(counting) == Counter(txn=1)
        assert prefix_store.get("a") == b"second"
        # present and empty: "" matches it
        prefix_store.set("e", "")
        assert prefix_store.compare_set("e", "", "filled") == b"filled"
        assert prefix_store.get("e") == b"filled"
        assert prefix_store.compare_set("c", "", "") == b""
        assert prefix_store.check(["c"])

    def test_append(self, prefix_store: BoundStore) -> None:
        prefix_store.append("log", "a")
        prefix_store.append("log", b"b")
        assert prefix_store.get("log") == b"ab"

    def test_check_delete_and_num_keys(
        self, prefix_store: BoundStore, torch_store: TorchStore, counting: CountingStore
    ) -> None:
        assert prefix_store.check([])
        assert not prefix_store.check(["a"])
        prefix_store.set("a", "1")
        prefix_store.set("b", "2")
        take(counting)
        assert prefix_store.check(["a", "b", "a"])
        assert not prefix_store.check(["a", "c"])
        assert take(counting) == Counter(txn=2)
        assert prefix_store.num_keys() == 2
        assert torch_store.num_keys() == torch_store.getNumKeys() == 2
        assert prefix_store.delete_key("a")
        assert not prefix_store.delete_key("a")
        assert not torch_store.delete_key(f"{ROUND}/a")
        assert torch_store.deleteKey(f"{ROUND}/b")
        assert prefix_store.num_keys() == 0

    def test_multi_get_and_multi_set(
        self, prefix_store: BoundStore, counting: CountingStore
    ) -> None:
        keys = [f"k{index}" for index in range(130)]
        prefix_store.multi_set(keys, [str(index) for index in range(130)])
        assert take(counting) == Counter(txn=2)  # 128 puts a txn
        values = prefix_store.multi_get([*reversed(keys), "k7"])
        assert values == [str(index).encode() for index in reversed(range(130))] + [b"7"]
        assert take(counting) == Counter(txn=2)
        assert prefix_store.multi_get([]) == []
        prefix_store.multi_set(["d", "d"], ["first", "last"])
        assert prefix_store.get("d") == b"last"
        prefix_store.multi_set([], [])

    def test_clone(self, prefix_store: BoundStore, torch_store: TorchStore) -> None:
        twin = torch_store.clone()
        assert twin is not torch_store
        assert twin.prefix == torch_store.prefix
        assert twin.timeout == torch_store.timeout
        prefix_store.set("k", "v")
        # torch keeps no reference to the Python half of this clone: the store does.
        cloned = prefix_store.clone()
        assert cloned.get("k") == b"v"
        assert twin.get(f"{ROUND}/k") == b"v"

    def test_lifetime(self, loop: LoopThread, key_prefix: str) -> None:
        from torch._C._distributed_c10d import PrefixStore

        from anyrdzv.torchrun._store import TorchStore

        torch_store = TorchStore(loop, loop.run(_memory_store), f"{key_prefix}/")
        wrapped = PrefixStore(ROUND, torch_store)
        nested = PrefixStore("inner", wrapped)
        gc.collect()
        nested.set("k", "v")
        assert wrapped.get("inner/k") == b"v"
        assert nested.add("n", 1) == 1
        assert nested.num_keys() == 2


class TestBlocking:
    def test_get_waits_for_the_key(self, prefix_store: BoundStore, counting: CountingStore) -> None:
        thread, outcome = _in_thread(lambda: prefix_store.get("late"))
        _wait_for_call(counting, "watch_prefix")
        time.sleep(0.2)  # it waits on the watch: no more reads meanwhile
        assert "at" not in outcome
        set_at = time.monotonic()
        prefix_store.set("late", "here")
        thread.join(SLACK)
        assert outcome["result"] == b"here"
        assert outcome["at"] >= set_at
        calls = take(counting)
        assert calls["txn"] == 1
        assert calls["watch_prefix"] == 1

    def test_wait_for_present_keys(self, prefix_store: BoundStore) -> None:
        prefix_store.set("a", "1")
        prefix_store.wait(["a"])
        prefix_store.wait(["a"], timedelta(0))
        prefix_store.wait([])

    def test_timeouts(self, prefix_store: BoundStore, torch_store: TorchStore) -> None:
        import torch.distributed as dist

        prefix_store.set_timeout(SHORT)  # through PrefixStore, read at call time
        assert torch_store.timeout == SHORT
        prefix_store.set("there", "1")
        calls: list[Callable[[], object]] = [
            lambda: prefix_store.get("missing"),
            lambda: prefix_store.wait(["there", "missing"]),
            lambda: prefix_store.multi_get(["there", "missing", "gone"]),
            lambda: prefix_store.wait(["missing"], timedelta(seconds=0.4)),
        ]
        started = time.monotonic()
        runs = [_in_thread(call) for call in calls]
        for thread, _ in runs:
            thread.join(SHORT.total_seconds() + SLACK)
        errors = [outcome["error"] for _, outcome in runs]
        assert all(isinstance(error, dist.DistStoreError) for error in errors), errors
        full = f"{torch_store.prefix}{ROUND}"
        assert [str(error) for error in errors] == [
            f"wait timeout after 300ms, keys: {full}/missing",
            f"wait timeout after 300ms, keys: {full}/missing",
            f"wait timeout after 300ms, keys: {full}/missing, {full}/gone",
            f"wait timeout after 400ms, keys: {full}/missing",
        ]
        elapsed = [outcome["at"] - started for _, outcome in runs]
        assert min(elapsed[:3]) >= 0.3 - EPSILON
        assert elapsed[3] >= 0.4 - EPSILON
        assert max(elapsed) < 0.4 + SLACK

    def test_zero_timeouts(self, prefix_store: BoundStore) -> None:
        import torch.distributed as dist

        started = time.monotonic()
        with pytest.raises(dist.DistStoreError, match="wait timeout after 0ms"):
            prefix_store.wait(["missing"], timedelta(0))  # an explicit zero only checks
        assert time.monotonic() - started < SLACK
        prefix_store.set_timeout(timedelta(0))  # as in TCPStore: no timeout at all
        thread, outcome = _in_thread(lambda: prefix_store.get("late"))
        time.sleep(0.25)
        assert "at" not in outcome
        prefix_store.set("late", "1")
        thread.join(SLACK)
        assert outcome["result"] == b"1"


class TestTorchUtilities:
    def test_barrier(self, torch_store: TorchStore) -> None:
        import torch.distributed as dist
        from torch._C._distributed_c10d import PrefixStore
        from torch.distributed.elastic.utils.store import barrier

        def member(prefix: str, world_size: int, timeout: float) -> None:
            barrier(PrefixStore(ROUND, torch_store), world_size, prefix, barrier_timeout=timeout)

        runs = [_in_thread(lambda: member("all", 3, 10)) for _ in range(3)]
        for thread, _ in runs:
            thread.join(SLACK * 2)
        assert [outcome.get("error") for _, outcome in runs] == [None] * 3

        started = time.monotonic()
        runs = [_in_thread(lambda: member("short", 3, 0.3)) for _ in range(2)]
        for thread, _ in runs:
            thread.join(SLACK * 2)
        errors = [outcome.get("error") for _, outcome in runs]
        assert all(isinstance(error, dist.DistStoreError) for error in errors), errors
        for _, outcome in runs:
            assert 0.3 <= outcome["at"] - started < 0.3 + SLACK

    def test_rendezvous_store_info(self, prefix_store: BoundStore) -> None:
        from torch.distributed.elastic.rendezvous import RendezvousStoreInfo

        follower, followed = _in_thread(
            lambda: RendezvousStoreInfo.build(1, cast("Store", prefix_store), "127.0.0.2")
        )
        leader = RendezvousStoreInfo.build(0, cast("Store", prefix_store), "127.0.0.1")
        follower.join(SLACK)
        assert leader.master_addr == "127.0.0.1"
        assert followed["result"] == leader
        assert prefix_store.get("MASTER_PORT") == str(leader.master_port).encode()


class TestFailures:
    def test_a_signal_interrupts_a_blocking_get(
        self, prefix_store: BoundStore, loop: LoopThread
    ) -> None:
        if threading.current_thread() is not threading.main_thread():
            pytest.skip("signal handlers run in the main thread")

        class Interrupted(Exception):
            pass

        def handler(signum: int, frame: object) -> None:
            raise Interrupted

        sent: list[float] = []

        def send() -> None:
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGUSR1)

        tasks = loop.run(_task_count) - 1
        previous = signal.signal(signal.SIGUSR1, handler)
        timer = threading.Timer(0.2, send)
        try:
            timer.start()
            with pytest.raises(Interrupted):
                prefix_store.get("never")
            returned = time.monotonic()
        finally:
            timer.cancel()
            signal.signal(signal.SIGUSR1, previous)
        assert returned - sent[0] < 0.2
        # The task of the get is cancelled: none is left, and the loop works.
        assert loop.run(_until_tasks_at_most, tasks) == tasks
        prefix_store.set("after", "1")
        assert prefix_store.get("after") == b"1"

    def test_a_forked_child_gets_an_error(self, prefix_store: BoundStore) -> None:
        prefix_store.set("k", "v")
        reader, writer = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12: fork with threads
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.close(reader)
                try:
                    prefix_store.get("k")
                    answer = "no error"
                except BaseException as exc:  # noqa: BLE001 - reported to the parent
                    answer = f"{type(exc).__name__}: {exc}"
                os.write(writer, answer.encode())
            finally:
                os._exit(0)
        os.close(writer)
        ready: list[int] = []
        try:
            ready, _, _ = select.select([reader], [], [], 10)
            answer = os.read(reader, 10_000).decode() if ready else "the child hung"
        finally:
            os.close(reader)
            if not ready:
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        assert answer.startswith(f"DistError: get('{ROUND}/k'): the store's event loop cannot")
        assert "inherited through fork()" in answer
        assert prefix_store.get("k") == b"v"  # the parent's still works

    def test_a_stopped_loop(self, own_loop: LoopThread) -> None:
        import torch.distributed as dist
        from torch._C._distributed_c10d import PrefixStore

        from anyrdzv.torchrun._store import TorchStore

        torch_store = TorchStore(own_loop, own_loop.run(_memory_store), "/p/")
        store = PrefixStore(ROUND, torch_store)
        store.set("k", "v")
        own_loop.stop()
        with pytest.raises(dist.DistError, match="its event loop thread has stopped"):
            store.get("k")

    def test_unreachable_etcd(
        self, own_loop: LoopThread, own_etcd_server: EtcdServer, key_prefix: str
    ) -> None:
        import torch.distributed as dist
        from torch._C._distributed_c10d import PrefixStore

        from anyrdzv.torchrun._store import TorchStore

        etcd = EtcdStore(own_etcd_server.endpoint, timeout=1)
        with own_loop.check().wrap_async_context_manager(etcd):
            counting = CountingStore(etcd)
            torch_store = TorchStore(own_loop, cast("LeaseStore", counting), f"{key_prefix}/s/")
            store = PrefixStore(ROUND, torch_store)
            store.set("k", "v")
            thread, outcome = _in_thread(lambda: store.get("never"))
            _wait_for_call(counting, "watch_prefix")
            time.sleep(0.1)  # for the watch to be made
            killed = time.monotonic()
            own_etcd_server.kill()
            # Meanwhile, a call that is not waiting for a key fails in the same way.
            with pytest.raises(dist.DistNetworkError, match=r"set\('torch.rendezvous"):
                store.set("k", "w")
            assert time.monotonic() - killed < 1 + SLACK
            thread.join(1 + SLACK)
            error = outcome["error"]
            assert isinstance(error, dist.DistNetworkError)
            assert str(error).startswith(f"get('{ROUND}/never') failed on CountingStore(EtcdStore(")
            assert outcome["at"] - killed < 1 + SLACK
