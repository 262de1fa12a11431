"""A first-come, first-served limit on requests in flight, whose waiters give up only
when the server stops answering, not when the queue is merely long."""

from __future__ import annotations

from collections import deque
from typing import final

import anyio
import anyio.lowlevel

from .._exceptions import StoreConnectionError


@final
class Slots:
    """``size`` request slots, handed out in arrival order.

    A caller waits for a slot as long as the server keeps answering: a burst of a
    thousand joins queues here and goes through. It gives up once nothing has been
    answered for ``patience`` seconds, since then the queue is not moving.

    :param size: how many requests may be in flight at once
    :param what: what the slots are for, for error messages
    """

    def __init__(self, size: int, what: str) -> None:
        self._free = size
        self._size = size
        self._what = what
        self._waiters: deque[anyio.Event] = deque()
        self._urgent = 0  # how many of the first waiters are urgent
        #: when a request last got an answer, on anyio's clock
        self.last_answer = -float("inf")

    @property
    def waiting(self) -> int:
        """How many callers wait for a slot."""
        return len(self._waiters)

    def answered(self) -> None:
        """Note that the server answered a request: the queue is moving."""
        self.last_answer = anyio.current_time()

    async def acquire(self, patience: float, *, urgent: bool = False) -> float:
        """Take a slot; return how long that took, in seconds.

        An ``urgent`` caller waits ahead of every caller that is not, in arrival order
        among the urgent ones.

        :raises StoreConnectionError: if nothing was answered for ``patience`` seconds
            while waiting
        """
        if self._free and not self._waiters:
            self._free -= 1
            await anyio.lowlevel.checkpoint()
            return 0.0
        started = anyio.current_time()
        handed = anyio.Event()
        if urgent:
            self._waiters.insert(self._urgent, handed)
            self._urgent += 1
        else:
            self._waiters.append(handed)
        try:
            while True:
                with anyio.move_on_after(patience):
                    await handed.wait()
                if handed.is_set():
                    return anyio.current_time() - started
                now = anyio.current_time()
                if now - max(self.last_answer, started) >= patience:
                    ahead = self._waiters.index(handed)
                    raise StoreConnectionError(
                        f"waited {now - started:.1f} s for one of the {self._size} "
                        f"{self._what} slots in this process, behind {ahead} other "
                        f"requests, and the server answered none for {patience} s"
                    )
        except BaseException:
            if handed.is_set():
                self.release()  # handed over just as this caller left: pass it on
            else:
                if self._waiters.index(handed) < self._urgent:
                    self._urgent -= 1
                self._waiters.remove(handed)
            raise

    def release(self) -> None:
        """Give a slot back, to the first waiter if there is one."""
        if self._waiters:
            if self._urgent:
                self._urgent -= 1
            self._waiters.popleft().set()
        else:
            self._free += 1
