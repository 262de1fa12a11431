"""anyrdzv inside an asyncio-native test suite, through pytest-asyncio in strict mode."""

from __future__ import annotations

import asyncio

import pytest

from anyrdzv import delay, parse_rendezvous_endpoint


@pytest.mark.asyncio
async def test_delay_under_pytest_asyncio() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await delay(0.02)
    assert loop.time() - start >= 0.02 - 0.002  # uvloop-style ms clocks


@pytest.mark.asyncio
async def test_delay_is_cancellable_by_asyncio() -> None:
    task = asyncio.create_task(delay(60))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_parse_inside_a_coroutine() -> None:
    assert parse_rendezvous_endpoint("[::1]:29400", 1) == ("::1", 29400)
