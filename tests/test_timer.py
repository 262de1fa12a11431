from __future__ import annotations

import datetime
import functools
import gc
import itertools
import math
import threading
import time
from typing import Any

import anyio
import pytest

from anyrdzv import PeriodicTimer, TimerStatistics

pytestmark = pytest.mark.anyio

CLOCK_SLACK = 0.002  # uvloop's clock counts whole milliseconds


def timer_tasks() -> list[str]:
    names = [t.name or "" for t in anyio.get_running_tasks()]
    return [n for n in names if n == "PeriodicTimer" or n.startswith("timer-")]


async def wait_for(predicate: Any, limit: float = 5.0) -> None:
    with anyio.fail_after(limit):
        # Polls state (task lists, counters) that has no event to wait on.
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.001)


class TestTorchContract:
    async def test_start_only_once(self) -> None:
        async with anyio.create_task_group() as tg:
            timer = PeriodicTimer(datetime.timedelta(seconds=0.01), lambda: None)
            timer.start(tg)
            with pytest.raises(RuntimeError, match=r"^The timer has already started\.$"):
                timer.start(tg)
            with pytest.raises(RuntimeError, match=r"^The timer has already started\.$"):
                timer.set_name("late")
            timer.cancel()

    async def test_cancel_many_times(self) -> None:
        async with anyio.create_task_group() as tg:
            timer = PeriodicTimer(0.01, lambda: None)
            timer.cancel()  # before start: nothing
            timer.start(tg)
            for _ in range(5):
                timer.cancel()

    async def test_cancel_before_start_does_nothing(self) -> None:
        calls: list[None] = []
        async with anyio.create_task_group() as tg:
            timer = PeriodicTimer(0.01, calls.append, None)
            timer.cancel()
            timer.start(tg)
            await wait_for(lambda: len(calls) >= 2)
            timer.cancel()

    async def test_cancel_stops_the_task(self) -> None:
        async with anyio.create_task_group() as tg:
            timer = PeriodicTimer(0.01, lambda: None)
            timer.set_name("timer-a")
            assert timer.name == "timer-a"
            timer.start(tg)
            await wait_for(lambda: "timer-a" in timer_tasks())
            timer.cancel()
            await wait_for(lambda: "timer-a" not in timer_tasks())

    async def test_default_task_name(self) -> None:
        async with anyio.create_task_group() as tg:
            timer = PeriodicTimer(0.01, lambda: None)
            assert timer.name is None
            timer.start(tg)
            await wait_for(lambda: "PeriodicTimer" in timer_tasks())
            timer.cancel()

    async def test_deleting_the_timer_stops_the_task(self) -> None:
        calls: list[int] = []
        async with anyio.create_task_group() as tg:
            timer = PeriodicTimer(0.005, calls.append, 1)
            timer.set_name("timer-gc")
            timer.start(tg)
            await wait_for(lambda: len(calls) >= 2)
            del timer
            gc.collect()
            await wait_for(lambda: "timer-gc" not in timer_tasks())
        count = len(calls)
        await anyio.sleep(0.03)
        assert len(calls) == count

    async def test_calls_at_intervals_with_args_and_kwargs(self) -> None:
        calls: list[tuple[float, Any, Any]] = []

        def record(a: int, *, b: str) -> None:
            calls.append((anyio.current_time(), a, b))

        async with anyio.create_task_group() as tg:
            start = anyio.current_time()
            timer = PeriodicTimer(datetime.timedelta(milliseconds=20), record, 7, b="x")
            timer.start(tg)
            await wait_for(lambda: len(calls) >= 5)
            timer.cancel()
        assert all((a, b) == (7, "x") for _, a, b in calls)
        times = [start] + [t for t, _, _ in calls]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert min(gaps) >= 0.020 - CLOCK_SLACK


