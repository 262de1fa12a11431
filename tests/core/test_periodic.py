from __future__ import annotations

import datetime
import itertools
import math
import random
from typing import Any

import anyio
import pytest
import trio
import trio.testing

from anyrdzv import Tick, periodic

CLOCK_SLACK = 0.002  # uvloop's clock counts whole milliseconds


def run_on_mock_clock(func: Any) -> Any:
    """Run ``func`` on trio with a clock that jumps ahead whenever all tasks sleep."""
    return trio.run(func, clock=trio.testing.MockClock(autojump_threshold=0))


class TestFixedRateOnMockClock:
    def test_no_drift_over_50_ticks(self) -> None:
        async def main() -> tuple[float, list[Tick]]:
            rng = random.Random(1)
            start = trio.current_time()
            ticks: list[Tick] = []
            async for tick in periodic(0.1, schedule="fixed-rate"):
                ticks.append(tick)
                if len(ticks) == 50:
                    break
                await trio.sleep(rng.uniform(0, 0.09))  # a body shorter than the interval
            return start, ticks

        start, ticks = run_on_mock_clock(main)
        for k, tick in enumerate(ticks, start=1):
            assert tick.index == k - 1
            assert tick.scheduled == pytest.approx(start + k * 0.1, abs=1e-9)
            assert tick.actual == pytest.approx(tick.scheduled, abs=1e-9)
            assert tick.missed == 0

    def test_overrun_skips_missed_slots_without_bursting(self) -> None:
        async def main() -> tuple[float, list[Tick]]:
            start = trio.current_time()
            ticks: list[Tick] = []
            async for tick in periodic(1, schedule="fixed-rate"):
                ticks.append(tick)
                if len(ticks) == 4:
                    break
                await trio.sleep(2.5 if tick.index == 1 else 0.1)
            return start, ticks

        start, ticks = run_on_mock_clock(main)
        assert [t.missed for t in ticks] == [0, 0, 2, 0]
        slots = [round(t.scheduled - start, 9) for t in ticks]
        assert slots == [1, 2, 5, 6]  # slots 3 and 4 were skipped, on the same grid

    def test_first_now(self) -> None:
        async def main() -> tuple[float, list[Tick]]:
            start = trio.current_time()
            ticks: list[Tick] = []
            async for tick in periodic(1, schedule="fixed-rate", first="now"):
                ticks.append(tick)
                if len(ticks) == 3:
                    break
            return start, ticks

        start, ticks = run_on_mock_clock(main)
        assert [round(t.scheduled - start, 9) for t in ticks] == [0, 1, 2]

    def test_jitter_stays_within_its_slot_and_keeps_the_grid(self) -> None:
        async def main() -> tuple[float, list[Tick]]:
            start = trio.current_time()
            ticks: list[Tick] = []
            async for tick in periodic(1, schedule="fixed-rate", jitter=0.5, rng=random.Random(4)):
                ticks.append(tick)
                if len(ticks) == 200:
                    break
            return start, ticks

        start, ticks = run_on_mock_clock(main)
        offsets = [t.scheduled - (start + k) for k, t in enumerate(ticks, start=1)]
        assert all(0 <= o < 0.5 for o in offsets)
        assert max(offsets) - min(offsets) > 0.3  # it really spreads
        assert [t.missed for t in ticks] == [0] * 200

    def test_fixed_delay_counts_from_the_end_of_the_body(self) -> None:
        async def main() -> tuple[float, list[Tick]]:
            start = trio.current_time()
            ticks: list[Tick] = []
            async for tick in periodic(datetime.timedelta(seconds=1)):
                ticks.append(tick)
                if len(ticks) == 4:
                    break
                await trio.sleep(0.5)
            return start, ticks

        start, ticks = run_on_mock_clock(main)
        assert [round(t.scheduled - start, 9) for t in ticks] == [1, 2.5, 4, 5.5]

    def test_fixed_delay_jitter_within_slot(self) -> None:
        async def main() -> list[float]:
            gaps: list[float] = []
            previous = trio.current_time()
            async for tick in periodic(1, jitter=0.25, rng=random.Random(9)):
                gaps.append(tick.scheduled - previous)
                previous = tick.actual
                if len(gaps) == 100:
                    break
            return gaps

        gaps = run_on_mock_clock(main)
        assert all(1 <= g < 1.25 for g in gaps)


