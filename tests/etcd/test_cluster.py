"""EtcdStore on a real 3-member etcd cluster on loopback: failover between members.

Each scenario breaks the thing it is about: the leader is SIGKILLed, the member the
client talks to is SIGSTOPped, quorum is lost. Members run with etcd's default timing
(heartbeat 100 ms, election timeout 1 s).
"""

from __future__ import annotations

import ssl
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import pytest
import trustme

from anyrdzv import (
    EtcdStore,
    Heartbeat,
    HeartbeatLost,
    MemberEvent,
    MemberEventType,
    MembersSnapshot,
    StoreConnectionError,
    StoreEvent,
    watch_members,
)
from anyrdzv.testing import use_member

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from tests._support.etcd_cluster import EtcdCluster

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PREFIX = "/cluster-test"


@pytest.fixture
def cluster(etcd_cluster: EtcdCluster) -> EtcdCluster:
    return etcd_cluster


async def poll(condition: Callable[[], bool], limit: float) -> None:
    """Wait until ``condition()`` holds, checking every 20 ms, for at most ``limit`` s."""
    with anyio.fail_after(limit):
        while True:
            if condition():
                return
            await anyio.sleep(0.02)


async def leader_of(cluster: EtcdCluster) -> int:
    return await anyio.to_thread.run_sync(cluster.leader_index)


class MemberLog:
    """Follows a group with watch_members, and records every event."""

    def __init__(self, store: EtcdStore, group: str) -> None:
        self.store, self.group = store, group
        self.events: list[MemberEvent] = []
        self.ready = anyio.Event()

    async def run(self) -> None:
        watch = watch_members(self.store, self.group, prefix=PREFIX)
        async with aclosing(watch) as items:
            async for item in items:
                if isinstance(item, MembersSnapshot):
                    self.ready.set()
                else:
                    self.events.append(item)

    def count(self, kind: MemberEventType) -> int:
        return sum(1 for event in self.events if event.type is kind)

    async def wait_count(self, kind: MemberEventType, n: int, limit: float) -> None:
        await poll(lambda: self.count(kind) >= n, limit)

    def check_once_each(self, names: list[str]) -> None:
        """Each member joined once and left once, in revision order."""
        revisions = [event.revision for event in self.events]
        assert revisions == sorted(revisions)
        joined = [e.member for e in self.events if e.type is MemberEventType.JOINED]
        left = [e.member for e in self.events if e.type is MemberEventType.LEFT]
        assert sorted(joined) == sorted(names)
        assert sorted(left) == sorted(names)


