"""What the store tests share: reading a watch into a list."""

from __future__ import annotations

from contextlib import aclosing
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from anyrdzv import LeaseStore, StoreEvent


async def collect(store: LeaseStore, prefix: str, start: int, count: int) -> list[StoreEvent]:
    """The first ``count`` events under ``prefix`` from revision ``start`` on (10 s at most)."""
    events: list[StoreEvent] = []
    with anyio.fail_after(10):
        async with aclosing(store.watch_prefix(prefix, start_revision=start)) as stream:
            async for event in stream:
                events.append(event)
                if len(events) == count:
                    break
    return events
