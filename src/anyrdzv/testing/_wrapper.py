"""StoreWrapper: a :class:`~anyrdzv.LeaseStore` that passes every call to another, through
one hook, so that a subclass can count, fail or delay calls without restating the protocol."""

from __future__ import annotations

from contextlib import aclosing
from typing import TYPE_CHECKING, Any, TypeVar

from .._stores._protocol import check_store

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence

    from .._stores._model import CasResult, KeyValue, Lease, StoreEvent
    from .._stores._protocol import LeaseStore
    from .._stores._txn import Compare, TxnOp, TxnResult

_T = TypeVar("_T")


class StoreWrapper:
    """Every :class:`~anyrdzv.LeaseStore` method of ``store``, each through :meth:`_call`,
    and every watch through :meth:`_events`.

    :param store: the store to wrap
    :raises TypeError: if ``store`` is not a :class:`~anyrdzv.LeaseStore`
    """

    def __init__(self, store: LeaseStore) -> None:
        #: the wrapped store
        self.inner: LeaseStore = check_store(store)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    async def _call(self, method: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run one call of ``method``: ``call()`` passes it on."""
        return await call()

    async def _events(
        self, prefix: str, stream: AsyncIterator[StoreEvent]
    ) -> AsyncGenerator[StoreEvent, None]:
        """The events of one watch on ``prefix``: by default, the wrapped store's."""
        async for event in stream:
            yield event

    async def grant(self, ttl: int) -> Lease:
        """Grant a lease (see :meth:`anyrdzv.LeaseStore.grant`)."""
        return await self._call("grant", lambda: self.inner.grant(ttl))

    async def keep_alive(self, lease: Lease) -> int:
        """Renew a lease (see :meth:`anyrdzv.LeaseStore.keep_alive`)."""
        return await self._call("keep_alive", lambda: self.inner.keep_alive(lease))

    async def revoke(self, lease: Lease) -> None:
        """Revoke a lease (see :meth:`anyrdzv.LeaseStore.revoke`)."""
        await self._call("revoke", lambda: self.inner.revoke(lease))

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        """Put a key (see :meth:`anyrdzv.LeaseStore.put`)."""
        return await self._call("put", lambda: self.inner.put(key, value, lease=lease))

    async def get_prefix(self, prefix: str) -> tuple[dict[str, bytes], int]:
        """Read a prefix (see :meth:`anyrdzv.LeaseStore.get_prefix`)."""
        return await self._call("get_prefix", lambda: self.inner.get_prefix(prefix))

    async def get(self, key: str) -> KeyValue | None:
        """Read a key (see :meth:`anyrdzv.LeaseStore.get`)."""
        return await self._call("get", lambda: self.inner.get(key))

    async def get_prefix_kv(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Read a prefix (see :meth:`anyrdzv.LeaseStore.get_prefix_kv`)."""
        return await self._call("get_prefix_kv", lambda: self.inner.get_prefix_kv(prefix))

    async def count_prefix(self, prefix: str) -> int:
        """Count the keys under a prefix (see :meth:`anyrdzv.LeaseStore.count_prefix`)."""
        return await self._call("count_prefix", lambda: self.inner.count_prefix(prefix))

    async def delete(self, key: str) -> bool:
        """Delete a key (see :meth:`anyrdzv.LeaseStore.delete`)."""
        return await self._call("delete", lambda: self.inner.delete(key))

    async def delete_prefix(self, prefix: str) -> int:
        """Delete a prefix (see :meth:`anyrdzv.LeaseStore.delete_prefix`)."""
        return await self._call("delete_prefix", lambda: self.inner.delete_prefix(prefix))

    async def compare_and_swap(
        self,
        key: str,
        value: bytes,
        *,
        expected_mod_revision: int,
        lease: Lease | None = None,
    ) -> CasResult:
        """Swap a key (see :meth:`anyrdzv.LeaseStore.compare_and_swap`)."""
        return await self._call(
            "compare_and_swap",
            lambda: self.inner.compare_and_swap(
                key, value, expected_mod_revision=expected_mod_revision, lease=lease
            ),
        )

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        """Run a transaction (see :meth:`anyrdzv.LeaseStore.txn`)."""
        return await self._call("txn", lambda: self.inner.txn(compare, success, failure))

    def watch_prefix(
        self,
        prefix: str,
        *,
        start_revision: int,
        on_open: Callable[[], object] | None = None,
    ) -> AsyncGenerator[StoreEvent, None]:
        """Watch a prefix (see :meth:`anyrdzv.LeaseStore.watch_prefix`); close the
        stream with ``contextlib.aclosing``."""
        return self._watch(prefix, start_revision, on_open)

    async def _watch(
        self, prefix: str, start_revision: int, on_open: Callable[[], object] | None
    ) -> AsyncGenerator[StoreEvent, None]:
        stream = await self._call(
            "watch_prefix", lambda: _opened(self.inner, prefix, start_revision, on_open)
        )
        try:
            async with aclosing(self._events(prefix, stream)) as events:
                async for event in events:
                    yield event
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    async def time_to_live(self, lease: Lease | int) -> int | None:
        """The remaining TTL of a lease, if the wrapped store tells it (as
        :meth:`anyrdzv.EtcdStore.time_to_live` and :meth:`anyrdzv.MemoryStore.time_to_live` do).

        :raises AttributeError: if the wrapped store does not
        """
        inner: Any = self.inner
        return await self._call("time_to_live", lambda: inner.time_to_live(lease))


async def _opened(
    store: LeaseStore, prefix: str, start_revision: int, on_open: Callable[[], object] | None
) -> AsyncIterator[StoreEvent]:
    stream: Any = store.watch_prefix(prefix, start_revision=start_revision, on_open=on_open)
    return stream  # type: ignore[no-any-return]
