from __future__ import annotations

import contextvars
import datetime
import functools
import gc
import itertools
import math
import threading
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from anyrdzv import PeriodicTimer, TimerStatistics
from tests._support.typecheck import mypy_strict

if TYPE_CHECKING:
    from pathlib import Path

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

        with pytest.raises(ValueError, match="bad beat"):
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


class TestContextManagerMisuse:
    async def test_exit_without_enter(self) -> None:
        timer = PeriodicTimer(0.005, lambda: None)
        with pytest.raises(RuntimeError, match=r"^PeriodicTimer was not entered$"):
            await timer.__aexit__(None, None, None)
        assert timer_tasks() == []

    async def test_exit_twice(self) -> None:
        timer = PeriodicTimer(0.005, lambda: None)
        async with timer:
            pass
        with pytest.raises(RuntimeError, match=r"^PeriodicTimer was not entered$"):
            await timer.__aexit__(None, None, None)

    async def test_enter_twice(self) -> None:
        calls: list[int] = []
        async with PeriodicTimer(0.005, calls.append, 1) as timer:
            with pytest.raises(RuntimeError, match=r"^PeriodicTimer was already entered$"):
                await timer.__aenter__()
            assert timer_tasks() == ["PeriodicTimer"]  # nothing more was started
            await wait_for(lambda: len(calls) >= 2)  # the first entry still runs
        assert timer_tasks() == []

    async def test_enter_a_started_timer(self) -> None:
        async with anyio.create_task_group() as tg:
            timer = PeriodicTimer(0.005, lambda: None)
            timer.start(tg)
            with pytest.raises(RuntimeError, match=r"^The timer has already started\.$"):
                await timer.__aenter__()
            with pytest.raises(RuntimeError, match=r"^PeriodicTimer was not entered$"):
                await timer.__aexit__(None, None, None)
            await timer.aclose()

    async def test_enter_after_exit(self) -> None:
        timer = PeriodicTimer(0.005, lambda: None)
        async with timer:
            pass
        with pytest.raises(RuntimeError, match=r"^The timer has already started\.$"):
            async with timer:
                pytest.fail("entered again")
        assert timer_tasks() == []


class TestExceptionsLeaveAsThemselves:
    """``async with PeriodicTimer``: what is raised leaves as itself, not in a group,
    with a sync function (the shared task) and an async one (a task of its own)."""

    @staticmethod
    def failing(error: BaseException, kind: str) -> Any:
        def sync_fn() -> None:
            raise error

        async def async_fn() -> None:
            raise error

        return sync_fn if kind == "sync" else async_fn

    @pytest.mark.parametrize("kind", ["sync", "async"])
    async def test_the_blocks_error(self, kind: str) -> None:
        error = ValueError("the block's own")
        with pytest.raises(ValueError, match="the block's own") as caught:
            async with PeriodicTimer(0.005, self.failing(KeyError("never"), kind)):
                raise error
        assert caught.value is error
        assert timer_tasks() == []

    @pytest.mark.parametrize("kind", ["sync", "async"])
    async def test_the_functions_error_cancels_the_block(self, kind: str) -> None:
        error = KeyError("the beat failed")
        cancelled = False
        with pytest.raises(KeyError, match="the beat failed") as caught:
            async with PeriodicTimer(0.005, self.failing(error, kind)):
                try:
                    await anyio.sleep(10)
                except anyio.get_cancelled_exc_class():
                    cancelled = True
                    raise
        assert caught.value is error
        assert cancelled

    @pytest.mark.parametrize("kind", ["sync", "async"])
    async def test_both_at_once_leave_together(self, kind: str) -> None:
        mine, theirs = ValueError("the block's own"), KeyError("the beat failed")
        with pytest.RaisesGroup(ValueError, KeyError) as caught:
            async with PeriodicTimer(0.005, self.failing(theirs, kind)):
                try:
                    await anyio.sleep(10)
                finally:
                    raise mine  # as it handles the cancellation the failure caused
        assert list(caught.value.exceptions) == [mine, theirs]

    async def test_an_outer_cancellation(self) -> None:
        calls: list[int] = []
        with anyio.move_on_after(0.05) as scope:
            async with PeriodicTimer(0.005, calls.append, 1):
                await anyio.sleep(10)
        assert scope.cancelled_caught
        assert calls
        assert timer_tasks() == []

    async def test_keyboard_interrupt_in_the_block(self) -> None:
        with pytest.raises(KeyboardInterrupt):
            async with PeriodicTimer(0.005, lambda: None):
                raise KeyboardInterrupt
        assert timer_tasks() == []

    @pytest.mark.parametrize("anyio_backend", ["trio"])
    @pytest.mark.parametrize("kind", ["sync", "async"])
    async def test_keyboard_interrupt_in_the_function(self, kind: str) -> None:
        """On trio, Ctrl-C lands in whatever code runs, the timer's included (asyncio
        takes a task's KeyboardInterrupt out of the event loop itself)."""
        with pytest.raises(KeyboardInterrupt):
            async with PeriodicTimer(0.005, self.failing(KeyboardInterrupt(), kind)):
                await anyio.sleep(10)


