"""members() and watch_members(): a snapshot, then who joins and leaves, on MemoryStore
and a real etcd; resuming a cut stream with nothing lost or repeated, outages far apart,
a half-open link, a SIGKILLed member and an etcd restart; keys that no member wrote.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from anyrdzv import (
    EtcdStore,
    Heartbeat,
    LeaseStore,
    MemberEvent,
    MemberEventType,
    MembersSnapshot,
    MemoryStore,
    StoreConnectionError,
    members,
    watch_members,
)
from anyrdzv.testing import FaultyStore
from tests._support import EXAMPLES
from tests._support.tcpproxy import TcpProxy

if TYPE_CHECKING:
    from tests._support.etcd_server import EtcdServer

sys.path.insert(0, str(EXAMPLES))
from membership import start_member_process

pytestmark = pytest.mark.anyio


class Watcher:
    """Runs watch_members in a task; records the snapshot, each event with the time it
    came, and the StoreConnectionError that ended it, if one did."""

    def __init__(self, store: LeaseStore, group: str, prefix: str, retry_for: float = 30.0) -> None:
        self.store, self.group, self.prefix, self.retry_for = store, group, prefix, retry_for
        self.snapshot: MembersSnapshot | None = None
        self.events: list[tuple[float, MemberEvent]] = []
        self.error: StoreConnectionError | None = None
        self.ended_at: float | None = None
        self.ready = anyio.Event()

    async def run(self) -> None:
        watching = watch_members(
            self.store, self.group, prefix=self.prefix, retry_for=self.retry_for
        )
        try:
            async with aclosing(watching) as items:
                async for item in items:
                    if isinstance(item, MembersSnapshot):
                        self.snapshot = item
                        self.ready.set()
                    else:
                        self.events.append((anyio.current_time(), item))
        except StoreConnectionError as exc:
            self.error = exc
            self.ended_at = anyio.current_time()

    def kinds(self) -> list[tuple[str, str]]:
        return [(e.type.value, e.member) for _, e in self.events]

    async def wait_for(self, kind: MemberEventType, member: str, limit: float) -> float:
        """When the event came."""
        with anyio.fail_after(limit):
            while True:
                assert self.error is None, self.error
                for stamp, event in self.events:
                    if (event.type, event.member) == (kind, member):
                        return stamp
                await anyio.sleep(0.01)

    async def wait_for_all(self, kinds: list[tuple[str, str]], timeout: float) -> None:
        """Until the events are ``kinds``, in any order (members that leave at once)."""
        with anyio.fail_after(timeout):
            while sorted(self.kinds()) != sorted(kinds) and self.error is None:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        assert self.error is None, self.error
        assert sorted(self.kinds()) == sorted(kinds)


class TestArguments:
    @pytest.mark.parametrize("retry_for", ["x", None, True])
    async def test_retry_for_type(self, retry_for: Any) -> None:
        with pytest.raises(TypeError, match="retry_for must be a number"):
            await watch_members(MemoryStore(), "g", retry_for=retry_for).__anext__()

    @pytest.mark.parametrize("retry_for", [-1, math.inf, math.nan])
    async def test_retry_for_range(self, retry_for: float) -> None:
        with pytest.raises(ValueError, match="retry_for must be a finite number >= 0"):
            await watch_members(MemoryStore(), "g", retry_for=retry_for).__anext__()


@pytest.mark.parametrize("store", [None, "localhost:2379"])
async def test_the_store_is_checked(store: Any) -> None:
    with pytest.raises(TypeError, match="store must be a LeaseStore"):
        await members(store, "g")
    with pytest.raises(TypeError, match="store must be a LeaseStore"):
        await watch_members(store, "g").__anext__()


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
            watcher = Watcher(store, "g", "/anyrdzv", retry_for=5)
            async with anyio.create_task_group() as tg:
                tg.start_soon(watcher.run)
                await watcher.ready.wait()
                await store.put("/anyrdzv/g/members/x/y", b"?")
                await store.put("/anyrdzv/g/members/b", b"B")
                await watcher.wait_for_all([("JOINED", "b")], 5)
                tg.cancel_scope.cancel()
        skipped = [r for r in caplog.records if "names no member" in r.getMessage()]
        assert len(skipped) >= 3


class TestMembership:
    async def test_join_snapshot_and_clean_leave(self, store: LeaseStore, key_prefix: str) -> None:
        watcher = Watcher(store, "g", key_prefix)
        async with anyio.create_task_group() as tg:
            async with Heartbeat(
                store, "g", "early", interval=0.5, payload=b"p0", prefix=key_prefix
            ):
                tg.start_soon(watcher.run)
                await watcher.ready.wait()
                assert watcher.snapshot is not None
                assert watcher.snapshot.members == {"early": b"p0"}
                async with Heartbeat(store, "g", "late", interval=0.5, prefix=key_prefix):
                    await watcher.wait_for(MemberEventType.JOINED, "late", 5)
                    snapshot = await members(store, "g", prefix=key_prefix)
                    assert set(snapshot.members) == {"early", "late"}
                    await anyio.sleep(1.2)  # several renewals
                left_at = anyio.current_time()
                stamp = await watcher.wait_for(MemberEventType.LEFT, "late", 5)
                assert stamp - left_at <= 1.0  # a clean leave is seen within 1 s
            await watcher.wait_for(MemberEventType.LEFT, "early", 5)
            tg.cancel_scope.cancel()
        assert watcher.kinds() == [("JOINED", "late"), ("LEFT", "late"), ("LEFT", "early")]


class TestPayloads:
    """A payload is what the member gave, as it is."""

    @pytest.mark.parametrize(
        "payload",
        [
            b'{"layout":2,"min_nodes":1,"max_nodes":2,"payload":"eA=="}',  # as a node's
            b'{"min_nodes":1,"max_nodes":2}',
            b'{"min_nodes":1,"max_nodes":2,"payload":"not base64!"}',
            b'{"min_nodes":1,"max_nodes":2,"payload":"eA==","more":1}',
            b'{"min_nodes":true,"max_nodes":2,"payload":"eA=="}',
            b"\x80{",
            b"",
        ],
    )
    async def test_a_heartbeat_s_payload_is_given_as_it_is(
        self, store: LeaseStore, key_prefix: str, payload: bytes
    ) -> None:
        async with Heartbeat(store, "g", "m", payload=payload, prefix=key_prefix):
            assert (await members(store, "g", prefix=key_prefix)).members == {"m": payload}


class TestWatchResume:
    async def test_cut_stream_loses_and_repeats_nothing_memory(self) -> None:
        store = MemoryStore()
        faulty = FaultyStore(store)
        await self._scenario(faulty, store, faulty.break_watches, "/t")

    async def test_cut_stream_loses_and_repeats_nothing_etcd(
        self, etcd_server: EtcdServer, key_prefix: str
    ) -> None:
        async with (
            TcpProxy("127.0.0.1", etcd_server.client_port) as proxy,
            EtcdStore(proxy.endpoint) as watched,
            EtcdStore(etcd_server.endpoint) as direct,
        ):
            await self._scenario(watched, direct, proxy.cut, key_prefix)

    @staticmethod
    async def _scenario(watched: LeaseStore, direct: LeaseStore, cut: Any, prefix: str) -> None:
        watcher = Watcher(watched, "g", prefix)
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher.run)
            await watcher.ready.wait()
            a = await direct.grant(30)
            await direct.put(f"{prefix}/g/members/a", b"", lease=a)
            await direct.put(f"{prefix}/g/members/b", b"")
            await watcher.wait_for(MemberEventType.JOINED, "b", 5)
            for round_ in range(3):
                cut()
                await direct.put(f"{prefix}/g/members/c{round_}", b"")  # while the stream is down
                await anyio.sleep(0.05)
                cut()
            await direct.revoke(a)
            await watcher.wait_for(MemberEventType.LEFT, "a", 10)
            await direct.put(f"{prefix}/g/members/d", b"")
            await watcher.wait_for(MemberEventType.JOINED, "d", 10)
            tg.cancel_scope.cancel()
        assert watcher.kinds() == [
            ("JOINED", "a"),
            ("JOINED", "b"),
            ("JOINED", "c0"),
            ("JOINED", "c1"),
            ("JOINED", "c2"),
            ("LEFT", "a"),
            ("JOINED", "d"),
        ]
        revisions = [e.revision for _, e in watcher.events]
        assert revisions == sorted(revisions)


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
            watcher = Watcher(through_proxy, "g", key_prefix, retry_for=2)
            tg.start_soon(watcher.run)
            await watcher.ready.wait()
            with caplog.at_level(logging.WARNING, logger="anyrdzv._membership._members"):
                for outage in (1.0, 0.5):  # 3 s apart: more than retry_for
                    proxy.refusing = True
                    proxy.cut()
                    await anyio.sleep(outage)
                    proxy.refusing = False
                    await anyio.sleep(3)
                    assert watcher.error is None, watcher.error
            await direct.put(f"{key_prefix}/g/members/late", b"")
            await watcher.wait_for_all([("JOINED", "late")], 10)
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
            watcher = Watcher(through_proxy, "g", key_prefix, retry_for=5)
            tg.start_soon(watcher.run)
            await watcher.ready.wait()
            assert watcher.snapshot is not None
            assert watcher.snapshot == MembersSnapshot(
                {"a": b"", "b": b""}, watcher.snapshot.revision
            )
            proxy.stalled = True
            await anyio.sleep(0.5)
            leave.set()  # both leave while the link is dead
            await anyio.sleep(2.5)
            assert watcher.error is None, watcher.error
            proxy.stalled = False
            await watcher.wait_for_all([("LEFT", "a"), ("LEFT", "b")], 10)
            tg.cancel_scope.cancel()

    async def test_a_link_that_stays_half_open_ends_the_watch_in_bounded_time(
        self, etcd_server: EtcdServer, key_prefix: str
    ) -> None:
        async with (
            TcpProxy("127.0.0.1", int(etcd_server.endpoint.rsplit(":", 1)[1])) as proxy,
            EtcdStore(proxy.endpoint, timeout=1, watch_idle=1) as through_proxy,
            anyio.create_task_group() as tg,
        ):
            watcher = Watcher(through_proxy, "g", key_prefix, retry_for=2)
            tg.start_soon(watcher.run)
            await watcher.ready.wait()
            proxy.stalled = True
            stalled_at = anyio.current_time()
            with anyio.fail_after(20):
                while watcher.ended_at is None:  # noqa: ASYNC110 - polls the watcher
                    await anyio.sleep(0.05)
            # watch_idle (1) finds it, then retries fail for retry_for (2), each
            # attempt bounded by timeout (1): well under 10 s, never a hang.
            assert watcher.ended_at - stalled_at < 10
            assert isinstance(watcher.error, StoreConnectionError)
            proxy.stalled = False
            tg.cancel_scope.cancel()


@pytest.mark.slow
@pytest.mark.timeout(120)
class TestRealEtcd:
    async def test_sigkilled_member_is_seen_leaving_within_ttl_plus_1s(
        self, etcd_server: EtcdServer, key_prefix: str
    ) -> None:
        group = key_prefix.strip("/")  # a fresh group under the default prefix
        interval, max_missed = 1.0, 2
        async with EtcdStore(etcd_server.endpoint) as store:
            watcher = Watcher(store, group, "/anyrdzv")
            async with anyio.create_task_group() as tg:
                tg.start_soon(watcher.run)
                await watcher.ready.wait()
                proc = await start_member_process(
                    etcd_server.endpoint, group, "victim", interval, max_missed
                )
                try:
                    await watcher.wait_for(MemberEventType.JOINED, "victim", 10)
                    await anyio.sleep(1.5)
                    proc.send_signal(signal.SIGKILL)
                    killed = anyio.current_time()
                finally:
                    if proc.returncode is None:
                        proc.kill()
                    with anyio.CancelScope(shield=True):
                        await proc.aclose()
                ttl = math.ceil(interval * max_missed)
                left = await watcher.wait_for(MemberEventType.LEFT, "victim", ttl + 5)
                tg.cancel_scope.cancel()
        assert left - killed <= ttl + 1

    async def test_etcd_restart_keeps_live_members(self, own_etcd_server: EtcdServer) -> None:
        server = own_etcd_server
        async with EtcdStore(server.endpoint, timeout=2) as store:
            watcher = Watcher(store, "g", "/anyrdzv")
            async with anyio.create_task_group() as tg:
                tg.start_soon(watcher.run)
                await watcher.ready.wait()
                async with Heartbeat(store, "g", "alive", interval=1, max_missed=5) as beat:
                    await watcher.wait_for(MemberEventType.JOINED, "alive", 5)
                    await anyio.sleep(1.2)
                    before = beat.renewals
                    await anyio.to_thread.run_sync(server.kill)
                    await anyio.sleep(0.5)
                    await anyio.to_thread.run_sync(server.start)  # within 2 s of the kill
                    await anyio.sleep(beat.ttl + 1)
                    assert beat.renewals > before  # heartbeats resumed
                    assert ("LEFT", "alive") not in watcher.kinds()
                    snapshot = await members(store, "g")
                    assert "alive" in snapshot.members
                await watcher.wait_for(MemberEventType.LEFT, "alive", 5)
                tg.cancel_scope.cancel()
        assert watcher.kinds() == [("JOINED", "alive"), ("LEFT", "alive")]