@pytest.mark.anyio
class TestOnEveryBackend:
    async def test_ticks_come_at_least_an_interval_apart(self) -> None:
        ticks: list[Tick] = []
        start = anyio.current_time()
        async for tick in periodic(0.01):
            ticks.append(tick)
            if len(ticks) == 5:
                break
        times = [start] + [t.actual for t in ticks]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 0.01 - CLOCK_SLACK
        assert [t.index for t in ticks] == [0, 1, 2, 3, 4]
        assert all(t.lateness >= -CLOCK_SLACK for t in ticks)

    async def test_fixed_rate_grid_within_bounds(self) -> None:
        ticks: list[Tick] = []
        async for tick in periodic(0.01, schedule="fixed-rate", first="now"):
            ticks.append(tick)
            if len(ticks) == 20:
                break
        origin = ticks[0].scheduled
        skipped = 0
        for k, tick in enumerate(ticks):
            # On the grid: slot k, moved on by every slot skipped so far (a loaded
            # machine may overrun a slot, and the ticks after it stay shifted).
            skipped += tick.missed
            assert tick.scheduled == pytest.approx(origin + (k + skipped) * 0.01, abs=1e-9)

    async def test_first_now_does_not_wait_but_checkpoints(self) -> None:
        with anyio.CancelScope() as scope:
            scope.cancel()
            async for _ in periodic(60, first="now"):
                pytest.fail("a cancelled periodic() delivered a tick")
        assert scope.cancelled_caught

    async def test_cancellable_while_waiting(self) -> None:
        with anyio.move_on_after(0.02) as scope:
            async for _ in periodic(60):
                pytest.fail("no tick is due within 60 s")
        assert scope.cancelled_caught


class TestClock:
    @pytest.mark.parametrize("backend", ["asyncio", "trio"])
    def test_made_outside_a_loop_reads_the_clock_of_the_loop_it_runs_in(self, backend: str) -> None:
        ticks = periodic(0.005)  # no loop is running here

        async def main() -> tuple[float, Tick]:
            start = anyio.current_time()
            async for tick in ticks:
                return start, tick
            raise AssertionError("no tick")

        start, tick = anyio.run(main, backend=backend)
        assert tick.scheduled == pytest.approx(start + 0.005, abs=CLOCK_SLACK)
        assert tick.actual >= tick.scheduled - CLOCK_SLACK

    def test_mock_clock_time_is_the_ticks_time(self) -> None:
        async def main() -> list[Tick]:
            ticks: list[Tick] = []
            async for tick in periodic(3600):
                ticks.append(tick)
                if len(ticks) == 2:
                    return ticks
            raise AssertionError("no tick")

        start = 0.0
        ticks = run_on_mock_clock(main)
        assert [t.actual - start for t in ticks] == pytest.approx([3600, 7200], abs=1e-6)


class TestValidation:
    @pytest.mark.parametrize("interval", [0, -1, math.nan, math.inf, datetime.timedelta(0)])
    def test_bad_interval(self, interval: Any) -> None:
        with pytest.raises(ValueError, match="interval must be positive and finite"):
            periodic(interval)

    def test_bad_interval_type(self) -> None:
        with pytest.raises(TypeError, match="interval must be a number of seconds"):
            periodic("5")  # type: ignore[arg-type]

    @pytest.mark.parametrize("jitter", [-0.1, 1, 1.5, math.nan])
    def test_bad_jitter(self, jitter: float) -> None:
        with pytest.raises(ValueError, match=r"jitter must be in \[0, 1\)"):
            periodic(1, jitter=jitter)

    def test_bad_jitter_type(self) -> None:
        with pytest.raises(TypeError, match="jitter must be a number"):
            periodic(1, jitter="0.1")  # type: ignore[arg-type]

    def test_bad_schedule(self) -> None:
        with pytest.raises(ValueError, match="schedule must be 'fixed-delay' or 'fixed-rate'"):
            periodic(1, schedule="fixed")  # type: ignore[arg-type]

    def test_bad_first(self) -> None:
        with pytest.raises(ValueError, match="first must be 'after-interval' or 'now'"):
            periodic(1, first="later")  # type: ignore[arg-type]

    def test_bad_rng(self) -> None:
        with pytest.raises(TypeError, match="rng must be a random.Random"):
            periodic(1, rng=1)  # type: ignore[arg-type]

    def test_tick_lateness(self) -> None:
        assert Tick(0, 1.0, 1.25, 0).lateness == 0.25