class TestSharedTask:
    """Unnamed timers with sync functions, started together, share one task."""

    async def test_timers_started_together_share_one_task(self) -> None:
        counts = [0] * 50

        def beat(i: int) -> None:
            counts[i] += 1

        async with anyio.create_task_group() as tg:
            timers = [PeriodicTimer(0.005 + i * 0.0005, beat, i) for i in range(50)]
            for timer in timers:
                timer.start(tg)
            await wait_for(lambda: min(counts) >= 3)
            assert timer_tasks() == ["PeriodicTimer"]
            for timer in timers:
                timer.cancel()
        assert [t.statistics().calls for t in timers] == counts

    async def test_named_and_async_timers_have_their_own_tasks(self) -> None:
        async def async_beat() -> None:
            await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            unnamed = [PeriodicTimer(0.005, lambda: None) for _ in range(3)]
            named = PeriodicTimer(0.005, lambda: None)
            named.set_name("timer-named")
            asynchronous = PeriodicTimer(0.005, async_beat)
            for timer in [*unnamed, named, asynchronous]:
                timer.start(tg)
            await wait_for(lambda: len(timer_tasks()) == 3)
            assert sorted(timer_tasks()) == ["PeriodicTimer", "PeriodicTimer", "timer-named"]
            tg.cancel_scope.cancel()

    async def test_a_timer_started_later_gets_a_new_task(self) -> None:
        calls: list[str] = []
        async with anyio.create_task_group() as tg:
            first = PeriodicTimer(0.005, calls.append, "first")
            first.start(tg)
            await wait_for(lambda: "first" in calls)
            second = PeriodicTimer(0.005, calls.append, "second")
            second.start(tg)
            await wait_for(lambda: "second" in calls)
            assert timer_tasks() == ["PeriodicTimer", "PeriodicTimer"]
            await first.aclose()
            await wait_for(lambda: timer_tasks() == ["PeriodicTimer"])
            count = calls.count("second")
            await wait_for(lambda: calls.count("second") > count)  # the other one goes on
            await second.aclose()
            assert timer_tasks() == []

    @pytest.mark.parametrize("count", [1, 3])
    async def test_aclose_before_the_task_began(self, count: int) -> None:
        calls: list[int] = []
        async with anyio.create_task_group() as tg:
            timers = [PeriodicTimer(0.005, calls.append, 1) for _ in range(count)]
            for timer in timers:
                timer.start(tg)
            with anyio.fail_after(2):
                for timer in timers:
                    await timer.aclose()
            assert timer_tasks() == []
        assert calls == []

    async def test_timers_in_other_task_groups_do_not_share(self) -> None:
        calls: list[str] = []
        async with anyio.create_task_group() as tg1:
            async with anyio.create_task_group() as tg2:
                a = PeriodicTimer(0.005, calls.append, "a")
                b = PeriodicTimer(0.005, calls.append, "b")
                c = PeriodicTimer(0.005, calls.append, "c")
                a.start(tg1)
                b.start(tg2)
                c.start(tg1)
                await wait_for(lambda: {"a", "b", "c"} <= set(calls))
                tg2.cancel_scope.cancel()
            count = len(calls)
            await wait_for(lambda: len(calls) >= count + 4)  # tg1's timers go on
            assert "b" not in calls[count:]
            tg1.cancel_scope.cancel()

    async def test_each_schedule_is_kept(self) -> None:
        times: dict[int, list[float]] = {1: [], 2: [], 3: []}

        def beat(k: int) -> None:
            times[k].append(anyio.current_time())

        async with anyio.create_task_group() as tg:
            start = anyio.current_time()
            timers = [PeriodicTimer(0.01 * k, beat, k) for k in (1, 2, 3)]
            for timer in timers:
                timer.start(tg)
            await wait_for(lambda: len(times[3]) >= 3)
            tg.cancel_scope.cancel()
        for k, seen in times.items():
            gaps = [b - a for a, b in itertools.pairwise([start, *seen])]
            assert min(gaps) >= 0.01 * k - CLOCK_SLACK, k

    async def test_fixed_delay_counts_from_the_end_of_a_sync_call(self) -> None:
        starts: list[float] = []

        def slow() -> None:
            starts.append(anyio.current_time())
            time.sleep(0.01)  # blocks the loop: fine for a test

        async with anyio.create_task_group() as tg:
            timer = PeriodicTimer(0.02, slow)
            timer.start(tg)
            await wait_for(lambda: len(starts) >= 3)
            timer.cancel()
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert min(gaps) >= 0.03 - CLOCK_SLACK
        assert timer.statistics().last_duration >= 0.01 - CLOCK_SLACK

    async def test_cancelling_one_leaves_the_others(self) -> None:
        counts = [0, 0, 0]

        def beat(i: int) -> None:
            counts[i] += 1

        async with anyio.create_task_group() as tg:
            timers = [PeriodicTimer(0.005, beat, i) for i in range(3)]
            for timer in timers:
                timer.start(tg)
            await wait_for(lambda: min(counts) >= 2)
            await timers[1].aclose()
            stopped_at = counts[1]
            before = counts[0]
            await wait_for(lambda: counts[0] >= before + 3)
            assert counts[1] == stopped_at
            assert timer_tasks() == ["PeriodicTimer"]
            for timer in timers:
                timer.cancel()
        assert timer_tasks() == []

    async def test_a_function_cancels_another_timer(self) -> None:
        counts = [0, 0]
        holder: list[PeriodicTimer] = []

        def first() -> None:
            counts[0] += 1
            if counts[0] == 3:
                holder[1].cancel()

        def second() -> None:
            counts[1] += 1

        async with anyio.create_task_group() as tg:
            holder += [PeriodicTimer(0.005, first), PeriodicTimer(0.005, second)]
            for timer in holder:
                timer.start(tg)
            await wait_for(lambda: counts[0] >= 6)
            assert counts[1] <= 3
            holder[0].cancel()

    async def test_a_function_starts_a_timer(self) -> None:
        calls: list[str] = []
        started: list[PeriodicTimer] = []

        async with anyio.create_task_group() as tg:

            def spawner() -> None:
                calls.append("spawner")
                if not started:
                    started.append(PeriodicTimer(0.005, calls.append, "child"))
                    started[0].start(tg)

            timer = PeriodicTimer(0.005, spawner)
            timer.start(tg)
            await wait_for(lambda: "child" in calls)
            tg.cancel_scope.cancel()

    async def test_failure_stops_the_others_and_reaches_the_task_group(self) -> None:
        def boom() -> None:
            raise KeyError("one heartbeat failed")

        with pytest.RaisesGroup(pytest.RaisesExc(KeyError, match="one heartbeat failed")):
            async with anyio.create_task_group() as tg:
                good = PeriodicTimer(0.005, lambda: None)
                bad = PeriodicTimer(0.01, boom)
                good.start(tg)
                bad.start(tg)
                await anyio.sleep(10)
        with anyio.fail_after(1):
            await good.aclose()
            await bad.aclose()

    async def test_each_function_runs_in_the_context_its_start_saw(self) -> None:
        var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
        seen: dict[str, set[str]] = {"a": set(), "b": set()}

        def beat(name: str) -> None:
            seen[name].add(var.get())
            var.set(f"changed by {name}")  # stays in this timer's own context

        async with anyio.create_task_group() as tg:
            a = PeriodicTimer(0.005, beat, "a")
            b = PeriodicTimer(0.005, beat, "b")
            var.set("for a")
            a.start(tg)
            var.set("for b")
            b.start(tg)
            var.set("after")
            await wait_for(lambda: all(len(s) >= 2 for s in seen.values()))
            assert timer_tasks() == ["PeriodicTimer"]
            tg.cancel_scope.cancel()
        assert seen == {"a": {"for a", "changed by a"}, "b": {"for b", "changed by b"}}
        assert var.get() == "after"

    async def test_cancel_one_of_many_from_another_thread(self) -> None:
        counts = [0, 0]

        def beat(i: int) -> None:
            counts[i] += 1

        async with anyio.create_task_group() as tg:
            timers = [PeriodicTimer(0.005, beat, i) for i in range(2)]
            for timer in timers:
                timer.start(tg)
            await wait_for(lambda: min(counts) >= 2)
            await anyio.to_thread.run_sync(timers[0].cancel)
            await timers[0].aclose()
            stopped_at = counts[0]
            await wait_for(lambda: counts[1] >= stopped_at + 3)
            assert counts[0] == stopped_at
            await anyio.to_thread.run_sync(timers[1].cancel)
        assert timer_tasks() == []

    async def test_collecting_one_of_many_stops_only_it(self) -> None:
        counts = [0, 0]

        def beat(i: int) -> None:
            counts[i] += 1

        async with anyio.create_task_group() as tg:
            kept = PeriodicTimer(0.005, beat, 0)
            dropped = PeriodicTimer(0.005, beat, 1)
            kept.start(tg)
            dropped.start(tg)
            await wait_for(lambda: min(counts) >= 2)
            del dropped
            gc.collect()
            await anyio.sleep(0.02)  # the finalizer's wake-up has run
            stopped_at = counts[1]
            before = counts[0]
            await wait_for(lambda: counts[0] >= before + 3)
            assert counts[1] == stopped_at
            assert timer_tasks() == ["PeriodicTimer"]
            kept.cancel()
        assert timer_tasks() == []

    async def test_many_cancelled_timers_do_not_stay(self) -> None:
        calls: list[int] = []
        async with anyio.create_task_group() as tg:
            idle = [PeriodicTimer(3600, lambda: None) for _ in range(300)]
            busy = PeriodicTimer(0.005, calls.append, 1)
            for timer in [*idle, busy]:
                timer.start(tg)
            await wait_for(lambda: len(calls) >= 1)
            with anyio.fail_after(1):
                for timer in idle[:290]:
                    await timer.aclose()
            count = len(calls)
            await wait_for(lambda: len(calls) >= count + 3)
            for timer in idle[290:]:
                timer.cancel()
            await busy.aclose()
        assert timer_tasks() == []

    async def test_a_long_burst_lets_other_tasks_run(self) -> None:
        ticker_ran: list[int] = []
        counts = [0] * 2500

        def beat(i: int) -> None:
            counts[i] += 1

        async def ticker() -> None:
            while True:
                ticker_ran.append(counts.count(0))
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            timers = [PeriodicTimer(0.01, beat, i) for i in range(2500)]
            for timer in timers:
                timer.start(tg)
            tg.start_soon(ticker)
            await wait_for(lambda: min(counts) >= 1)
            tg.cancel_scope.cancel()
        # The ticker ran while some timers had ticked and others had not yet.
        assert any(0 < waiting < 2500 for waiting in ticker_ran)


