"""Changed: a count of changes to something, which tasks wait to see pass a value."""

from __future__ import annotations

from typing import final

import anyio


@final
class Changed:
    """How many times something changed, and the tasks that wait for its next change.

    A task reads :attr:`version`, looks at the thing, and, if there is nothing to do,
    waits with :meth:`wait_past` for the version it read to pass: a change made
    between the look and the wait is not missed.

    :ivar version: how many changes :meth:`bump` has counted
    """

    def __init__(self) -> None:
        self.version = 0
        self._event = anyio.Event()

    def bump(self) -> None:
        """Count a change, and wake every task that waits for one."""
        self.version += 1
        self._event.set()
        self._event = anyio.Event()

    async def wait_past(self, version: int, until: float | None = None) -> None:
        """Wait until :attr:`version` is past ``version``, or, with ``until``, at most
        until that time on anyio's clock."""
        while self.version <= version:
            event = self._event
            if until is None:
                await event.wait()
            else:
                with anyio.move_on_after(until - anyio.current_time()):
                    await event.wait()
                return
