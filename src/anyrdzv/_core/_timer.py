"""PeriodicTimer: torch's ``_PeriodicTimer`` as tasks in an anyio task group, not threads.

The unnamed sync timers started together share one task and one heap of deadlines; a
named or async one has a task of its own. ``cancel()`` never blocks, from any thread or
finalizer, and an exception from the function reaches the timer's owner.
"""

from __future__ import annotations

import contextvars
import heapq
import inspect
import itertools
import math
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, final

import anyio
import anyio.abc
import anyio.lowlevel

from ._clock import current_clock
from ._groups import close_task_group
from ._periodic import check_interval
from ._wakeup import CallSoon, current_call_soon

if TYPE_CHECKING:
    import datetime
    from collections.abc import Awaitable, Callable
    from types import TracebackType

    from typing_extensions import Self

_P = ParamSpec("_P")

_ALREADY_STARTED = "The timer has already started."
_TASK_NAME = "PeriodicTimer"
_NO_KWARGS: dict[str, Any] = {}  # shared by the timers without keyword arguments; never changed


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


class _Timer:
    """The state of one started timer, shared by its handle and the task that runs it.

    It must not refer to the :class:`PeriodicTimer`, so that dropping the last reference
    to the handle lets it be collected, which stops the timer.
    """

    __slots__ = (
        "args",
        "batch",
        "call_soon",
        "calls",
        "cancelled",
        "context",
        "done",
        "finalizer",
        "finished",
        "function",
        "interval",
        "kwargs",
        "last_duration",
        "last_lateness",
        "max_lateness",
        "scope",
        "stopped",
        "thread",
    )

    def __init__(
        self, interval: float, function: Callable[..., object], args: Any, kwargs: Any
    ) -> None:
        self.interval = interval
        self.function = function
        self.args = args
        self.kwargs = kwargs or _NO_KWARGS
        self.cancelled = False  # asked for, from any thread
        self.stopped = False  # seen to, on the loop's thread
        self.finished = False  # nothing of the timer runs any more
        self.batch: _Batch | None = None  # the task that calls a sync function
        self.scope: anyio.CancelScope | None = None  # the own task of an async function
        self.context: contextvars.Context | None = None
        self.call_soon: CallSoon | None = None
        self.thread = 0
        self.finalizer: _Finalizer | None = None
        self.done: anyio.Event | None = None  # made by aclose(), only if it has to wait
        self.calls = 0
        self.last_lateness = self.max_lateness = self.last_duration = 0.0

    def cancel(self) -> None:
        # Safe from any thread: a flag, then the rest on the loop's thread.
        self.cancelled = True
        if self.call_soon is None or self.finished:  # not started, or already over
            return
        if threading.get_ident() == self.thread:
            self.stop()
        else:
            self.call_soon(self.stop)

    def cancel_soon(self) -> None:
        # From a finalizer, which may run at any point of any thread: only a flag and
        # a non-blocking wake-up, never a change to the task's state.
        self.cancelled = True
        if self.call_soon is not None and not self.finished:
            self.call_soon(self.stop)

    def stop(self) -> None:
        # On the loop's thread only.
        if self.stopped:
            return
        self.stopped = True
        if self.scope is not None:
            self.scope.cancel()
        if self.batch is not None:
            self.batch.remove(self)

    def finish(self) -> None:
        self.stopped = self.finished = True
        self.finalizer = None  # nothing left to stop: collecting the handle costs nothing
        if self.done is not None:
            self.done.set()

    def record(self, scheduled: float, actual: float, end: float) -> None:
        self.calls += 1
        lateness = actual - scheduled
        self.last_lateness = lateness
        self.max_lateness = max(self.max_lateness, lateness)
        self.last_duration = end - actual

    async def run_alone(
        self, pending: Awaitable[object] | None, scheduled: float, actual: float
    ) -> None:
        """Run the timer of an async function in a task of its own.

        :param pending: the awaitable that the first call returned, if the function
            was called already (by a :class:`_Batch`, before it was seen to be async)
        :param scheduled: when that first call was due
        :param actual: when it began
        """
        now, sleep, _ = current_clock()
        function, args, kwargs, interval = self.function, self.args, self.kwargs, self.interval
        try:
            with anyio.CancelScope() as self.scope:
                if pending is not None:
                    if self.cancelled:
                        self.scope.cancel()  # the call in flight ends at its next checkpoint
                    await pending
                    end = now()
                    self.record(scheduled, actual, end)
                elif self.cancelled:
                    return
                else:
                    end = now()
                while not self.cancelled:
                    await sleep(interval)
                    actual = now()
                    if self.cancelled:
                        break
                    result = function(*args, **kwargs)
                    if result is not None and inspect.isawaitable(result):
                        await result
                    scheduled, end = end + interval, now()
                    self.record(scheduled, actual, end)
        finally:
            self.scope = None
            self.finish()

    async def wait_finished(self) -> None:
        if self.finished:
            await anyio.lowlevel.checkpoint()
            return
        if self.done is None:
            self.done = anyio.Event()
        await self.done.wait()