class TestSpec:
    async def test_async_function_is_awaited(self) -> None:
        done: list[float] = []

        async def beat(tag: str) -> None:
            await anyio.sleep(0.005)
            done.append(anyio.current_time())

        async with anyio.create_task_group() as tg:
            timer = PeriodicTimer(0.01, beat, "x")
            timer.start(tg)
            await wait_for(lambda: len(done) >= 3)
            timer.cancel()
        assert timer.statistics().calls >= 3
        assert timer.statistics().last_duration >= 0.005 - CLOCK_SLACK

    async def test_fixed_delay_counts_from_the_end_of_the_call(self) -> None:
        starts: list[float] = []

        async def slow() -> None:
            starts.append(anyio.current_time())
            await anyio.sleep(0.03)

        async with anyio.create_task_group() as tg:
            timer = PeriodicTimer(0.02, slow)
            timer.start(tg)
            await wait_for(lambda: len(starts) >= 3)
            timer.cancel()
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert min(gaps) >= 0.05 - CLOCK_SLACK

    async def test_exception_propagates_to_the_task_group(self) -> None:
        def boom() -> None:
            raise KeyError("heartbeat failed")

        with pytest.RaisesGroup(pytest.RaisesExc(KeyError, match="heartbeat failed")):
            async with anyio.create_task_group() as tg:
                timer = PeriodicTimer(0.005, boom)  # kept: a collected timer stops
                timer.start(tg)
                await anyio.sleep(10)

    async def test_cancel_from_inside_the_function(self) -> None:
        calls: list[int] = []
        holder: list[PeriodicTimer] = []

        def beat() -> None:
            calls.append(1)
            if len(calls) == 2:
                holder[0].cancel()

        async with anyio.create_task_group() as tg:
            timer = PeriodicTimer(0.005, beat)
            holder.append(timer)
            timer.start(tg)
        assert len(calls) == 2

    async def test_cancel_from_another_thread(self) -> None:
        calls: list[int] = []
        async with anyio.create_task_group() as tg:
            timer = PeriodicTimer(0.005, calls.append, 1)
            timer.start(tg)
            await wait_for(lambda: len(calls) >= 2)
            thread = threading.Thread(target=timer.cancel)
            thread.start()
            await anyio.to_thread.run_sync(thread.join)
        assert calls

    async def test_cancel_in_flight_does_not_wait_for_the_call(self) -> None:
        entered = anyio.Event()

        async def long_call() -> None:
            entered.set()
            await anyio.sleep(60)

        async with anyio.create_task_group() as tg:
            timer = PeriodicTimer(0.005, long_call)
            timer.start(tg)
            await entered.wait()
            before = time.perf_counter()
            timer.cancel()
            returned = time.perf_counter() - before
            await timer.aclose()
        assert returned < 0.5  # it never blocks: no waiting for the 60 s call

    async def test_cancel_in_flight_from_another_thread(self) -> None:
        entered = anyio.Event()

        async def long_call() -> None:
            entered.set()
            await anyio.sleep(60)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                timer = PeriodicTimer(0.005, long_call)
                timer.start(tg)
                await entered.wait()
                await anyio.to_thread.run_sync(timer.cancel)

    async def test_aclose_waits_for_the_task(self) -> None:
        async with anyio.create_task_group() as tg:
            timer = PeriodicTimer(0.005, lambda: None)
            timer.set_name("timer-aclose")
            timer.start(tg)
            await wait_for(lambda: "timer-aclose" in timer_tasks())
            await timer.aclose()
            assert "timer-aclose" not in timer_tasks()
            await timer.aclose()

    async def test_aclose_before_start_returns_at_once(self) -> None:
        timer = PeriodicTimer(1, lambda: None)
        with anyio.fail_after(1):
            await timer.aclose()

    async def test_context_manager(self) -> None:
        calls: list[int] = []
        async with PeriodicTimer(0.005, calls.append, 1) as timer:
            assert isinstance(timer, PeriodicTimer)
            await wait_for(lambda: len(calls) >= 2)
            assert "PeriodicTimer" in timer_tasks()
        assert "PeriodicTimer" not in timer_tasks()
        count = len(calls)
        await anyio.sleep(0.02)
        assert len(calls) == count

    async def test_context_manager_propagates_function_error(self) -> None:
        def boom() -> None:
            raise ValueError("bad beat")

        with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="bad beat")):
            async with PeriodicTimer(0.005, boom):
                await anyio.sleep(10)

    async def test_statistics(self) -> None:
        timer = PeriodicTimer(0.005, lambda: None)
        assert timer.statistics() == TimerStatistics()
        async with anyio.create_task_group() as tg:
            timer.start(tg)
            await wait_for(lambda: timer.statistics().calls >= 3)
            timer.cancel()
        stats = timer.statistics()
        assert stats.calls >= 3
        assert -CLOCK_SLACK <= stats.last_lateness <= stats.max_lateness
        assert stats.last_duration >= 0

    async def test_blocking_function_in_a_worker_thread(self) -> None:
        threads: list[int] = []
        ticker_ran = 0

        def blocking() -> None:
            threads.append(threading.get_ident())
            time.sleep(0.02)

        async def ticker() -> None:
            nonlocal ticker_ran
            while True:
                await anyio.sleep(0.002)
                ticker_ran += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            timer = PeriodicTimer(0.005, functools.partial(anyio.to_thread.run_sync, blocking))
            timer.start(tg)
            await wait_for(lambda: len(threads) >= 3)
            timer.cancel()
            tg.cancel_scope.cancel()
        assert threading.get_ident() not in threads
        assert ticker_ran >= 5  # the loop kept running while the function blocked

    @pytest.mark.parametrize(
        "interval",
        [0, -1, -0.5, math.nan, math.inf, datetime.timedelta(0), datetime.timedelta(seconds=-1)],
    )
    async def test_bad_interval_is_value_error(self, interval: Any) -> None:
        with pytest.raises(ValueError, match="interval must be positive and finite, got"):
            PeriodicTimer(interval, lambda: None)

    @pytest.mark.parametrize("interval", ["1", None, True])
    async def test_bad_interval_type_is_type_error(self, interval: Any) -> None:
        with pytest.raises(TypeError, match="interval must be a number of seconds"):
            PeriodicTimer(interval, lambda: None)

    async def test_function_must_be_callable(self) -> None:
        with pytest.raises(TypeError, match="function must be callable"):
            PeriodicTimer(1, "not callable")  # type: ignore[arg-type]