class TestSyncFunctionReturningAnAwaitable:
    async def test_it_is_awaited_in_a_task_of_its_own(self) -> None:
        done: list[float] = []

        async def work() -> None:
            await anyio.sleep(0.005)
            done.append(anyio.current_time())

        async with anyio.create_task_group() as tg:
            others = [PeriodicTimer(0.005, lambda: None) for _ in range(2)]
            timer = PeriodicTimer(0.01, lambda: work())
            for t in [*others, timer]:
                t.start(tg)
            await wait_for(lambda: len(done) >= 3)
            assert sorted(timer_tasks()) == ["PeriodicTimer", "PeriodicTimer"]
            tg.cancel_scope.cancel()
        stats = timer.statistics()
        assert stats.calls >= 3
        assert stats.last_duration >= 0.005 - CLOCK_SLACK

    async def test_cancel_in_flight_of_the_first_call(self) -> None:
        entered = anyio.Event()

        async def long_call() -> None:
            entered.set()
            await anyio.sleep(60)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                timer = PeriodicTimer(0.005, lambda: long_call())
                timer.start(tg)
                await entered.wait()
                await timer.aclose()
        assert timer.statistics().calls == 0

    async def test_cancelled_by_itself_in_the_first_call(self) -> None:
        holder: list[PeriodicTimer] = []
        started: list[int] = []

        async def never_finishes() -> None:
            started.append(1)
            await anyio.sleep(60)

        def call() -> object:
            holder[0].cancel()
            return never_finishes()

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                holder.append(PeriodicTimer(0.005, call))
                holder[0].start(tg)
        assert started == [1]  # it ran to its first checkpoint, which was cancelled