class _Finalizer(weakref.ref["PeriodicTimer"]):
    """Stops a timer when its handle is collected: a plain weak reference, lighter than
    ``weakref.finalize``. The timer keeps it alive for as long as the timer runs."""

    __slots__ = ("timer",)

    def __new__(cls, handle: PeriodicTimer, timer: _Timer) -> Self:
        return super().__new__(cls, handle, _handle_collected)

    def __init__(self, handle: PeriodicTimer, timer: _Timer) -> None:
        self.timer = timer  # weakref.ref's own __init__ only checks what __new__ took


def _handle_collected(ref: _Finalizer) -> None:
    ref.timer.cancel_soon()


class _Batch:
    """One task that calls the sync functions of many timers, each on its own schedule.

    The timers that a task group starts together, before the batch's task has begun,
    share it: one task, one cancel scope and one sleep per wake-up, instead of a task, a
    scope and a sleep for each timer. A heap orders the timers by when they are due.
    A timer whose function turns out to return an awaitable moves to a task of its own.
    """

    __slots__ = (
        "call_soon",
        "heap",
        "joined",
        "live",
        "name",
        "running",
        "scope",
        "started",
        "task_group",
        "thread",
    )

    def __init__(self, task_group: anyio.abc.TaskGroup, name: str) -> None:
        self.task_group = task_group
        self.name = name
        self.call_soon = current_call_soon()
        self.thread = threading.get_ident()
        self.joined: list[_Timer] = []
        self.heap: list[tuple[float, int, _Timer]] = []
        self.live = 0  # timers not stopped, in the heap or running
        self.running: _Timer | None = None
        self.scope: anyio.CancelScope | None = None
        self.started = False

    def add(self, timer: _Timer) -> None:
        timer.batch = self
        timer.call_soon = self.call_soon
        timer.thread = self.thread
        timer.context = contextvars.copy_context()  # as a task of its own would have
        self.joined.append(timer)
        self.live += 1

    def remove(self, timer: _Timer) -> None:
        # A timer was stopped. Its heap entry stays, to be skipped when it comes up.
        self.live -= 1
        if self.live:
            if timer is not self.running:
                timer.finish()
        else:
            # The last one finishes with the task, so that aclose() waits for the task.
            self.joined.append(timer)
            if self.scope is not None:
                self.scope.cancel()  # wake the task so that it ends

    async def run(self) -> None:
        global _open_batch
        self.started = True
        if _open_batch is self:
            _open_batch = None
        now, sleep, checkpoint = current_clock()
        heap = self.heap
        heappush, heappop, isawaitable = heapq.heappush, heapq.heappop, inspect.isawaitable
        try:
            with anyio.CancelScope() as self.scope:
                start = now()
                # Ties go by start order; a running count breaks them from here on.
                heap[:] = [
                    (start + t.interval, i, t) for i, t in enumerate(self.joined) if not t.stopped
                ]
                heapq.heapify(heap)
                seq = itertools.count(len(heap))
                # Those stopped before the task began finish with it, if not already.
                self.joined = [t for t in self.joined if t.stopped]
                target = -math.inf  # what the last sleep was for
                while self.live:
                    if len(heap) > 2 * self.live + 64:  # mostly stopped timers
                        heap[:] = [entry for entry in heap if not entry[2].stopped]
                        heapq.heapify(heap)
                    actual = now()
                    due = heap[0][0]
                    if due > actual:
                        target = due
                        await sleep(due - actual)
                        actual = now()
                    calls = 0
                    # Each call begins when the one before ended: one clock read a tick.
                    while heap and (heap[0][0] <= actual or heap[0][0] <= target):
                        scheduled, _, timer = heappop(heap)
                        if timer.stopped:
                            continue
                        if timer.cancelled:  # from another thread; its wake-up is on the way
                            timer.stop()
                            continue
                        self.running = timer
                        result = timer.context.run(  # type: ignore[union-attr]
                            timer.function, *timer.args, **timer.kwargs
                        )
                        self.running = None
                        end = now()
                        if result is not None and isawaitable(result):
                            self.hand_over(timer, result, scheduled, actual)
                        else:
                            timer.record(scheduled, actual, end)
                            if timer.stopped:  # by its own function
                                if self.live:  # else it finishes with the task
                                    timer.finish()
                            elif timer.cancelled:
                                timer.stop()
                            else:
                                heappush(heap, (end + timer.interval, next(seq), timer))
                        actual = end
                        calls += 1
                        if calls % _CALLS_PER_CHECKPOINT == 0:
                            await checkpoint()  # let other tasks run during a long burst
                            actual = now()
                    target = -math.inf
        finally:
            self.live = 0
            self.scope = None
            for timer in (*self.joined, *(entry[2] for entry in heap)):
                timer.finish()
            if self.running is not None:  # its function raised
                self.running.finish()
            heap.clear()

    def hand_over(
        self, timer: _Timer, pending: Awaitable[object], scheduled: float, actual: float
    ) -> None:
        """Move a timer whose function returned an awaitable to a task of its own."""
        if not timer.stopped:
            self.live -= 1
        elif timer in self.joined:  # it was the last: its own task will finish it now
            self.joined.remove(timer)
        timer.batch = None
        context = timer.context
        assert context is not None

        def spawn() -> None:
            self.task_group.start_soon(
                timer.run_alone, pending, scheduled, actual, name=self.name
            )

        context.run(spawn)


