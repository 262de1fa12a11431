"""Changed: a task that read a version and waits for it to pass sees every change made
after its read, also one made before it began to wait, and gives up at ``until``."""

from __future__ import annotations

import anyio
import pytest

from anyrdzv._core._changed import Changed

pytestmark = pytest.mark.anyio


async def test_a_bump_wakes_every_waiter() -> None:
    changed = Changed()
    woken: list[int] = []

    async def waiter(name: int) -> None:
        await changed.wait_past(0)
        woken.append(name)

    async with anyio.create_task_group() as tg:
        for name in range(3):
            tg.start_soon(waiter, name)
        await anyio.wait_all_tasks_blocked()
        assert woken == []
        changed.bump()
    assert sorted(woken) == [0, 1, 2]
    assert changed.version == 1


async def test_a_change_before_the_wait_is_not_missed() -> None:
    changed = Changed()
    seen = changed.version
    changed.bump()  # between the look and the wait
    with anyio.fail_after(1):
        await changed.wait_past(seen)


async def test_it_waits_for_the_version_read_to_pass_not_for_any_bump() -> None:
    changed = Changed()
    changed.bump()
    changed.bump()
    done = False

    async def waiter() -> None:
        nonlocal done
        await changed.wait_past(2)
        done = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert not done
        changed.bump()
    assert done


async def test_until_ends_the_wait_with_no_change() -> None:
    changed = Changed()
    start = anyio.current_time()
    await changed.wait_past(0, until=start + 0.05)
    assert anyio.current_time() >= start + 0.05
    assert changed.version == 0


async def test_until_in_the_past_returns_at_once() -> None:
    changed = Changed()
    with anyio.fail_after(1):
        await changed.wait_past(0, until=anyio.current_time() - 1)
