"""StoreWrapper: a :class:`~anyrdzv.LeaseStore` that passes every call to another, through
one hook, so that a subclass can count, fail or delay calls without restating the protocol."""

from __future__ import annotations

from contextlib import aclosing
from typing import TYPE_CHECKING, Any, TypeVar

from ._protocol import check_store

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence

    from ._model import CasResult, KeyValue, Lease, StoreEvent
    from ._protocol import LeaseStore
    from ._txn import Compare, TxnOp, TxnResult

_T = TypeVar("_T")


class StoreWrapper:
    """Every :class:`~anyrdzv.LeaseStore` method of ``store``, each through
    :meth:`intercept`, and the events of every watch through :meth:`intercept_watch`:
    override those two to count, fail or delay calls.

    :param store: the store to wrap
    :raises TypeError: if ``store`` is not a :class:`~anyrdzv.LeaseStore`
    """

    def __init__(self, store: LeaseStore) -> None:
        #: the wrapped store
        self.inner: LeaseStore = check_store(store)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    async def intercept(self, method: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run one call of ``method``: ``call()`` passes it on to the wrapped store.

        :param method: the name of the :class:`~anyrdzv.LeaseStore` method called
        :param call: makes the call on the wrapped store
        :return: what the wrapped store answers, by default
        """
        return await call()

    async def intercept_watch(
        self, prefix: str, stream: AsyncIterator[StoreEvent]
    ) -> AsyncGenerator[StoreEvent, None]:
        """Yield the events of one watch on ``prefix``: by default, those of the wrapped
        store's ``stream``.

        :param prefix: the prefix watched
        :param stream: the wrapped store's watch
        """
        async for event in stream:
            yield event

    async def grant(self, ttl: int) -> Lease:
        """Grant a lease (see :meth:`anyrdzv.LeaseStore.grant`)."""
        return await self.intercept("grant", lambda: self.inner.grant(ttl))

    async def keep_alive(self, lease: Lease | int) -> int:
        """Renew a lease (see :meth:`anyrdzv.LeaseStore.keep_alive`)."""
        return await self.intercept("keep_alive", lambda: self.inner.keep_alive(lease))

    async def revoke(self, lease: Lease | int) -> None:
        """Revoke a lease (see :meth:`anyrdzv.LeaseStore.revoke`)."""
        await self.intercept("revoke", lambda: self.inner.revoke(lease))

    async def put(self, key: str, value: bytes, *, lease: Lease | int | None = None) -> int:
        """Put a key (see :meth:`anyrdzv.LeaseStore.put`)."""
        return await self.intercept("put", lambda: self.inner.put(key, value, lease=lease))

    async def get_prefix(self, prefix: str) -> tuple[dict[str, bytes], int]:
        """Read a prefix (see :meth:`anyrdzv.LeaseStore.get_prefix`)."""
        return await self.intercept("get_prefix", lambda: self.inner.get_prefix(prefix))

    async def get(self, key: str) -> KeyValue | None:
        """Read a key (see :meth:`anyrdzv.LeaseStore.get`)."""
        return await self.intercept("get", lambda: self.inner.get(key))

    async def get_prefix_kv(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Read a prefix (see :meth:`anyrdzv.LeaseStore.get_prefix_kv`)."""
        return await self.intercept("get_prefix_kv", lambda: self.inner.get_prefix_kv(prefix))

    async def count_prefix(self, prefix: str) -> int:
        """Count the keys under a prefix (see :meth:`anyrdzv.LeaseStore.count_prefix`)."""
        return await self.intercept("count_prefix", lambda: self.inner.count_prefix(prefix))

    async def delete(self, key: str) -> bool:
        """Delete a key (see :meth:`anyrdzv.LeaseStore.delete`)."""
        return await self.intercept("delete", lambda: self.inner.delete(key))

    async def delete_prefix(self, prefix: str) -> int:
        """Delete a prefix (see :meth:`anyrdzv.LeaseStore.delete_prefix`)."""
        return await self.intercept("delete_prefix", lambda: self.inner.delete_prefix(prefix))

    async def compare_and_swap(
        self,
        key: str,
        value: bytes,
        *,
        expected_mod_revision: int,
        lease: Lease | int | None = None,
    ) -> CasResult:
        """Swap a key (see :meth:`anyrdzv.LeaseStore.compare_and_swap`)."""
        return await self.intercept(
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
        return await self.intercept("txn", lambda: self.inner.txn(compare, success, failure))

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
        stream = await self.intercept(
            "watch_prefix", lambda: _opened(self.inner, prefix, start_revision, on_open)
        )
        try:
            async with aclosing(self.intercept_watch(prefix, stream)) as events:
                async for event in events:
                    yield event
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    async def time_to_live(self, lease: Lease | int) -> int | None:
        """The remaining TTL of a lease (see :meth:`anyrdzv.LeaseStore.time_to_live`)."""
        return await self.intercept("time_to_live", lambda: self.inner.time_to_live(lease))


async def _opened(
    store: LeaseStore, prefix: str, start_revision: int, on_open: Callable[[], object] | None
) -> AsyncIterator[StoreEvent]:
    stream: Any = store.watch_prefix(prefix, start_revision=start_revision, on_open=on_open)
    return stream  # type: ignore[no-any-return]
