"""CountingStore: a store that counts what a client asks of it and what it is sent."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, TypeVar, final

from .._stores._model import KeyValue
from .._stores._txn import GetResult, TxnResult
from .._stores._wrapper import StoreWrapper

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

    from .._stores._model import StoreEvent
    from .._stores._protocol import LeaseStore

_T = TypeVar("_T")


def _size(answer: object) -> int:
    """The bytes of keys and values in a read's answer."""
    if isinstance(answer, KeyValue):
        return len(answer.key.encode("utf-8", "surrogatepass")) + len(answer.value)
    if isinstance(answer, tuple) and answer and isinstance(answer[0], dict | list):
        items = answer[0].items() if isinstance(answer[0], dict) else answer[0]
        return sum(
            _size(item)
            if isinstance(item, KeyValue)
            else len(item[0].encode("utf-8", "surrogatepass")) + len(item[1])
            for item in items
        )
    if isinstance(answer, TxnResult):
        return sum(
            _size(kv)
            for result in answer.results
            if isinstance(result, GetResult)
            for kv in result.kvs
        )
    return 0


@final
class CountingStore(StoreWrapper):
    """A :class:`~anyrdzv.LeaseStore` that passes every call on to ``store`` and counts:
    the calls of each method, the watch events delivered, and the bytes of keys and
    values in read answers and in watch events.

    Give each node of a test its own ``CountingStore`` to see what one node costs the
    store, as one host of a cluster would::

        store = CountingStore(MemoryStore())
        async with Rendezvous(store, "job", min_nodes=1, max_nodes=1) as rdzv:
            await rdzv.next_rendezvous()
        print(store.calls, store.events, store.bytes_received)

    :param store: the store to wrap
    :raises TypeError: if ``store`` is not a :class:`~anyrdzv.LeaseStore`
    """

    def __init__(self, store: LeaseStore) -> None:
        super().__init__(store)
        #: how many calls each method has had
        self.calls: Counter[str] = Counter()
        #: how many watch events were delivered, over all watches
        self.events: int = 0
        #: the bytes of keys and values received: in read answers and watch events
        self.bytes_received: int = 0

    def requests(self, *, keep_alives: bool = False) -> int:
        """How many calls were made, with or without the lease renewals."""
        return sum(n for name, n in self.calls.items() if keep_alives or name != "keep_alive")

    async def intercept(self, method: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Count the call, pass it on, and count the bytes of its answer."""
        self.calls[method] += 1
        answer = await call()
        self.bytes_received += _size(answer)
        return answer

    async def intercept_watch(
        self, prefix: str, stream: AsyncIterator[StoreEvent]
    ) -> AsyncGenerator[StoreEvent, None]:
        """Yield the watch's events, counting them and their bytes."""
        async for event in stream:
            self.events += 1
            self.bytes_received += len(event.key.encode("utf-8", "surrogatepass")) + len(
                event.value
            )
            yield event
