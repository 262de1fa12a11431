"""FaultyStore: a store whose calls fail, hang or drop their watches on a test's word."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar, final

import anyio
import anyio.lowlevel

from .._checks import check_int, echo, type_name
from .._exceptions import StoreConnectionError, StoreError
from .._stores._wrapper import StoreWrapper

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

    from .._stores._model import StoreEvent
    from .._stores._protocol import LeaseStore

_T = TypeVar("_T")

#: The methods a fault can be set on.
METHODS = (
    "grant",
    "keep_alive",
    "revoke",
    "put",
    "get_prefix",
    "get",
    "get_prefix_kv",
    "count_prefix",
    "delete",
    "delete_prefix",
    "compare_and_swap",
    "txn",
    "watch_prefix",
    "time_to_live",
)


@dataclass
class _Fault:
    error: BaseException | None  # None: hang
    times: int | None  # None: until healed


@final
class FaultyStore(StoreWrapper):
    """A :class:`~anyrdzv.LeaseStore` that passes calls on to ``store``, except those a
    test has told it to fail or hang: for testing what an agent does when its store
    misbehaves, with no network to break.

    ::

        store = FaultyStore(MemoryStore())
        store.fail("keep_alive", times=3)       # the next 3 renewals are refused
        store.partition()                       # everything fails, watches break
        store.heal()                            # and all is well again

    An error a fault raises is raised afresh for each call (a copy of ``error`` with its
    message). Each call checks its fault when it starts: a call already waiting on the
    wrapped store is not affected. :attr:`calls` counts every call, failed or not.

    :param store: the store to wrap
    :raises TypeError: if ``store`` is not a :class:`~anyrdzv.LeaseStore`
    """

    def __init__(self, store: LeaseStore) -> None:
        super().__init__(store)
        #: how many calls each method has had
        self.calls: Counter[str] = Counter()
        self._faults: dict[str, _Fault] = {}
        self._healed: anyio.Event | None = None
        self._watch_generation = 0
        self._reads: set[anyio.CancelScope] = set()

    def fail(
        self,
        *methods: str,
        error: StoreError | None = None,
        times: int | None = None,
    ) -> None:
        """Make calls of ``methods`` (every method, if none is named) raise ``error``
        (a :class:`~anyrdzv.StoreConnectionError` by default): the next ``times`` calls,
        or every call until :meth:`heal`.

        :raises ValueError: if a method is not a store method, or ``times`` is below 1
        :raises TypeError: if ``error`` is not a :class:`~anyrdzv.StoreError`
        """
        if error is not None and not isinstance(error, StoreError):
            raise TypeError(f"error must be a StoreError, got {type_name(error)}")
        error = error or StoreConnectionError("connection refused (a fault)")
        self._set(methods, _Fault(error, self._times(times)))

    def hang(self, *methods: str, times: int | None = None) -> None:
        """Make calls of ``methods`` (every method, if none is named) never answer, until
        :meth:`heal`: the next ``times`` calls, or every call.

        :raises ValueError: if a method is not a store method, or ``times`` is below 1
        """
        self._set(methods, _Fault(None, self._times(times)))

    def break_watches(self) -> None:
        """End every open watch stream with a :class:`~anyrdzv.StoreConnectionError`, as
        a dropped connection does; watches made afterwards work."""
        self._watch_generation += 1
        for scope in list(self._reads):
            scope.cancel()

    def partition(self) -> None:
        """Cut the store off: every call fails with a
        :class:`~anyrdzv.StoreConnectionError` and every watch breaks, until :meth:`heal`."""
        self.fail(error=StoreConnectionError("the store is unreachable (a partition)"))
        self.break_watches()

    def heal(self) -> None:
        """End every fault: hung calls go on to the wrapped store."""
        self._faults.clear()
        if self._healed is not None:
            self._healed.set()
            self._healed = None

    @staticmethod
    def _times(times: int | None) -> int | None:
        return None if times is None else check_int("times", times, least=1)

    def _set(self, methods: tuple[str, ...], fault: _Fault) -> None:
        for method in methods:
            if method not in METHODS:
                raise ValueError(f"method must be one of {', '.join(METHODS)}, got {echo(method)}")
        for method in methods or METHODS:
            self._faults[method] = fault

    async def intercept(self, method: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Count the call; then fail it, hang it, or pass it on, as the faults say."""
        self.calls[method] += 1
        await anyio.lowlevel.checkpoint()
        fault = self._faults.get(method)
        if fault is not None:
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults = {m: f for m, f in self._faults.items() if f is not fault}
            if fault.error is None:
                if self._healed is None:
                    self._healed = anyio.Event()
                await self._healed.wait()
            else:
                raise type(fault.error)(*fault.error.args) from None
        return await call()

    async def intercept_watch(
        self, prefix: str, stream: AsyncIterator[StoreEvent]
    ) -> AsyncGenerator[StoreEvent, None]:
        """Yield the watch's events until :meth:`break_watches` cuts it."""
        generation = self._watch_generation
        iterator = stream.__aiter__()
        while True:
            event: StoreEvent | None = None  # None: the watch was cut before an event
            with anyio.CancelScope() as scope:
                self._reads.add(scope)
                try:
                    if self._watch_generation == generation:
                        event = await iterator.__anext__()
                finally:
                    self._reads.discard(scope)
            if self._watch_generation != generation or event is None:
                raise StoreConnectionError(f"the watch on {prefix!r} was cut (a fault)")
            yield event