_CALLS_PER_CHECKPOINT = 1000
_open_batch: _Batch | None = None  # the last batch made, until its task begins


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
    There, an exception from ``function`` cancels the block and leaves it as itself,
    and an exception raised in the block leaves unchanged; the two leave together, in
    an exception group, only when they happen at once.

    ``function`` may be sync or async; if a call returns an awaitable, it is awaited.
    A sync function runs on the event loop thread, so a blocking one belongs in
    ``functools.partial(anyio.to_thread.run_sync, fn)``.

    Timers cost about what a bare ``while True: await sleep(); fn()`` task costs, or
    less: the unnamed timers with sync functions that one task group starts together
    (before the loop next runs) share one task, named ``"PeriodicTimer"``, which calls
    each function on its own schedule, in a copy of the context that :meth:`start` saw.
    A named timer, and one whose function is async or returns an awaitable, has a task
    of its own.

    When the timer object is garbage-collected, it stops at the next opportunity:
    nothing that runs it refers to it.

    :param interval: seconds, or a ``timedelta``; positive and finite
    :param function: what to call, sync or async; a type checker checks ``args`` and
        ``kwargs`` against its signature
    :param args: positional arguments for ``function``
    :param kwargs: keyword arguments for ``function``
    :raises TypeError: if ``interval`` is not a number or ``timedelta``, or ``function``
        is not callable
    :raises ValueError: if ``interval`` is zero, negative, NaN or infinite
    """

    __slots__ = ("__weakref__", "_name", "_started", "_task_group", "_timer")

    def __init__(
        self,
        interval: datetime.timedelta | float,
        function: Callable[_P, object],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> None:
        seconds = check_interval(interval)
        if not callable(function):
            raise TypeError(f"function must be callable, got {type(function).__qualname__}")
        self._name: str | None = None
        self._timer = _Timer(seconds, function, args, kwargs)
        self._started = False
        self._task_group: anyio.abc.TaskGroup | None = None

    @property
    def name(self) -> str | None:
        """The name of the timer's task, or ``None`` until :meth:`set_name` is called."""
        return self._name

    def set_name(self, name: str) -> None:
        """Name the timer's task. A named timer has a task of its own.

        :param name: the name
        :raises RuntimeError: if the timer has already started
        """
        if self._started:
            raise RuntimeError(_ALREADY_STARTED)
        self._name = name

    def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Start the timer in ``task_group``.

        It runs in a task named ``name``, or in one named ``"PeriodicTimer"`` that the
        unnamed timers started together in ``task_group`` share.

        :param task_group: the task group that owns the timer's task
        :raises RuntimeError: if the timer has already started
        """
        global _open_batch
        if self._started:
            raise RuntimeError(_ALREADY_STARTED)
        timer = self._timer
        if inspect.iscoroutinefunction(timer.function):
            call_soon = current_call_soon()
            task_group.start_soon(timer.run_alone, None, 0.0, 0.0, name=self._name or _TASK_NAME)
            timer.call_soon, timer.thread = call_soon, threading.get_ident()
        else:
            batch = None if self._name is not None else _open_batch
            if batch is None or batch.task_group is not task_group or batch.started:
                name = self._name or _TASK_NAME
                batch = _Batch(task_group, name)
                task_group.start_soon(batch.run, name=name)
                if self._name is None:  # a named timer's batch is its alone
                    _open_batch = batch
            batch.add(timer)
        timer.finalizer = _Finalizer(self, timer)
        self._started = True

    def cancel(self) -> None:
        """Stop the timer at the next opportunity. It never blocks.

        A call in flight is cancelled at its next checkpoint. It may be called any number
        of times, from inside ``function``, and from other threads. Before
        :meth:`start`, it does nothing, as in torch.
        """
        if self._started:
            self._timer.cancel()

    async def aclose(self) -> None:
        """Cancel the timer and wait until nothing of it runs any more."""
        self.cancel()
        if self._started:
            await self._timer.wait_finished()
        else:
            await anyio.lowlevel.checkpoint()

    def statistics(self) -> TimerStatistics:
        """Return the timer's statistics: calls made, lateness and the last duration."""
        t = self._timer
        return TimerStatistics(t.calls, t.last_lateness, t.max_lateness, t.last_duration)

    async def __aenter__(self) -> PeriodicTimer:
        if self._task_group is not None:
            raise RuntimeError("PeriodicTimer was already entered")
        if self._started:
            raise RuntimeError(_ALREADY_STARTED)
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        try:
            self.start(task_group)
        except BaseException as exc:
            await close_task_group(
                task_group, type(exc), exc, exc.__traceback__, what="PeriodicTimer"
            )
            raise
        self._task_group = task_group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        task_group = self._task_group
        if task_group is None:
            raise RuntimeError("PeriodicTimer was not entered")
        self._task_group = None
        self.cancel()
        return await close_task_group(
            task_group, exc_type, exc_value, traceback, what="PeriodicTimer"
        )