class TestEndpoints:
    async def test_a_list_and_a_sequence_name_the_same_members(self) -> None:
        store = EtcdStore("h1:2379, h2, http://h3:4001")
        assert [str(e) for e in store.endpoints] == ["h1:2379", "h2:2379", "h3:4001"]
        assert repr(store) == "EtcdStore('h1:2379,h2:2379,h3:4001')"
        same = EtcdStore(["h1:2379", "h2", "http://h3:4001"])
        assert same.endpoints == store.endpoints
        assert store.member in {"h1:2379", "h2:2379", "h3:4001"}

    @pytest.mark.parametrize(
        ("endpoint", "message"),
        [
            ("h1:2379,,h3", "empty member (number 2)"),
            ("h1:2379,", "empty member (number 2)"),
            ("h1:2379,h2:99999", "etcd member 'h2:99999' in the list: "),
            ("h1:2379,ftp://h2", "etcd member 'ftp://h2' in the list"),
            ("h1:2379,H1", "lists etcd member 'H1' twice"),
            ([], "at least one etcd member"),
        ],
    )
    async def test_a_bad_member_is_named(self, endpoint: str | list[str], message: str) -> None:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            EtcdStore(endpoint)

    async def test_types(self) -> None:
        with pytest.raises(TypeError, match="sequence of str, got int 5 in the sequence"):
            EtcdStore(["h1", 5])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="endpoint must be a str or a sequence of str"):
            EtcdStore(b"h1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="member_timeout must be positive and finite, got 0"):
            EtcdStore("h1,h2", member_timeout=0)


class TestFailover:
    async def test_requests_move_on_from_a_dead_member(self, cluster: EtcdCluster) -> None:
        async with EtcdStore(cluster.endpoint_list, timeout=5) as store:
            first = store.member
            await store.put(f"{PREFIX}/a", b"1")
            await anyio.to_thread.run_sync(cluster.kill, cluster.endpoints.index(first))
            with anyio.fail_after(5):
                await store.put(f"{PREFIX}/b", b"2")
            assert store.member != first
            kv = await store.get(f"{PREFIX}/a")
            assert kv is not None
            assert kv.value == b"1"

    async def test_open_skips_a_dead_member(self, cluster: EtcdCluster) -> None:
        await anyio.to_thread.run_sync(cluster.kill, 0)
        for _ in range(3):  # each store starts at a random member
            async with EtcdStore(cluster.endpoint_list, timeout=5) as store:
                await store.put(f"{PREFIX}/k", b"v")
                assert store.member != cluster.endpoints[0]

    async def test_no_member_answers(self, cluster: EtcdCluster) -> None:
        await anyio.to_thread.run_sync(cluster.close)
        started = anyio.current_time()
        with pytest.raises(StoreConnectionError, match="cannot reach etcd at 127.0.0.1"):
            async with EtcdStore(cluster.endpoint_list, timeout=2):
                pass
        assert anyio.current_time() - started < 3

    async def test_a_watch_moves_to_another_member_missing_and_repeating_nothing(
        self, cluster: EtcdCluster
    ) -> None:
        seen: list[StoreEvent] = []
        async with (
            EtcdStore(cluster.endpoint_list, timeout=5) as watching,
            EtcdStore(cluster.endpoint_list, timeout=5) as writing,
        ):
            revision = await writing.put(f"{PREFIX}/w/0", b"0")

            async def follow() -> None:
                stream = watching.watch_prefix(f"{PREFIX}/w/", start_revision=revision)
                async with aclosing(stream) as events:
                    async for event in events:
                        seen.append(event)
                        if len(seen) == 60:
                            return

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                for i in range(1, 60):
                    if i == 20:  # kill the member the watch is on
                        victim = cluster.endpoints.index(watching.member)
                        await anyio.to_thread.run_sync(cluster.kill, victim)
                    await writing.put(f"{PREFIX}/w/{i}", str(i).encode())
                    await anyio.sleep(0.02)
                await poll(lambda: len(seen) >= 60, 15)
            assert watching.member != cluster.endpoints[victim]
        assert [event.value for event in seen] == [str(i).encode() for i in range(60)]
        assert [e.revision for e in seen] == list(range(revision, revision + 60))


@asynccontextmanager
async def followed_heartbeats(
    store: EtcdStore, group: str, names: list[str]
) -> AsyncIterator[tuple[list[Heartbeat], MemberLog]]:
    """Heartbeats of ``names`` at interval 1 s, max_missed 3, all joined, with a
    MemberLog following the group; on leaving, every member must have joined once and
    left once."""
    log = MemberLog(store, group)
    async with anyio.create_task_group() as tg:
        tg.start_soon(log.run)
        await log.ready.wait()
        async with AsyncExitStack() as stack:
            beats = [
                await stack.enter_async_context(
                    Heartbeat(store, group, name, interval=1, max_missed=3, prefix=PREFIX)
                )
                for name in names
            ]
            await log.wait_count(MemberEventType.JOINED, len(names), 10)
            yield beats, log
        # Leaving revokes every lease: each member is LEFT once.
        await log.wait_count(MemberEventType.LEFT, len(names), 10)
        tg.cancel_scope.cancel()
    log.check_once_each(names)


class TestLeaderLoss:
    async def test_leader_sigkill_costs_no_heartbeat_and_no_event(
        self, cluster: EtcdCluster
    ) -> None:
        names = [f"m{i:03d}" for i in range(100)]
        async with (
            EtcdStore(cluster.endpoint_list, timeout=5) as store,
            followed_heartbeats(store, "big", names) as (beats, log),
        ):
            leader = await leader_of(cluster)
            await anyio.to_thread.run_sync(cluster.kill, leader)
            before = [beat.renewals for beat in beats]
            await anyio.sleep(8)  # over two TTLs
            new_leader = await anyio.to_thread.run_sync(
                lambda: cluster.wait_leader(other_than=leader)
            )
            assert new_leader != leader
            assert log.count(MemberEventType.LEFT) == 0, log.events[-5:]
            # Every heartbeat kept renewing across the failover.
            assert all(beat.renewals >= b + 5 for beat, b in zip(beats, before, strict=True))

    async def test_a_stopped_follower_costs_no_heartbeat(self, cluster: EtcdCluster) -> None:
        names = [f"s{i}" for i in range(10)]
        async with (
            EtcdStore(cluster.endpoint_list, timeout=5) as store,
            followed_heartbeats(store, "hung", names) as (beats, log),
        ):
            # The member the store talks to, made a follower: a hung leader is a
            # different fault, in which etcd itself must elect anew.
            leader = await leader_of(cluster)
            hung = (leader + 1) % 3
            use_member(store, cluster.endpoints[hung])
            assert store.member == cluster.endpoints[hung]
            await anyio.sleep(1.5)  # every heartbeat renews through it once
            cluster.stop(hung)
            try:
                before = [beat.renewals for beat in beats]
                await anyio.sleep(8)
                assert store.member != cluster.endpoints[hung]
                assert log.count(MemberEventType.LEFT) == 0
                assert all(beat.renewals >= b + 5 for beat, b in zip(beats, before, strict=True))
            finally:
                cluster.cont(hung)

    async def test_quorum_loss_is_heard_and_recovered_from(self, cluster: EtcdCluster) -> None:
        async with EtcdStore(cluster.endpoint_list, timeout=3) as store:
            lost_after: float | None = None
            with pytest.raises(HeartbeatLost, match="'q' in group 'g'"):
                async with Heartbeat(store, "g", "q", interval=1, max_missed=3, prefix=PREFIX):
                    leader = await leader_of(cluster)
                    other = next(i for i in range(3) if i != leader)
                    await anyio.to_thread.run_sync(cluster.kill, leader)
                    await anyio.to_thread.run_sync(cluster.kill, other)
                    killed = anyio.current_time()
                    try:
                        await anyio.sleep(20)
                    finally:
                        lost_after = anyio.current_time() - killed
            # The lease TTL is 3 s, and the renewal grace 2 s: the loss is heard by then,
            # counted from the last renewal before the kill.
            assert lost_after is not None
            assert lost_after < 3 + 2 + 1.5
            for i in (leader, other):
                await anyio.to_thread.run_sync(cluster.restart, i)
            await anyio.to_thread.run_sync(cluster.wait_leader)
            async with Heartbeat(store, "g", "q", interval=1, max_missed=3, prefix=PREFIX) as beat:
                # It renews again: how soon depends on how fast the restarted members
                # catch up, on a loaded machine.
                await poll(lambda: beat.renewals >= 2, 10)


class TestNoLostUpdate:
    async def test_compare_and_swap_increments_survive_a_leader_kill(
        self, cluster: EtcdCluster
    ) -> None:
        key = f"{PREFIX}/counter"
        known: set[str] = set()  # tags of swaps that took effect, by their answers
        unknown: set[str] = set()  # tags of swaps whose answer was lost
        history: list[bytes] = []
        killed = anyio.Event()

        async with (
            EtcdStore(cluster.endpoint_list, timeout=5) as store,
            EtcdStore(cluster.endpoint_list, timeout=5) as watching,
        ):
            start = await store.put(key, b"0:-")

            async def follow() -> None:
                stream = watching.watch_prefix(key, start_revision=start + 1)
                async with aclosing(stream) as events:
                    async for event in events:
                        history.append(event.value)

            async def writer(name: str) -> None:
                seq = 0
                successes = 0
                kv = await store.get(key)
                while successes < 50:
                    if kv is None:
                        kv = await store.get(key)
                        continue
                    count = int(kv.value.split(b":")[0])
                    tag = f"{name}.{seq}"
                    seq += 1
                    try:
                        result = await store.compare_and_swap(
                            key,
                            f"{count + 1}:{tag}".encode(),
                            expected_mod_revision=kv.mod_revision,
                        )
                    except StoreConnectionError:
                        unknown.add(tag)  # it may or may not have been applied
                        kv = None
                        continue
                    kv = result.kv
                    if result.succeeded:
                        known.add(tag)
                        successes += 1
                        if len(known) == 60 and not killed.is_set():
                            killed.set()

            async def kill_leader() -> None:
                await killed.wait()
                leader = await leader_of(cluster)
                await anyio.to_thread.run_sync(cluster.kill, leader)

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                tg.start_soon(kill_leader)
                with anyio.fail_after(60):
                    async with anyio.create_task_group() as writers:
                        for name in "abcd":
                            writers.start_soon(writer, name)
                final = await store.get(key)
                assert final is not None
                total = int(final.value.split(b":")[0])
                await poll(lambda: len(history) >= total, 10)
                tg.cancel_scope.cancel()

        assert len(known) == 200
        # The counter went up by one at every write that took effect, and only then.
        counts = [int(value.split(b":")[0]) for value in history]
        assert counts == list(range(1, total + 1))
        tags = [value.split(b":")[1].decode() for value in history]
        assert len(set(tags)) == len(tags), "a swap was applied twice"
        assert known <= set(tags)
        applied_unknown = set(tags) - known
        assert applied_unknown <= unknown
        assert total == len(known) + len(applied_unknown)


class TestAuthAndTls:
    async def test_a_login_per_member(self, cluster: EtcdCluster) -> None:
        await anyio.to_thread.run_sync(cluster.members[0].enable_auth, "secret")
        async with EtcdStore(
            cluster.endpoint_list, username="root", password="secret", timeout=5
        ) as store:
            await store.put(f"{PREFIX}/a", b"1")
            first = store.member
            await anyio.to_thread.run_sync(cluster.kill, cluster.endpoints.index(first))
            with anyio.fail_after(5):
                await store.put(f"{PREFIX}/b", b"2")
                lease = await store.grant(5)
                assert await store.keep_alive(lease) > 0
            assert store.member != first

    async def test_tls_with_every_member(self, tmp_path: Path, need_etcd: None) -> None:
        from tests._support.etcd_cluster import EtcdCluster

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
        cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        with EtcdCluster(
            tmp_path / "cluster",
            cert=tmp_path / "server.pem",
            key=tmp_path / "server.key",
            ca_file=tmp_path / "ca.pem",
        ) as cluster:
            await anyio.to_thread.run_sync(cluster.start)
            async with EtcdStore(cluster.endpoint_list, ssl=context, timeout=5) as store:
                await store.put(f"{PREFIX}/t", b"first")
                first = cluster.endpoints.index(store.member)
                await anyio.to_thread.run_sync(cluster.kill, first)
                with anyio.fail_after(10):
                    await store.put(f"{PREFIX}/t", b"second")
                second = cluster.endpoints.index(store.member)
                await anyio.to_thread.run_sync(cluster.restart, first)
                await anyio.to_thread.run_sync(cluster.wait_leader)
                await anyio.to_thread.run_sync(cluster.kill, second)
                with anyio.fail_after(10):
                    await store.put(f"{PREFIX}/t", b"third")
                third = cluster.endpoints.index(store.member)
                assert first != second != third
