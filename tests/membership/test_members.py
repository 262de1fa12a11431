"""members() and watch_members(): a snapshot, then who joins and leaves, on MemoryStore
and a real etcd; resuming a cut stream with nothing lost or repeated, outages far apart,
a half-open link, a SIGKILLed member and an etcd restart; keys that no member wrote.

The classes at the end test Heartbeat and EtcdStore alone: they came with the old
test_membership.py, and belong in tests/membership/test_heartbeat.py and
tests/etcd/test_store.py, which other changes rework.
"""

from __future__ import annotations

import logging
import math
import signal
import ssl
import sys
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import trustme

from anyrdzv import (
    EtcdStore,
    Heartbeat,
    HeartbeatLost,
    LeaseStore,
    MemberEvent,
    MemberEventType,
    MembersSnapshot,
    MemoryStore,
    StoreConnectionError,
    StorePermissionError,
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


# -- Heartbeat alone: these belong in tests/membership/test_heartbeat.py ---------------


class TestHeartbeatArguments:
    @pytest.mark.parametrize(
        ("group", "member", "kwargs", "message"),
        [
            ("", "m", {}, "group must be non-empty and contain no '/', got ''"),
            ("a/b", "m", {}, "group must be non-empty and contain no '/', got 'a/b'"),
            ("g", "", {}, "member must be non-empty and contain no '/', got ''"),
            ("g", "x/y", {}, "member must be non-empty and contain no '/'"),
            ("g", "m", {"interval": 0}, "interval must be positive and finite, got 0"),
            ("g", "m", {"interval": -1.0}, "interval must be positive and finite"),
            ("g", "m", {"interval": math.nan}, "interval must be positive and finite"),
            ("g", "m", {"max_missed": 0}, "max_missed must be at least 1, got 0"),
        ],
    )
    async def test_value_errors(
        self, group: str, member: str, kwargs: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            Heartbeat(MemoryStore(), group, member, **kwargs)

    @pytest.mark.parametrize(
        ("args", "kwargs", "message"),
        [
            ((1, "m"), {}, "group must be a str"),
            (("g", None), {}, "member must be a str"),
            (("g", "m"), {"max_missed": 2.5}, "max_missed must be an int"),
            (("g", "m"), {"payload": "text"}, "payload must be bytes"),
        ],
    )
    async def test_type_errors(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(TypeError, match=message):
            Heartbeat(MemoryStore(), *args, **kwargs)

    async def test_ttl_is_interval_times_max_missed_rounded_up(self) -> None:
        assert Heartbeat(MemoryStore(), "g", "m", interval=0.4, max_missed=3).ttl == 2
        assert Heartbeat(MemoryStore(), "g", "m").ttl == 15  # torch's 5 s x 3


class TestHeartbeat:
    async def test_renewals_happen(self, store: LeaseStore, key_prefix: str) -> None:
        async with Heartbeat(store, "g", "m", interval=0.2, prefix=key_prefix) as beat:
            await anyio.sleep(0.9)
            assert beat.renewals >= 3

    async def test_lease_revoked_behind_its_back_is_heartbeat_lost(
        self, store: LeaseStore, key_prefix: str
    ) -> None:
        with pytest.RaisesGroup(pytest.RaisesExc(HeartbeatLost, match="'m' in group 'g' lost")):
            async with Heartbeat(store, "g", "m", interval=0.2, prefix=key_prefix) as beat:
                assert beat.lease is not None
                await store.revoke(beat.lease)
                await anyio.sleep(10)


@pytest.mark.slow
class TestHeartbeatOutage:
    async def test_short_outage_is_retried(self) -> None:
        store = FaultyStore(MemoryStore())
        async with Heartbeat(store, "g", "m", interval=0.2, max_missed=5) as beat:
            await anyio.sleep(0.3)
            store.fail("keep_alive")
            await anyio.sleep(0.5)  # well under the 1 s TTL
            store.heal()
            await anyio.sleep(0.5)
            assert beat.retries >= 1
        assert (await members(store.inner, "g")).members == {}

    async def test_outage_longer_than_ttl_memory(self) -> None:
        store = FaultyStore(MemoryStore())
        start = anyio.current_time()
        with pytest.RaisesGroup(pytest.RaisesExc(HeartbeatLost, match="unreachable")):
            async with Heartbeat(store, "g", "m", interval=0.25, max_missed=4):
                store.fail("keep_alive")
                await anyio.sleep(30)
        # TTL 1 s, then the renewal grace (the TTL, when under 2 s), plus one retry at most
        assert anyio.current_time() - start <= 1 + 1 + 0.5

    async def test_outage_longer_than_ttl_etcd(
        self, etcd_server: EtcdServer, key_prefix: str
    ) -> None:
        async with (
            TcpProxy("127.0.0.1", etcd_server.client_port) as proxy,
            EtcdStore(proxy.endpoint, timeout=1) as store,
        ):
            start = anyio.current_time()
            with pytest.RaisesGroup(pytest.RaisesExc(HeartbeatLost)):
                async with Heartbeat(
                    store, "g", "m", interval=0.5, max_missed=4, prefix=key_prefix
                ):
                    proxy.refusing = True
                    proxy.cut()
                    await anyio.sleep(30)
            assert anyio.current_time() - start <= 2 + 2 + 1.5  # TTL, renewal grace, retry


# -- EtcdStore alone: these belong in tests/etcd/test_store.py ------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
class TestEtcdStoreConnecting:
    async def test_unreachable_store_fails_fast(self) -> None:
        from tests._support.etcd_server import free_port

        start = anyio.current_time()
        with pytest.raises(StoreConnectionError, match="cannot reach etcd at 127.0.0.1"):
            async with EtcdStore(f"127.0.0.1:{free_port()}", timeout=1):
                pass
        assert anyio.current_time() - start < 5

    async def test_silent_store_times_out(self) -> None:
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            start = anyio.current_time()
            with pytest.raises(StoreConnectionError, match="did not answer within 0.5 s"):
                async with EtcdStore(f"127.0.0.1:{port}", timeout=0.5):
                    pass
            assert anyio.current_time() - start < 3

    async def test_store_must_be_opened(self) -> None:
        with pytest.raises(RuntimeError, match="async with EtcdStore"):
            await EtcdStore().grant(5)

    async def test_bad_arguments(self) -> None:
        with pytest.raises(ValueError, match="The port number of the rendezvous endpoint"):
            EtcdStore("h:99999")
        with pytest.raises(ValueError, match="timeout must be positive and finite, got 0"):
            EtcdStore(timeout=0)
        with pytest.raises(ValueError, match="username and password go together"):
            EtcdStore(username="root")
        with pytest.raises(TypeError, match="ssl must be an ssl.SSLContext"):
            EtcdStore(ssl=True)  # type: ignore[arg-type]
        assert EtcdStore("[::1]").endpoint == ("::1", 2379)


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory, need_etcd: None) -> Any:
    from tests._support.etcd_server import EtcdServer

    workdir = tmp_path_factory.mktemp("etcd-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = workdir / "cert.pem", workdir / "key.pem", workdir / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    server = EtcdServer(workdir, cert=cert_file, key=key_file, ca_file=ca_file)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def auth_etcd(tmp_path_factory: pytest.TempPathFactory, need_etcd: None) -> Any:
    from tests._support.etcd_server import EtcdServer

    server = EtcdServer(tmp_path_factory.mktemp("etcd-auth"))
    server.start()
    server.enable_auth("s3cret")
    yield server
    server.stop()


class TestSecurity:
    async def test_tls_with_the_ca(self, tls_etcd: EtcdServer) -> None:
        context = ssl.create_default_context(cafile=str(tls_etcd.ca_file))
        async with (
            EtcdStore(tls_etcd.endpoint, ssl=context) as store,
            Heartbeat(store, "tls", "m", interval=0.5),
        ):
            assert set((await members(store, "tls")).members) == {"m"}

    async def test_tls_without_the_ca_is_a_clear_error(self, tls_etcd: EtcdServer) -> None:
        with pytest.raises(StoreConnectionError, match="TLS with etcd at 127.0.0.1:.* failed"):
            async with EtcdStore(tls_etcd.endpoint, ssl=ssl.create_default_context(), timeout=2):
                pass

    async def test_auth_with_credentials(self, auth_etcd: EtcdServer) -> None:
        async with (
            EtcdStore(auth_etcd.endpoint, username="root", password="s3cret") as store,
            Heartbeat(store, "auth", "m", interval=0.5),
        ):
            assert set((await members(store, "auth")).members) == {"m"}

    async def test_auth_without_credentials_is_a_permission_error(
        self, auth_etcd: EtcdServer
    ) -> None:
        async with EtcdStore(auth_etcd.endpoint) as store:
            with pytest.raises(StorePermissionError, match="pass username and password"):
                await store.put("/anyrdzv/auth/members/m", b"")
            with pytest.raises(StorePermissionError, match="user name is empty"):
                await members(store, "auth")

    async def test_auth_with_a_wrong_password(self, auth_etcd: EtcdServer) -> None:
        with pytest.raises(StorePermissionError, match="etcd refused /v3/auth/authenticate"):
            async with EtcdStore(auth_etcd.endpoint, username="root", password="wrong"):
                pass
