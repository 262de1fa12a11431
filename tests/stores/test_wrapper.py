"""StoreWrapper: every call through one hook, every watch through another, on MemoryStore
and a real etcd."""

from __future__ import annotations

from contextlib import aclosing
from typing import TYPE_CHECKING, TypeVar

import pytest

from anyrdzv import LeaseExpired, LeaseStore, StoreEvent
from anyrdzv.testing import CountingStore, FaultyStore, StoreWrapper

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

pytestmark = pytest.mark.anyio

_T = TypeVar("_T")


class Recorder(StoreWrapper):
    """Notes each call, and the key of each event a watch yields."""

    def __init__(self, store: LeaseStore) -> None:
        super().__init__(store)
        self.called: list[str] = []
        self.seen: list[str] = []

    async def intercept(self, method: str, call: Callable[[], Awaitable[_T]]) -> _T:
        self.called.append(method)
        return await call()

    async def intercept_watch(
        self, prefix: str, stream: AsyncIterator[StoreEvent]
    ) -> AsyncGenerator[StoreEvent, None]:
        async for event in stream:
            self.seen.append(event.key)
            yield event


async def test_a_subclass_sees_every_call_and_event(store: LeaseStore, key_prefix: str) -> None:
    recorder = Recorder(store)
    lease = await recorder.grant(10)
    revision = await recorder.put(f"{key_prefix}/a", b"1", lease=lease)
    async with aclosing(recorder.watch_prefix(f"{key_prefix}/", start_revision=revision)) as events:
        async for event in events:
            assert event.key == f"{key_prefix}/a"
            break
    assert await recorder.time_to_live(lease) is not None
    await recorder.revoke(lease)
    assert recorder.called == ["grant", "put", "watch_prefix", "time_to_live", "revoke"]
    assert recorder.seen == [f"{key_prefix}/a"]


@pytest.mark.parametrize("wrapper", [StoreWrapper, FaultyStore, CountingStore])
async def test_lease_ids_pass_through(
    store: LeaseStore, key_prefix: str, wrapper: type[StoreWrapper]
) -> None:
    """A key's lease id renews and revokes its lease through a wrapper, as through the
    store itself."""
    wrapped = wrapper(store)
    lease = await wrapped.grant(10)
    await wrapped.put(f"{key_prefix}/a", b"1", lease=lease.id)
    kv = await wrapped.get(f"{key_prefix}/a")
    assert kv is not None
    assert kv.lease == lease.id
    assert 0 < await wrapped.keep_alive(kv.lease) <= 10
    await wrapped.revoke(kv.lease)
    assert await wrapped.get(f"{key_prefix}/a") is None
    with pytest.raises(LeaseExpired):
        await wrapped.keep_alive(kv.lease)
