"""EtcdStore on a real etcd, and on a fake gateway for answers etcd cannot be made to give:
endpoints, TLS hints, misuse, foreign data, restarts, token expiry, join bursts."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import ssl
import subprocess
import sys
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
import trustme

from anyrdzv import (
    EtcdStore,
    Heartbeat,
    HeartbeatLost,
    MemberEvent,
    MembersSnapshot,
    Put,
    Rendezvous,
    RendezvousTimeout,
    StoreCompacted,
    StoreConnectionError,
    StoreError,
    StorePermissionError,
    StoreProtocolError,
    members,
    watch_members,
)
from anyrdzv._etcd import _wire
from tests._support.fake_gateway import Answer, FakeGateway, Request
from tests._support.stores import collect
from tests._support.transport import RecordingTransport

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests._support.etcd_server import EtcdServer

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    path = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(path / "server.pem"))
    cert.private_key_pem.write_to_path(str(path / "server.key"))
    ca.cert_pem.write_to_path(str(path / "ca.pem"))
    return path / "server.pem", path / "server.key", path / "ca.pem"


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, tls_files: tuple[Path, Path, Path], need_etcd: None
) -> Iterator[EtcdServer]:

    from tests._support.etcd_server import EtcdServer

    cert, key, ca = tls_files
    server = EtcdServer(tmp_path_factory.mktemp("etcd-tls"), cert=cert, key=key, ca_file=ca)
    server.start()
    yield server
    server.stop()


async def follow(store: EtcdStore, *, retry_for: float) -> None:
    """Follow group ``g`` until the watch raises."""
    async with aclosing(watch_members(store, "g", retry_for=retry_for)) as events:
        async for _ in events:
            pass


async def beat(heartbeat: Heartbeat, seconds: float) -> None:
    async with heartbeat:
        await anyio.sleep(seconds)


class TestEndpoints:
    async def test_http_url(self, etcd_server: EtcdServer) -> None:
        async with EtcdStore(f"http://{etcd_server.endpoint}/") as store:
            assert str(store.endpoint) == etcd_server.endpoint
            await members(store, "g")

    async def test_https_url_with_a_context(
        self, tls_server: EtcdServer, tls_files: tuple[Path, Path, Path]
    ) -> None:
        context = ssl.create_default_context(cafile=str(tls_files[2]))
        async with EtcdStore(f"https://{tls_server.endpoint}", ssl=context) as store:
            await members(store, "g")

    async def test_https_url_means_the_system_cas(self, tls_server: EtcdServer) -> None:
        # trustme's CA is not among the system's, so the handshake fails: TLS was tried.
        # It fails at once: no retry mends it (a timeout of 10 s would be spent on them).
        started = anyio.current_time()
        with pytest.raises(StoreConnectionError, match="TLS with etcd .* trusts the server's CA"):
            async with EtcdStore(f"https://{tls_server.endpoint}", timeout=10):
                pass
        assert anyio.current_time() - started < 5

    @pytest.mark.parametrize(
        ("endpoint", "match"),
        [
            ("ftp://127.0.0.1:2379", "host\\[:port\\] or an http:// or https:// URL"),
            ("http://127.0.0.1:2379/v3", "no path"),
            ("http://127.0.0.1:99999", "port"),
            ("h" * 300, "not a valid host name"),
            ("a..b:2379", "not a valid host name"),
        ],
    )
    async def test_bad_urls(self, endpoint: str, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            EtcdStore(endpoint)

    async def test_plain_url_with_ssl_is_a_contradiction(self) -> None:
        with pytest.raises(ValueError, match="says plain HTTP, but ssl= was given"):
            EtcdStore("http://127.0.0.1:2379", ssl=ssl.create_default_context())

    async def test_a_huge_bad_endpoint_is_not_echoed_whole(self) -> None:
        with pytest.raises(ValueError, match="characters") as info:
            EtcdStore("ftp://" + "x" * 100_000)
        assert len(str(info.value)) < 1000


LOOP_STALL = Path(__file__).parents[1] / "_support" / "loop_stall.py"


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.exists("/proc/thread-self/schedstat"), reason="needs Linux's schedstat"
)
@pytest.mark.parametrize("backend", ["asyncio", "asyncio+uvloop", "trio"])
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_the_first_open_of_a_process_never_stalls_the_loop_5_ms(
    backend: str,
    tls: bool,
    request: pytest.FixtureRequest,
) -> None:
    """In a fresh process, a task ticks every millisecond while the first EtcdStore opens,
    writes, reads, watches and closes, and 20 more are made (with HTTPS, ``https://``
    URLs whose system CAs are loaded; the last one is opened, and fails). No tick is
    more than 5 ms late, the time the kernel kept the process off the CPU aside (see
    ``loop_stall.py``). The median of three processes, for a loaded machine."""
    if tls:
        server: EtcdServer = request.getfixturevalue("tls_server")
        ca = request.getfixturevalue("tls_files")[2]
        args = [server.endpoint, "--cafile", str(ca)]
    else:
        server = request.getfixturevalue("etcd_server")
        args = [server.endpoint]
    results = []
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, str(LOOP_STALL), backend, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        results.append(json.loads(done.stdout.splitlines()[-1]))
    assert all(result["ticks"] > 20 for result in results), results  # the ticker ran
    stalls = sorted(result["stall"] for result in results)
    assert stalls[1] < 0.005, f"the loop stalled {[f'{s * 1000:.1f} ms' for s in stalls]}"


class TestTlsHints:
    """A TLS mismatch fails at once: opening retries only what may pass (a timeout of
    10 s would be spent on retries)."""

    async def test_plain_http_to_a_tls_port_suggests_tls(self, tls_server: EtcdServer) -> None:
        started = anyio.current_time()
        with pytest.raises(StoreConnectionError, match="If it serves TLS, use an https://"):
            async with EtcdStore(tls_server.endpoint, timeout=10):
                pass
        assert anyio.current_time() - started < 5

    async def test_tls_to_a_plain_port_suggests_plain_http(
        self, etcd_server: EtcdServer, tls_files: tuple[Path, Path, Path]
    ) -> None:
        context = ssl.create_default_context(cafile=str(tls_files[2]))
        started = anyio.current_time()
        with pytest.raises(StoreConnectionError, match="plain HTTP.* use an http:// endpoint"):
            async with EtcdStore(etcd_server.endpoint, ssl=context, timeout=10):
                pass
        assert anyio.current_time() - started < 5


class TestMisuse:
    async def test_entering_twice_is_a_clear_error_and_leaks_nothing(
        self, etcd_server: EtcdServer
    ) -> None:
        transport = RecordingTransport()
        store = EtcdStore(etcd_server.endpoint, transport=transport)
        async with store:
            sent = list(transport.paths)
            with pytest.raises(RuntimeError, match="open already"):
                await store.__aenter__()
            # The failed enter sent nothing and closed nothing: the first client is
            # still the one, and it still works.
            assert transport.paths == sent
            assert transport.closed == 0
            await members(store, "g")
            assert len(transport.paths) > len(sent)
        assert transport.closed == 1

    async def test_using_a_closed_store_is_a_clear_error(self, etcd_server: EtcdServer) -> None:
        store = EtcdStore(etcd_server.endpoint)
        with pytest.raises(RuntimeError, match="not open"):
            await store.grant(5)
        async with store:
            lease = await store.grant(5)
        with pytest.raises(RuntimeError, match="not open"):
            await store.keep_alive(lease)


class TestExceptionsLeaveAsThemselves:
    """EtcdStore hosts no task group (so no error of its own comes at once with the
    block's): what the block raises leaves unchanged, also from the context managers
    inside it, as users nest them."""

    async def test_the_blocks_error(self, etcd_server: EtcdServer) -> None:
        error = ValueError("the block's own")
        with pytest.raises(ValueError, match="the block's own") as caught:
            async with EtcdStore(etcd_server.endpoint):
                raise error
        assert caught.value is error

    async def test_keyboard_interrupt(self, etcd_server: EtcdServer) -> None:
        with pytest.raises(KeyboardInterrupt):
            async with EtcdStore(etcd_server.endpoint):
                raise KeyboardInterrupt

    async def test_an_outer_cancellation(self, etcd_server: EtcdServer) -> None:
        with anyio.move_on_after(0.1) as scope:
            async with EtcdStore(etcd_server.endpoint) as store:
                await anyio.sleep(10)
        assert scope.cancelled_caught
        with pytest.raises(RuntimeError, match="not open"):
            await store.grant(5)  # it was closed on the way out

    async def test_a_rendezvous_timeout_inside(self, etcd_server: EtcdServer) -> None:
        caught: list[str] = []
        try:
            async with (
                EtcdStore(etcd_server.endpoint) as store,
                Rendezvous(
                    store, "store-timeout", node="a", min_nodes=2, max_nodes=3, join_timeout=0.5
                ) as r,
            ):
                await r.next_rendezvous()
        except RendezvousTimeout:
            caught.append("RendezvousTimeout")
        assert caught == ["RendezvousTimeout"]

    async def test_a_lost_heartbeat_inside(self, etcd_server: EtcdServer) -> None:
        with pytest.raises(HeartbeatLost, match="'m' in group 'g' lost"):
            async with (
                EtcdStore(etcd_server.endpoint) as store,
                Heartbeat(store, "g", "m", interval=0.1, prefix="/store-lost") as beat,
            ):
                assert beat.lease is not None
                await store.revoke(beat.lease)
                await anyio.sleep(10)


class TestForeignData:
    async def test_a_key_that_is_not_utf8_is_skipped_and_logged(
        self, etcd_server: EtcdServer, key_prefix: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        group_prefix = f"{key_prefix}/g/members/"
        bad_key = group_prefix.encode() + b"\xff\xfe"
        async with (
            EtcdStore(etcd_server.endpoint) as store,
            aclosing(watch_members(store, "g", prefix=key_prefix)) as events,
        ):
            snapshot = await events.__anext__()
            assert isinstance(snapshot, MembersSnapshot)
            async with httpx.AsyncClient(base_url=f"http://{etcd_server.endpoint}") as http:
                answer = await http.post(
                    "/v3/kv/put", json={"key": _wire.b64(bad_key), "value": _wire.b64(b"x")}
                )
                assert answer.status_code == 200
                await store.put(f"{group_prefix}a", b"A")
                with caplog.at_level(logging.WARNING, logger="anyrdzv"):
                    event = await events.__anext__()
                assert isinstance(event, MemberEvent)
                assert event.member == "a"  # the foreign key passed without a word
                with caplog.at_level(logging.WARNING, logger="anyrdzv"):
                    now = await members(store, "g", prefix=key_prefix)
                assert now.members == {"a": b"A"}
        assert any("not UTF-8" in r.getMessage() for r in caplog.records)

    async def test_a_key_that_names_no_member_is_skipped(
        self, etcd_server: EtcdServer, key_prefix: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            await store.put(f"{key_prefix}/g/members/a/b", b"nested")
            await store.put(f"{key_prefix}/g/members/c", b"C")
            with caplog.at_level(logging.WARNING, logger="anyrdzv"):
                assert (await members(store, "g", prefix=key_prefix)).members == {"c": b"C"}
        assert any("names no member" in r.getMessage() for r in caplog.records)


def _etcd_answers(request: Request) -> Answer:
    """What a healthy one-member etcd says to the calls a Heartbeat makes."""
    if request.path == "/v3/lease/grant":
        return Answer(body=b'{"header":{"revision":"1"},"ID":"42","TTL":"3"}')
    if request.path == "/v3/kv/put":
        return Answer(body=b'{"header":{"revision":"2"}}')
    return Answer(body=b'{"header":{"revision":"2"}}')


class TestNotEtcd:
    async def test_a_server_that_answers_empty_objects(self) -> None:
        async with (
            FakeGateway(lambda request: Answer(body=b"{}")) as fake,
            EtcdStore(fake.endpoint, timeout=2) as store,
        ):
            with pytest.raises(StoreProtocolError, match="'ID'.*not an etcd v3 gateway"):
                await store.grant(5)
            with pytest.raises(StoreProtocolError, match="'header'"):
                await members(store, "g")

    async def test_html_on_the_watch(self) -> None:
        def answers(request: Request) -> Answer:
            if request.path == "/v3/watch":
                return Answer(
                    502, b"<html><body>502 Bad Gateway</body></html>", content_type="text/html"
                )
            return _etcd_answers(request)

        async with FakeGateway(answers) as fake, EtcdStore(fake.endpoint, timeout=2) as store:
            start = anyio.current_time()
            with pytest.raises(StoreConnectionError, match="HTTP 502"):
                await follow(store, retry_for=0.5)
            assert anyio.current_time() - start < 5

    async def test_html_with_200_on_the_watch_is_not_etcd(self) -> None:
        def answers(request: Request) -> Answer:
            if request.path == "/v3/watch":
                return Answer(lines=[b"<html>"], hold=True, content_type="text/html")
            return _etcd_answers(request)

        async with FakeGateway(answers) as fake, EtcdStore(fake.endpoint, timeout=2) as store:
            with pytest.raises(StoreProtocolError, match="not an etcd v3 gateway"):
                await follow(store, retry_for=30)


class TestUnavailable:
    @pytest.mark.slow
    async def test_a_heartbeat_retries_no_leader_until_the_lease_runs_out(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        no_leader = b'{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader"}}'

        def answers(request: Request) -> Answer:
            if request.path == "/v3/lease/keepalive":
                return Answer(lines=[no_leader])
            return _etcd_answers(request)

        async with FakeGateway(answers) as fake, EtcdStore(fake.endpoint, timeout=0.5) as store:
            heartbeat = Heartbeat(store, "g", "m", interval=1, max_missed=3)
            start = anyio.current_time()
            with (
                caplog.at_level(logging.WARNING, logger="anyrdzv"),
                pytest.raises(HeartbeatLost) as caught,
            ):
                await beat(heartbeat, 30)
            elapsed = anyio.current_time() - start
        lost = caught.value
        # The cause is the store's last error, or the timeout that cut the last try.
        assert isinstance(lost.__cause__, StoreError | TimeoutError)
        assert heartbeat.retries > 0
        assert 2.5 <= elapsed < 6  # it kept trying while the 3 s lease could live
        keep_alives = fake.paths().count("/v3/lease/keepalive")
        assert keep_alives > 3
        assert any("no leader" in r.getMessage() for r in caplog.records)

    async def test_unary_calls_are_retried_while_etcd_has_no_leader(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        refusals = 3

        def answers(request: Request) -> Answer:
            nonlocal refusals
            if request.path == "/v3/lease/grant" and refusals:
                refusals -= 1
                return Answer(503, b'{"code":14,"message":"etcdserver: no leader","error":"x"}')
            return _etcd_answers(request)

        async with FakeGateway(answers) as fake, EtcdStore(fake.endpoint, timeout=5) as store:
            with caplog.at_level(logging.WARNING, logger="anyrdzv"):
                lease = await store.grant(3)
        assert lease.id == 42
        assert fake.paths().count("/v3/lease/grant") == 4
        assert sum("retrying /v3/lease/grant" in r.getMessage() for r in caplog.records) == 3


class TestAuthToken:
    async def test_a_stale_token_is_renewed_with_a_clean_login(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        tokens = iter(["t1", "t2"])
        valid: set[str] = set()

        def answers(request: Request) -> Answer:
            if request.path == "/v3/auth/authenticate":
                if "authorization" in request.headers:
                    return Answer(400, b'{"code":3,"message":"etcdserver: invalid auth token"}')
                token = next(tokens)
                valid.clear()
                valid.add(token)
                return Answer(body=json.dumps({"header": {}, "token": token}).encode())
            if request.headers.get("authorization") not in valid:
                return Answer(400, b'{"code":3,"message":"etcdserver: invalid auth token"}')
            return Answer(body=b'{"header":{"revision":"5"}}')

        async with (
            FakeGateway(answers) as fake,
            EtcdStore(fake.endpoint, username="u", password="p", timeout=2) as store,
        ):
            await members(store, "g")
            valid.clear()  # the token expires
            with caplog.at_level(logging.INFO, logger="anyrdzv"):
                snapshot = await members(store, "g")
        assert snapshot.revision == 5
        logins = [r for r in fake.requests if r.path == "/v3/auth/authenticate"]
        assert len(logins) == 2
        assert all("authorization" not in r.headers for r in logins)
        assert any("logging in again" in r.getMessage() for r in caplog.records)

    @pytest.mark.slow
    async def test_expired_token_on_real_etcd(self, tmp_path: Path, need_etcd: None) -> None:

        from tests._support.etcd_server import EtcdServer

        server = EtcdServer(
            tmp_path, extra_args=["--auth-token", "simple", "--auth-token-ttl", "2"]
        )
        server.start()
        try:
            server.enable_auth("secret")
            async with (
                EtcdStore(
                    server.endpoint, username="root", password="secret", watch_idle=1
                ) as store,
                aclosing(watch_members(store, "g")) as events,
            ):
                assert isinstance(await events.__anext__(), MembersSnapshot)  # watch, token t1
                async with Heartbeat(store, "g", "m", interval=0.5, max_missed=4):
                    # The token expires meanwhile; the quiet watch is made again, twice.
                    with anyio.fail_after(5):
                        event = await events.__anext__()
                    assert isinstance(event, MemberEvent)
                    assert event.member == "m"
                    await anyio.sleep(3.5)
                    assert set((await members(store, "g")).members) == {"m"}
                    await store.put("/anyrdzv/g/members/n", b"")
                    with anyio.fail_after(5):
                        event = await events.__anext__()
                    assert isinstance(event, MemberEvent)
                    assert event.member == "n"
        finally:
            server.stop()


@pytest.mark.slow
class TestGracefulRestart:
    async def test_watch_and_heartbeat_ride_out_a_graceful_restart(
        self, own_etcd_server: EtcdServer
    ) -> None:
        events: list[Any] = []
        async with (
            EtcdStore(own_etcd_server.endpoint, timeout=2) as store,
            Heartbeat(store, "g", "stays", interval=1, max_missed=4),
            anyio.create_task_group() as tg,
        ):

            async def watch() -> None:
                async with aclosing(watch_members(store, "g", retry_for=30)) as it:
                    async for item in it:
                        events.append(item)

            tg.start_soon(watch)
            await anyio.sleep(0.5)
            await anyio.to_thread.run_sync(own_etcd_server.terminate)  # SIGTERM
            await anyio.sleep(0.5)
            await anyio.to_thread.run_sync(own_etcd_server.start)
            await store.put("/anyrdzv/g/members/late", b"")
            with anyio.fail_after(15):
                while not any(  # noqa: ASYNC110 - polls the watcher's list
                    isinstance(e, MemberEvent) and e.member == "late" for e in events
                ):
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        assert isinstance(events[0], MembersSnapshot)
        assert set(events[0].members) == {"stays"}
        assert [(e.type.value, e.member) for e in events[1:]] == [("JOINED", "late")]


class TestJoinBurst:
    @pytest.mark.slow
    async def test_a_thousand_heartbeats_enter_at_once_at_timeout_2(
        self, etcd_server: EtcdServer, key_prefix: str
    ) -> None:
        entered = 0
        async with EtcdStore(etcd_server.endpoint, timeout=2) as store:
            ready = anyio.Event()
            leave = anyio.Event()

            async def member(n: int) -> None:
                nonlocal entered
                async with Heartbeat(
                    store, "burst", f"m{n}", interval=2, max_missed=5, prefix=key_prefix
                ):
                    entered += 1
                    if entered == 1000:
                        ready.set()
                    await leave.wait()

            async with anyio.create_task_group() as tg:
                for n in range(1000):
                    tg.start_soon(member, n)
                with anyio.fail_after(60):
                    await ready.wait()
                assert len((await members(store, "burst", prefix=key_prefix)).members) == 1000
                leave.set()

    async def test_queued_behind_held_slots_the_error_says_so(
        self, etcd_server: EtcdServer
    ) -> None:
        """Keep-alives have their own slots; a grant behind a stuck queue says it queued."""
        # Puts that etcd never answers fill the 4 request slots until the timeout; 4 more
        # queue behind them, and take the slots over when they time out, for as long
        # again. A grant queued behind those waits for the timeout with no answer.
        transport = RecordingTransport(hold={"/v3/kv/put"})
        async with EtcdStore(etcd_server.endpoint, timeout=1, transport=transport) as store:
            lease = await store.grant(10)

            async def stuck_put() -> None:
                with contextlib.suppress(StoreConnectionError):
                    await store.put("/stuck", b"v")

            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(stuck_put)
                await anyio.wait_all_tasks_blocked()
                assert transport.paths.count("/v3/kv/put") == 4
                await anyio.sleep(0.3)
                for _ in range(4):
                    tg.start_soon(stuck_put)
                await anyio.wait_all_tasks_blocked()
                assert await store.keep_alive(lease) == 10
                with pytest.raises(StoreConnectionError, match="slots in this process"):
                    await store.grant(10)
                tg.cancel_scope.cancel()
            await store.revoke(lease)


# -- connecting, TLS and auth, with heartbeats ----------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
class TestEtcdStoreConnecting:
    async def test_opening_waits_for_an_etcd_that_starts_later(
        self, own_etcd_server: EtcdServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        await anyio.to_thread.run_sync(own_etcd_server.stop)
        opened_at: list[float] = []

        async def open_and_write() -> None:
            async with EtcdStore(own_etcd_server.endpoint, timeout=15) as store:
                opened_at.append(anyio.current_time())
                await store.put("/started-later", b"v")

        with caplog.at_level(logging.WARNING, logger="anyrdzv"):
            async with anyio.create_task_group() as tg:
                started = anyio.current_time()
                tg.start_soon(open_and_write)  # the agent first, as in a pod or a compose file
                await anyio.sleep(1)
                await anyio.to_thread.run_sync(own_etcd_server.start)
        assert opened_at[0] - started >= 1
        retries = [r.getMessage() for r in caplog.records if "retrying opening" in r.message]
        assert retries
        assert f"cannot reach etcd at {own_etcd_server.endpoint}" in retries[0]

    async def test_an_endpoint_nothing_listens_on_fails_within_the_timeout(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        from tests._support.etcd_server import free_port

        endpoint = f"127.0.0.1:{free_port()}"
        start = anyio.current_time()
        with (
            caplog.at_level(logging.WARNING, logger="anyrdzv"),
            pytest.raises(StoreConnectionError, match=f"^cannot reach etcd at {endpoint}: "),
        ):
            async with EtcdStore(endpoint, timeout=3):
                pass
        # Retried until the next backoff pause (at most 1 s) would pass the timeout.
        assert 3 - 1.05 <= anyio.current_time() - start < 3 + 1.5
        assert any("retrying opening" in r.message for r in caplog.records)

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
        started = anyio.current_time()
        with pytest.raises(StorePermissionError, match="etcd refused /v3/auth/authenticate"):
            async with EtcdStore(auth_etcd.endpoint, username="root", password="wrong", timeout=10):
                pass
        assert anyio.current_time() - started < 5  # at once: no retry


# -- the txn and watch contract, etcd's side alone ------------------------------


async def test_an_etcd_store_refuses_a_bad_txn_before_any_request() -> None:
    store = EtcdStore("127.0.0.1:9")  # never opened, and nothing listens there
    with pytest.raises(ValueError, match="success puts key '/x' twice"):
        await store.txn([], [Put("/x", b""), Put("/x", b"")])
    with pytest.raises(TypeError, match="compare must be a sequence"):
        await store.txn(None, [])  # type: ignore[arg-type]


async def test_an_etcd_store_refuses_a_key_that_utf8_cannot_encode_before_any_request() -> None:
    store = EtcdStore("127.0.0.1:9")  # never opened, and nothing listens there
    with pytest.raises(ValueError, match="^key must be text that UTF-8 can encode"):
        await store.put("/k/\udcff", b"")
    with pytest.raises(ValueError, match="^prefix must be text that UTF-8 can encode"):
        await store.delete_prefix("/k/\udcff")
    with pytest.raises(ValueError, match="^prefix must be text that UTF-8 can encode"):
        store.watch_prefix("/k/\udcff", start_revision=0)


async def test_compacted_history_etcd(etcd_server: object, key_prefix: str) -> None:
    from tests._support.etcd_server import EtcdServer

    assert isinstance(etcd_server, EtcdServer)
    async with EtcdStore(etcd_server.endpoint) as store:
        first = await store.put(f"{key_prefix}/k", b"1")
        last = await store.put(f"{key_prefix}/k", b"2")
        async with httpx.AsyncClient(base_url=etcd_server.url) as client:
            response = await client.post("/v3/kv/compaction", json={"revision": str(last)})
            assert response.status_code == 200, response.text
        with pytest.raises(StoreCompacted) as info:
            await collect(store, f"{key_prefix}/", first, 1)
        assert info.value.compact_revision >= last


MANY_OPENS = """
import ssl, sys, threading, anyio
made = []
create = ssl.create_default_context
def counted(*args, **kwargs):
    made.append(threading.get_ident())
    return create(*args, **kwargs)
ssl.create_default_context = counted
from anyrdzv import EtcdStore

async def main() -> None:
    stores = [EtcdStore(sys.argv[1], timeout=30) for _ in range(64)]
    async with anyio.create_task_group() as tg:
        for store in stores:
            tg.start_soon(store.__aenter__)
    for store in stores:
        await store.aclose()
    print(len(made))

anyio.run(main)
"""


def test_stores_opened_at_once_make_the_system_context_once(etcd_server: Any) -> None:
    """64 stores that open at once in a fresh process (as a benchmark's or a launcher's
    nodes do) make the SSL context with the system's CAs once between them: each making
    its own in a worker thread starved the event loop, and half failed to open."""
    done = subprocess.run(
        [sys.executable, "-c", MANY_OPENS, etcd_server.endpoint],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1"]