def test_finalizer_after_the_loop_closed_is_silent() -> None:
    """Collect a started timer after its loop has closed: no unraisable warning."""
    for backend, options in (("asyncio", {}), ("asyncio", {"use_uvloop": True}), ("trio", {})):
        kept: list[PeriodicTimer] = []

        async def main(kept: list[PeriodicTimer]) -> None:
            async with anyio.create_task_group() as tg:
                timer = PeriodicTimer(0.005, lambda: None)
                timer.start(tg)
                kept.append(timer)
                await anyio.sleep(0.02)
                tg.cancel_scope.cancel()

        anyio.run(main, kept, backend=backend, backend_options=options)
        kept.clear()  # the finalizer runs now, with no loop
        gc.collect()


def test_finalizer_in_another_thread_is_silent() -> None:
    kept: list[PeriodicTimer] = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            kept.append(PeriodicTimer(0.005, lambda: None))  # the only reference
            kept[0].set_name("timer-thread-gc")
            kept[0].start(tg)
            await anyio.sleep(0.02)
            assert "timer-thread-gc" in timer_tasks()
            thread = threading.Thread(target=kept.clear)
            thread.start()
            await anyio.to_thread.run_sync(thread.join)
            gc.collect()
            await wait_for(lambda: "timer-thread-gc" not in timer_tasks())

    anyio.run(main)
