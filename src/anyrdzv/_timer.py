from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.abc
import anyio.lowlevel

from ._periodic import check_interval, periodic
from ._wakeup import CallSoon, current_call_soon

if TYPE_CHECKING:
    import datetime
    from collections.abc import Callable
    from types import TracebackType

_ALREADY_STARTED = "The timer has already started."


@dataclass(frozen=True)
class TimerStatistics:
    """What a :class:`PeriodicTimer` has done so far.

    :ivar calls: how many calls of the function have finished
    :ivar last_lateness: how late the last call started against its schedule, in seconds
    :ivar max_lateness: the largest lateness so far, in seconds
    :ivar last_duration: how long the last call took, in seconds
    """

    calls: int = 0
    last_lateness: float = 0.0
    max_lateness: float = 0.0
    last_duration: float = 0.0


class _Context:
    """What the timer's task needs. It must not refer to the timer itself, so that
    dropping the last reference to the timer lets it be collected, which stops it."""

    __slots__ = (
        "args",
        "call_soon",
        "calls",
        "cancelled",
        "done",
        "finished",
        "function",
        "interval",
        "kwargs",
        "last_duration",
        "last_lateness",
        "max_lateness",
        "scope",
    )

    def __init__(
        self, interval: float, function: Callable[..., object], args: Any, kwargs: Any
    ) -> None:
        self.interval = interval
        self.function = function
        self.args = args
        self.kwargs = kwargs
        self.cancelled = False
        self.finished = False
        self.scope: anyio.CancelScope | None = None
        self.call_soon: CallSoon | None = None
        self.done: anyio.Event | None = None  # made by aclose(), only if it has to wait
        self.calls = 0
        self.last_lateness = self.max_lateness = self.last_duration = 0.0

    def cancel(self) -> None:
        # Safe from any thread and from a finalizer: a flag, then a non-blocking wake-up.
        self.cancelled = True
        if self.call_soon is not None:
            self.call_soon(self._cancel_scope)

    def _cancel_scope(self) -> None:
        if self.scope is not None:
            self.scope.cancel()

    async def run(self) -> None:
        function, args, kwargs = self.function, self.args, self.kwargs
        try:
            with anyio.CancelScope() as self.scope:
                if self.cancelled:
                    return
                async for tick in periodic(self.interval):
                    if self.cancelled:
                        break
                    result = function(*args, **kwargs)
                    if result is not None and inspect.isawaitable(result):
                        await result
                    self.calls += 1
                    lateness = tick.actual - tick.scheduled
                    self.last_lateness = lateness
                    self.max_lateness = max(self.max_lateness, lateness)
                    self.last_duration = anyio.current_time() - tick.actual
        finally:
            self.scope = None
            self.finished = True
            if self.done is not None:
                self.done.set()

    async def wait_finished(self) -> None:
        if self.finished:
            await anyio.lowlevel.checkpoint()
            return
        if self.done is None:
            self.done = anyio.Event()
        await self.done.wait()


@final
class PeriodicTimer:
    """Call a function every ``interval``, as a task in an anyio task group.

    This is torch's ``_PeriodicTimer`` without the thread: the same constructor, the
    same fixed-delay schedule (the first call comes one interval after start, and each
    later one an interval after the previous call returned), and the same errors. But
    ``cancel()`` never blocks, an exception from ``function`` reaches the task group
    instead of vanishing, and it runs on asyncio, uvloop and trio::

        async with anyio.create_task_group() as tg:
            timer = PeriodicTimer(timedelta(seconds=5), send_heartbeat, node_id)
            timer.start(tg)
            ...
            timer.cancel()

    or, for the span of a block, ``async with PeriodicTimer(5, beat) as timer: ...``.

    ``function`` may be sync or async; if a call returns an awaitable, it is awaited.
    A sync function runs on the event loop thread, so a blocking one belongs in
    ``functools.partial(anyio.to_thread.run_sync, fn)``.

    When the timer object is garbage-collected, its task stops at the next
    opportunity: the task holds no reference to the timer.

    :param interval: seconds, or a ``timedelta``; positive and finite
    :param function: what to call
    :param args: positional arguments for ``function``
    :param kwargs: keyword arguments for ``function``
    :raises TypeError: if ``interval`` is not a number or ``timedelta``, or ``function``
        is not callable
    :raises ValueError: if ``interval`` is zero, negative, NaN or infinite
    """

    def __init__(
        self,
        interval: datetime.timedelta | float,
        function: Callable[..., object],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        seconds = check_interval(interval)
        if not callable(function):
            raise TypeError(f"function must be callable, got {type(function).__qualname__}")
        self._name: str | None = None
        self._ctx = _Context(seconds, function, args, kwargs)
        self._started = False
        self._task_group: anyio.abc.TaskGroup | None = None
        finalizer = weakref.finalize(self, self._ctx.cancel)
        finalizer.atexit = False

    @property
    def name(self) -> str | None:
        """The name of the timer's task, or ``None`` until :meth:`set_name` is called."""
        return self._name

    def set_name(self, name: str) -> None:
        """Name the timer's task.

        :param name: the name
        :raises RuntimeError: if the timer has already started
        """
        if self._started:
            raise RuntimeError(_ALREADY_STARTED)
        self._name = name

    def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Start the timer as a task in ``task_group``, named ``name or "PeriodicTimer"``.

        :param task_group: the task group that owns the timer's task
        :raises RuntimeError: if the timer has already started
        """
        if self._started:
            raise RuntimeError(_ALREADY_STARTED)
        ctx = self._ctx
        ctx.call_soon = current_call_soon()
        task_group.start_soon(ctx.run, name=self._name or "PeriodicTimer")
        self._started = True

    def cancel(self) -> None:
        """Stop the timer at the next opportunity. It never blocks.

        A call in flight is cancelled at its next checkpoint. It may be called any number
        of times, from inside ``function``, and from other threads. Before
        :meth:`start`, it does nothing, as in torch.
        """
        if self._started:
            self._ctx.cancel()

    async def aclose(self) -> None:
        """Cancel the timer and wait until its task has finished."""
        self.cancel()
        if self._started:
            await self._ctx.wait_finished()
        else:
            await anyio.lowlevel.checkpoint()

    def statistics(self) -> TimerStatistics:
        """Return the timer's statistics: calls made, lateness and the last duration."""
        ctx = self._ctx
        return TimerStatistics(ctx.calls, ctx.last_lateness, ctx.max_lateness, ctx.last_duration)

    async def __aenter__(self) -> PeriodicTimer:
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        try:
            self.start(task_group)
        except BaseException as exc:
            await task_group.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        self.cancel()
        task_group, self._task_group = self._task_group, None
        assert task_group is not None
        return await task_group.__aexit__(exc_type, exc_value, traceback)
