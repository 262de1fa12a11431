"""members() and watch_members() under faults: outages far apart, a half-open link,
and keys that no member wrote."""

from __future__ import annotations

import logging
import math
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from anyrdzv import (
    EtcdStore,
    Heartbeat,
    MemberEvent,
    MembersSnapshot,
    MemoryStore,
    StoreConnectionError,
    members,
    watch_members,
)
from tests._support.tcpproxy import TcpProxy

if TYPE_CHECKING:
    from tests._support.etcd_server import EtcdServer

pytestmark = pytest.mark.anyio


class Follower:
    """Runs watch_members in a task; records what it yields, and how it ended."""

    def __init__(self, store: Any, prefix: str, retry_for: float) -> None:
        self.store, self.prefix, self.retry_for = store, prefix, retry_for
        self.items: list[MembersSnapshot | MemberEvent] = []
        self.error: BaseException | None = None
        self.ended_at: float | None = None
        self.ready = anyio.Event()

    async def run(self) -> None:
        try:
            async with aclosing(
                watch_members(self.store, "g", prefix=self.prefix, retry_for=self.retry_for)
            ) as items:
                async for item in items:
                    self.items.append(item)
                    self.ready.set()
        except StoreConnectionError as exc:
            self.error = exc
            self.ended_at = anyio.current_time()

    def kinds(self) -> list[tuple[str, str]]:
        return [(e.type.value, e.member) for e in self.items if isinstance(e, MemberEvent)]

    async def wait_for(self, kinds: list[tuple[str, str]], timeout: float) -> None:
        with anyio.fail_after(timeout):
            while sorted(self.kinds()) != sorted(kinds) and self.error is None:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        assert self.error is None, self.error
        assert sorted(self.kinds()) == sorted(kinds)  # members that leave at once: any order


class TestArguments:
    @pytest.mark.parametrize("retry_for", ["x", None, True])
    async def test_retry_for_type(self, retry_for: Any) -> None:
        with pytest.raises(TypeError, match="retry_for must be a number"):
            await watch_members(MemoryStore(), "g", retry_for=retry_for).__anext__()

    @pytest.mark.parametrize("retry_for", [-1, math.inf, math.nan])
    async def test_retry_for_range(self, retry_for: float) -> None:
        with pytest.raises(ValueError, match="retry_for must be a finite number >= 0"):
            await watch_members(MemoryStore(), "g", retry_for=retry_for).__anext__()


class TestForeignKeys:
    async def test_keys_that_name_no_member_are_skipped_and_logged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        store = MemoryStore()
        await store.put("/anyrdzv/g/members/a/nested", b"?")
        await store.put("/anyrdzv/g/members/", b"?")
        await store.put("/anyrdzv/g/members/ok", b"A")
        with caplog.at_level(logging.WARNING, logger="anyrdzv._membership._members"):
            assert (await members(store, "g")).members == {"ok": b"A"}
            follower = Follower(store, "/anyrdzv", 5)
            async with anyio.create_task_group() as tg:
                tg.start_soon(follower.run)
                await follower.ready.wait()
                await store.put("/anyrdzv/g/members/x/y", b"?")
                await store.put("/anyrdzv/g/members/b", b"B")
                await follower.wait_for([("JOINED", "b")], 5)
                tg.cancel_scope.cancel()
        skipped = [r for r in caplog.records if "names no member" in r.getMessage()]
        assert len(skipped) >= 3


