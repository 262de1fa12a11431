"""Request slots: first come, first served; a waiter gives up only when nothing moves."""

from __future__ import annotations

import anyio
import pytest

from anyrdzv import StoreConnectionError
from anyrdzv._etcd._slots import Slots

pytestmark = pytest.mark.anyio


async def test_slots_are_handed_out_in_arrival_order() -> None:
    slots = Slots(1, "request")
    order: list[int] = []

    async def take(n: int) -> None:
        await slots.acquire(5)
        order.append(n)
        await anyio.sleep(0.01)
        slots.answered()
        slots.release()

    async with anyio.create_task_group() as tg:
        for n in range(10):
            tg.start_soon(take, n)
            await anyio.wait_all_tasks_blocked()
    assert order == list(range(10))


async def test_a_long_queue_that_moves_is_waited_out() -> None:
    """Waiting longer than ``patience`` is fine while the server keeps answering."""
    slots = Slots(1, "request")
    done: list[float] = []

    async def request() -> None:
        waited = await slots.acquire(0.1)
        await anyio.sleep(0.02)
        slots.answered()
        slots.release()
        done.append(waited)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(request)
    assert len(done) == 20
    assert max(done) > 0.1  # the last ones queued longer than patience, and got through


async def test_a_queue_that_does_not_move_gives_up_and_says_where_the_time_went() -> None:
    slots = Slots(1, "request")
    await slots.acquire(1)  # held, never answered
    start = anyio.current_time()
    with pytest.raises(StoreConnectionError, match="for one of the 1 request slots"):
        await slots.acquire(0.2)
    assert 0.19 <= anyio.current_time() - start < 2
    assert slots.waiting == 0
    slots.release()
    assert await slots.acquire(0.2) == 0.0


async def test_a_slot_handed_to_a_cancelled_waiter_goes_to_the_next() -> None:
    slots = Slots(1, "request")
    await slots.acquire(1)
    got: list[str] = []
    first = anyio.CancelScope()

    async def waiter(name: str, scope: anyio.CancelScope) -> None:
        with scope:
            await slots.acquire(5)
            got.append(name)
            slots.release()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, "first", first)
            await anyio.sleep(0.01)
            tg.start_soon(waiter, "second", anyio.CancelScope())
            await anyio.sleep(0.01)
            slots.release()  # handed to the first waiter...
            first.cancel()  # ...which may leave before it runs: then the next one has it
    assert got[-1] == "second"
    assert slots.waiting == 0
    assert await slots.acquire(1) == 0.0


async def test_urgent_waiters_go_ahead_of_the_others() -> None:
    slots = Slots(1, "request")
    await slots.acquire(5)
    order: list[str] = []

    async def take(name: str, urgent: bool) -> None:
        await slots.acquire(5, urgent=urgent)
        order.append(name)
        slots.release()

    async with anyio.create_task_group() as tg:
        for name, urgent in (("grant1", False), ("grant2", False), ("put1", True), ("put2", True)):
            tg.start_soon(take, name, urgent)
            await anyio.wait_all_tasks_blocked()
        slots.release()
    assert order == ["put1", "put2", "grant1", "grant2"]
