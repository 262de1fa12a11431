"""What the heartbeat tests share: a store that scripts the calls a heartbeat makes, and
readers of what a heartbeat raised, logged and listed."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from anyrdzv import HeartbeatLost, LeaseStore, MemoryStore, members
from anyrdzv.testing import StoreWrapper

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable

    import pytest

    from anyrdzv import Lease, StoreEvent

#: The heartbeat's logger.
LOGGER = "anyrdzv._membership._heartbeat"

#: What a scripted call does: raise the exception, never answer (``"hang"``), or go on.
Fault = BaseException | str | None


class FakeStore(StoreWrapper):
    """A store that passes calls on to ``inner`` (a MemoryStore by default), records the
    calls a heartbeat makes, and makes ``keep_alive``, ``revoke`` or ``put`` fail, hang or
    wait as a test says.

    ``keep_alive_faults`` is a list of what the next keep-alives do, first first: an
    exception to raise (that very object), ``"hang"`` to never answer, or ``None`` to
    pass the call on. When the list is empty, ``keep_alive_fault`` (the same kinds)
    applies to all the rest.
    """

    def __init__(self, inner: LeaseStore | None = None) -> None:
        super().__init__(inner if inner is not None else MemoryStore())
        #: the calls made, in order
        self.calls: list[str] = []
        self.keep_alive_faults: list[Fault] = []
        self.keep_alive_fault: Fault = None
        self.revoke_fault: Fault = None
        #: seconds each revoke waits before it is passed on
        self.revoke_delay = 0.0
        self.put_fault: Fault = None
        #: seconds each put waits before it is passed on
        self.put_delay = 0.0
        #: set once a grant has started
        self.grant_started = anyio.Event()
        #: if set, a grant waits for it before it is passed on
        self.grant_may_finish: anyio.Event | None = None
        #: how many keep-alives have gone through to ``inner``
        self.renewed = 0
        self._renewal = anyio.Event()

    def count(self, name: str) -> int:
        """How many calls of ``name`` were made."""
        return self.calls.count(name)

    @staticmethod
    async def _apply(fault: Fault, wait: float = 0.0) -> None:
        await anyio.lowlevel.checkpoint()
        if fault == "hang":
            await anyio.sleep(math.inf)
        elif isinstance(fault, BaseException):
            raise fault
        if wait:
            await anyio.sleep(wait)

    async def grant(self, ttl: int) -> Lease:
        """Grant a lease, once :attr:`grant_may_finish` is set."""
        self.calls.append("grant")
        self.grant_started.set()
        if self.grant_may_finish is not None:
            await self.grant_may_finish.wait()
        return await super().grant(ttl)

    async def keep_alive(self, lease: Lease | int) -> int:
        """Renew a lease, or do what the next keep-alive fault says."""
        self.calls.append("keep_alive")
        fault = self.keep_alive_faults.pop(0) if self.keep_alive_faults else self.keep_alive_fault
        await self._apply(fault)
        remaining = await super().keep_alive(lease)
        self.renewed += 1
        self._renewal.set()
        self._renewal = anyio.Event()
        return remaining

    async def revoke(self, lease: Lease | int) -> None:
        """Revoke a lease, after :attr:`revoke_fault` and :attr:`revoke_delay`."""
        self.calls.append("revoke")
        await self._apply(self.revoke_fault, self.revoke_delay)
        await super().revoke(lease)

    async def put(self, key: str, value: bytes, *, lease: Lease | int | None = None) -> int:
        """Put a key, after :attr:`put_fault` and :attr:`put_delay`."""
        self.calls.append("put")
        if self.put_fault is not None or self.put_delay:
            await self._apply(self.put_fault, self.put_delay)
        return await super().put(key, value, lease=lease)

    async def get_prefix(self, prefix: str) -> tuple[dict[str, bytes], int]:
        """Read a prefix."""
        self.calls.append("get_prefix")
        return await super().get_prefix(prefix)

    def watch_prefix(
        self, prefix: str, *, start_revision: int, on_open: Callable[[], object] | None = None
    ) -> AsyncGenerator[StoreEvent, None]:
        """Watch a prefix."""
        self.calls.append("watch_prefix")
        return super().watch_prefix(prefix, start_revision=start_revision, on_open=on_open)

    async def wait_renewed(self, count: int) -> None:
        """Wait until ``count`` keep-alives in all have gone through to the inner store."""
        while self.renewed < count:
            await self._renewal.wait()


def lost_in(caught: pytest.ExceptionInfo[Any]) -> HeartbeatLost:
    """The HeartbeatLost that an ``async with Heartbeat`` block raised, as itself."""
    exc = caught.value
    assert isinstance(exc, HeartbeatLost)
    return exc


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The heartbeat's WARNING messages."""
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING
    ]


async def listed(store: LeaseStore, prefix: str = "/anyrdzv") -> set[str]:
    """The members of group ``g``."""
    return set((await members(store, "g", prefix=prefix)).members)