@pytest.mark.slow
class TestOutages:
    async def test_two_short_outages_far_apart_do_not_end_the_watch(
        self, etcd_server: EtcdServer, key_prefix: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Each confirmed reconnect starts the retry_for count afresh."""
        async with (
            TcpProxy("127.0.0.1", int(etcd_server.endpoint.rsplit(":", 1)[1])) as proxy,
            EtcdStore(proxy.endpoint, timeout=1) as through_proxy,
            EtcdStore(etcd_server.endpoint) as direct,
            anyio.create_task_group() as tg,
        ):
            follower = Follower(through_proxy, key_prefix, retry_for=2)
            tg.start_soon(follower.run)
            await follower.ready.wait()
            with caplog.at_level(logging.WARNING, logger="anyrdzv._membership._members"):
                for outage in (1.0, 0.5):  # 3 s apart: more than retry_for
                    proxy.refusing = True
                    proxy.cut()
                    await anyio.sleep(outage)
                    proxy.refusing = False
                    await anyio.sleep(3)
                    assert follower.error is None, follower.error
            await direct.put(f"{key_prefix}/g/members/late", b"")
            await follower.wait_for([("JOINED", "late")], 10)
            tg.cancel_scope.cancel()
        assert sum("resumed" in r.getMessage() for r in caplog.records) >= 2

    async def test_a_half_open_link_is_found_out_and_nothing_is_missed(
        self, etcd_server: EtcdServer, key_prefix: str
    ) -> None:
        """The link stops moving data without a reset; members leave meanwhile."""
        async with (
            TcpProxy("127.0.0.1", int(etcd_server.endpoint.rsplit(":", 1)[1])) as proxy,
            EtcdStore(proxy.endpoint, timeout=1, watch_idle=1) as through_proxy,
            EtcdStore(etcd_server.endpoint) as direct,
            anyio.create_task_group() as tg,
        ):
            leave = anyio.Event()
            joined: list[str] = []

            async def member(name: str) -> None:
                async with Heartbeat(direct, "g", name, interval=0.5, prefix=key_prefix):
                    joined.append(name)
                    await leave.wait()

            tg.start_soon(member, "a")
            tg.start_soon(member, "b")
            with anyio.fail_after(5):
                while len(joined) < 2:  # noqa: ASYNC110 - polls the members
                    await anyio.sleep(0.01)
            follower = Follower(through_proxy, key_prefix, retry_for=5)
            tg.start_soon(follower.run)
            await follower.ready.wait()
            assert follower.items[0] == MembersSnapshot(
                {"a": b"", "b": b""}, follower.items[0].revision
            )
            proxy.stalled = True
            await anyio.sleep(0.5)
            leave.set()  # both leave while the link is dead
            await anyio.sleep(2.5)
            assert follower.error is None, follower.error
            proxy.stalled = False
            await follower.wait_for([("LEFT", "a"), ("LEFT", "b")], 10)
            tg.cancel_scope.cancel()

    async def test_a_link_that_stays_half_open_ends_the_watch_in_bounded_time(
        self, etcd_server: EtcdServer, key_prefix: str
    ) -> None:
        async with (
            TcpProxy("127.0.0.1", int(etcd_server.endpoint.rsplit(":", 1)[1])) as proxy,
            EtcdStore(proxy.endpoint, timeout=1, watch_idle=1) as through_proxy,
            anyio.create_task_group() as tg,
        ):
            follower = Follower(through_proxy, key_prefix, retry_for=2)
            tg.start_soon(follower.run)
            await follower.ready.wait()
            proxy.stalled = True
            stalled_at = anyio.current_time()
            with anyio.fail_after(20):
                while follower.ended_at is None:  # noqa: ASYNC110 - polls the follower
                    await anyio.sleep(0.05)
            # watch_idle (1) finds it, then retries fail for retry_for (2), each
            # attempt bounded by timeout (1): well under 10 s, never a hang.
            assert follower.ended_at - stalled_at < 10
            assert isinstance(follower.error, StoreConnectionError)
            proxy.stalled = False
            tg.cancel_scope.cancel()


@pytest.mark.parametrize("store", [None, "localhost:2379"])
async def test_the_store_is_checked(store: Any) -> None:
    with pytest.raises(TypeError, match="store must be a LeaseStore"):
        await members(store, "g")
    with pytest.raises(TypeError, match="store must be a LeaseStore"):
        await watch_members(store, "g").__anext__()
