from __future__ import annotations

import math

import anyio
import anyio.lowlevel
import pytest

from anyrdzv._core._clock import current_clock, in_trio

CLOCK_SLACK = 0.002  # uvloop's clock counts whole milliseconds


def test_outside_a_loop_is_runtime_error() -> None:
    assert not in_trio()
    with pytest.raises(RuntimeError, match="no asyncio or trio event loop is running"):
        current_clock()


@pytest.mark.anyio
class TestCurrentClock:
    async def test_now_is_anyios_clock(self) -> None:
        clock = current_clock()
        before = anyio.current_time()
        now = clock.now()
        after = anyio.current_time()
        assert before <= now <= after

    async def test_in_trio_tells_the_backend(self, anyio_backend: tuple[str, object]) -> None:
        assert in_trio() == (anyio_backend[0] == "trio")

    async def test_sleep_waits_at_least_the_delay(self) -> None:
        clock = current_clock()
        start = anyio.current_time()
        await clock.sleep(0.02)
        assert anyio.current_time() - start >= 0.02 - CLOCK_SLACK

    async def test_sleep_is_cancelled_by_an_anyio_scope(self) -> None:
        clock = current_clock()
        with anyio.move_on_after(0.01) as scope:
            await clock.sleep(60)
        assert scope.cancelled_caught

    async def test_checkpoint_is_a_cancellation_point(self) -> None:
        clock = current_clock()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await clock.checkpoint()
            pytest.fail("a cancelled checkpoint returned")
        assert scope.cancelled_caught

    async def test_checkpoint_lets_other_tasks_run(self) -> None:
        clock = current_clock()
        ran: list[int] = []

        async def other() -> None:
            ran.append(1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(other)
            for _ in range(5):
                await clock.checkpoint()
            assert ran == [1]

    async def test_resolved_once_stays_valid(self) -> None:
        clock = current_clock()
        first = clock.now()
        await anyio.sleep(0.005)
        assert clock.now() >= first + 0.005 - CLOCK_SLACK
        assert math.isfinite(first)