def test_batched_timers_keep_their_schedules_on_a_mock_clock() -> None:
    """On trio's MockClock, every call of every timer comes exactly on its schedule."""
    from trio.testing import MockClock

    calls: dict[float, list[float]] = {1.0: [], 2.0: [], 3.0: [], 2.5: []}

    def note(k: float) -> None:
        calls[k].append(anyio.current_time())

    async def main() -> float:
        start = anyio.current_time()
        async with anyio.create_task_group() as tg:
            timers = [PeriodicTimer(k, note, k) for k in calls]
            for timer in timers:
                timer.start(tg)
            await anyio.sleep(12.75)  # no tie with a call
            tg.cancel_scope.cancel()
        return start

    start = anyio.run(
        main, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)}
    )
    for k, seen in calls.items():
        assert [round(t - start, 9) for t in seen] == [k * i for i in range(1, int(12.75 // k) + 1)]


@pytest.mark.slow
@pytest.mark.timeout(300)  # a first mypy run checks anyio, httpx and trio too
def test_a_type_checker_checks_the_function_s_arguments(tmp_path: Path) -> None:
    """``PeriodicTimer(5, send, 42)`` does not type-check when ``send`` takes a ``str``;
    the arguments a function takes, positional or keyword, sync or async, do."""
    code = (
        "from anyrdzv import PeriodicTimer\n"
        "def send(node: str) -> None: ...\n"
        "async def send_async(node: str, *, tries: int) -> None: ...\n"
        "PeriodicTimer(5, send, 'node-0')\n"
        "PeriodicTimer(5, send, node='node-0')\n"
        "PeriodicTimer(5, send_async, 'node-0', tries=3)\n"
        "PeriodicTimer(5, send, 42)\n"
        "PeriodicTimer(5, send)\n"
        "PeriodicTimer(5, send_async, 'node-0', tries='3')\n"
    )
    errors = mypy_strict({"timer_arguments.py": code}, tmp_path)["timer_arguments.py"]
    assert errors == [
        '7: Argument 3 to "PeriodicTimer" has incompatible type "int"; expected "str"  [arg-type]',
        '8: Missing positional argument "node" in call to "PeriodicTimer"  [call-arg]',
        (
            '9: Argument "tries" to "PeriodicTimer" has incompatible type "str"; '
            'expected "int"  [arg-type]'
        ),
    ]
