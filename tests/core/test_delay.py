from __future__ import annotations

import itertools
import math
import random

import anyio
import pytest

from anyrdzv import backoff, delay

pytestmark = pytest.mark.anyio

# uvloop's clock counts whole milliseconds, so a sleep can read up to 1 ms short.
CLOCK_SLACK = 0.002


class TestDelay:
    async def test_sleeps_at_least_the_given_time(self) -> None:
        start = anyio.current_time()
        await delay(0.05)
        assert anyio.current_time() - start >= 0.05 - CLOCK_SLACK

    async def test_tuple_draws_within_range(self) -> None:
        rng = random.Random(7)
        expected = random.Random(7).uniform(0.02, 0.06)
        start = anyio.current_time()
        await delay((0.02, 0.06), rng=rng)
        elapsed = anyio.current_time() - start
        assert elapsed >= expected - CLOCK_SLACK

    async def test_reversed_tuple_works(self) -> None:
        start = anyio.current_time()
        await delay((0.05, 0.02), rng=random.Random(1))
        assert anyio.current_time() - start >= 0.02 - CLOCK_SLACK

    @pytest.mark.parametrize("seconds", [0, 0.0099, -1, math.nan, (0, 0), (-5, -1)])
    async def test_tiny_negative_or_nan_does_not_sleep_but_checkpoints(
        self, seconds: float | tuple[float, float], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def no_sleep(duration: float) -> None:
            pytest.fail(f"delay({seconds!r}) slept for {duration}")

        monkeypatch.setattr(anyio, "sleep", no_sleep)
        other_ran = False

        async def other() -> None:
            nonlocal other_ran
            other_ran = True

        async with anyio.create_task_group() as tg:
            tg.start_soon(other)
            start = anyio.current_time()
            while not other_ran:
                # A non-sleeping delay must still yield, or this loop would spin forever.
                await delay(seconds)
            assert anyio.current_time() - start < 5

    async def test_non_sleeping_delay_can_be_cancelled(self) -> None:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await delay(0)
            pytest.fail("delay(0) did not checkpoint")
        assert scope.cancelled_caught

    async def test_sleeping_delay_can_be_cancelled(self) -> None:
        with anyio.move_on_after(0.05) as scope:
            await delay(60)
        assert scope.cancelled_caught

    @pytest.mark.parametrize("seconds", [math.inf, -math.inf, (0, math.inf), (math.inf, 1)])
    async def test_infinity_is_value_error(self, seconds: float | tuple[float, float]) -> None:
        with pytest.raises(ValueError, match="seconds must be finite"):
            await delay(seconds)

    @pytest.mark.parametrize(
        "seconds", [[0, 1], "1", None, True, (1,), (1, 2, 3), ("a", 1), (1, None)]
    )
    async def test_other_types_are_type_error(self, seconds: object) -> None:
        with pytest.raises(TypeError, match="seconds"):
            await delay(seconds)  # type: ignore[arg-type]

    async def test_rng_must_be_random(self) -> None:
        with pytest.raises(TypeError, match="rng must be a random.Random"):
            await delay(0, rng=42)  # type: ignore[arg-type]


class TestBackoff:
    def test_none_jitter_grows_and_caps(self) -> None:
        values = list(itertools.islice(backoff(0.1, 1.0, jitter="none"), 7))
        assert values == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])

    def test_multiplier(self) -> None:
        values = list(itertools.islice(backoff(1, 100, multiplier=3, jitter="none"), 5))
        assert values == pytest.approx([1, 3, 9, 27, 81])

    def test_multiplier_one_is_constant(self) -> None:
        assert set(itertools.islice(backoff(0.5, 9, multiplier=1, jitter="none"), 10)) == {0.5}

    def test_full_jitter_within_zero_and_bound(self) -> None:
        bounds = itertools.islice(backoff(0.1, 1.0, jitter="none"), 200)
        draws = itertools.islice(backoff(0.1, 1.0, jitter="full", rng=random.Random(3)), 200)
        for bound, value in zip(bounds, draws, strict=True):
            assert 0 <= value <= bound

    def test_full_jitter_matches_definition(self) -> None:
        rng = random.Random(11)
        expected = [rng.uniform(0, t) for t in (0.1, 0.2, 0.4, 0.8, 1.0)]
        got = list(itertools.islice(backoff(0.1, 1.0, rng=random.Random(11)), 5))
        assert got == pytest.approx(expected)

    def test_equal_jitter_within_half_and_bound(self) -> None:
        bounds = itertools.islice(backoff(0.1, 1.0, jitter="none"), 200)
        draws = itertools.islice(backoff(0.1, 1.0, jitter="equal", rng=random.Random(5)), 200)
        for bound, value in zip(bounds, draws, strict=True):
            assert bound / 2 <= value <= bound

    def test_never_overflows(self) -> None:
        values = list(itertools.islice(backoff(1e-3, 1e300, multiplier=1e10, jitter="none"), 2000))
        assert values[-1] == 1e300

    def test_is_endless_iterator(self) -> None:
        it = backoff(1, 2)
        assert iter(it) is it
        assert len(list(itertools.islice(it, 10_000))) == 10_000

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"initial": 0, "maximum": 1}, "initial must be positive and finite, got 0"),
            ({"initial": -1, "maximum": 1}, "initial must be positive and finite, got -1"),
            ({"initial": math.nan, "maximum": 1}, "initial must be positive and finite"),
            ({"initial": 1, "maximum": math.inf}, "maximum must be finite, got inf"),
            ({"initial": 2, "maximum": 1}, r"maximum must be at least initial \(2\), got 1"),
            (
                {"initial": 1, "maximum": 2, "multiplier": 0.5},
                "multiplier must be .* at least 1, got 0.5",
            ),
            ({"initial": 1, "maximum": 2, "multiplier": math.inf}, "multiplier must be"),
            ({"initial": 1, "maximum": 2, "jitter": "half"}, "jitter must be one of .* got 'half'"),
        ],
    )
    def test_bad_values_are_value_errors(self, kwargs: dict[str, object], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            backoff(**kwargs)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"initial": "1", "maximum": 2}, "initial must be a number"),
            ({"initial": 1, "maximum": None}, "maximum must be a number"),
            ({"initial": 1, "maximum": 2, "multiplier": True}, "multiplier must be a number"),
            ({"initial": 1, "maximum": 2, "rng": 3}, "rng must be a random.Random"),
        ],
    )
    def test_bad_types_are_type_errors(self, kwargs: dict[str, object], message: str) -> None:
        with pytest.raises(TypeError, match=message):
            backoff(**kwargs)  # type: ignore[arg-type]


async def test_backoff_drives_a_retry_loop() -> None:
    attempts = 0
    retry = backoff(0.001, 0.004, jitter="none")
    while attempts < 4:
        attempts += 1
        await delay(next(retry))
    assert attempts == 4
