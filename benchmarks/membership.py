"""Benchmark: heartbeats and membership on etcd and on MemoryStore.

Run by hand (not a test): ``python benchmarks/membership.py [--duration 20]``. It
starts its own etcd (Debian's etcd-server must be installed) on free loopback ports,
and prints a table:

1. N members in one process heartbeating every 1 s into one local etcd: the CPU share
   of one core (this process, and etcd's), keep-alive latency p50/p99, false LEFTs;
2. the same with MemoryStore and 10x the members;
3. 10 member processes SIGKILLed on etcd: the time until each is seen LEFT, against
   the TTL.

A keep-alive's latency is that of a whole renewal: from its first try to the answer,
the Heartbeat's retries and their backoff included.

With ``--cluster N`` the etcd is an N-member cluster on loopback (tests/etcd_cluster.py),
and the store is given every member. ``--kill-leader-at SECONDS`` then SIGKILLs the
leader that far into each steady state, and the etcd rows split into three phases:
before the kill, across it (from 1 s before to TTL + 1 s after), and after; the killed
member is restarted between rows. For example::

    python benchmarks/membership.py --cluster 3 --etcd-members 1000 --kill-leader-at 10
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import signal
import sys
import tempfile
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))
from anyrdzv import (
    EtcdStore,
    Heartbeat,
    HeartbeatLost,
    LeaseExpired,
    MemberEvent,
    MemberEventType,
    MemoryStore,
    StoreError,
    StorePermissionError,
    watch_members,
)
from membership import start_member_process
from tests._support.etcd_cluster import EtcdCluster
from tests._support.etcd_server import EtcdServer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class EtcdCpu:
    """The CPU seconds of etcd's processes, summed; a process that died counts with its
    last reading."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.last: dict[int, float] = {}

    def __call__(self) -> float:
        for pid in self.pids():
            try:
                self.last[pid] = cpu_seconds(pid)
            except (FileNotFoundError, ProcessLookupError):
                pass
        return sum(self.last.values())


class TimedStore:
    """Delegates to a store, timing every renewal: from a lease's first keep-alive try
    to the one that succeeds, so a renewal that the Heartbeat retried counts once, with
    its retries and their backoff."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.renewals: list[tuple[float, float]] = []  # (first try began, round trip)
        self.failures: list[float] = []  # when a keep-alive call failed with a StoreError
        self._first_try: dict[int, float] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def keep_alive(self, lease: Any) -> int:
        start = time.perf_counter()
        first = self._first_try.setdefault(lease.id, start)
        try:
            ttl: int = await self.store.keep_alive(lease)
        except StoreError as exc:
            self.failures.append(time.perf_counter())
            if isinstance(exc, LeaseExpired | StorePermissionError):  # no retry follows
                self._first_try.pop(lease.id, None)
            raise
        except BaseException:
            self._first_try.pop(lease.id, None)
            raise
        self.renewals.append((first, time.perf_counter() - first))
        del self._first_try[lease.id]
        return ttl


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values) or [math.nan]
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _why(exc: BaseException) -> str:
    """The message of ``exc`` and of its causes, cut short."""
    parts: list[str] = []
    cause: BaseException | None = exc
    while cause is not None and len(parts) < 3:
        parts.append(f"{type(cause).__name__}: {cause}"[:200])
        cause = cause.__cause__
    return " <- ".join(parts)


@dataclass
class Kill:
    """What killing the leader did: which member, when, and how long until a new one."""

    member: int
    at: float  # perf_counter
    election_s: float
    new_leader: int
    store_member: str | None  # the member the store's requests went to just before


@dataclass
class Timeline:
    """Everything ``steady`` saw, with perf_counter times, to be cut into phases."""

    cpu: list[tuple[float, float, float | None]] = field(default_factory=list)
    false_left: list[float] = field(default_factory=list)
    lost: list[float] = field(default_factory=list)
    lost_why: dict[str, int] = field(default_factory=dict)  # the causes, counted
    join_failures: list[float] = field(default_factory=list)
    watch_errors: list[tuple[float, str]] = field(default_factory=list)


def _cpu_at(
    samples: list[tuple[float, float, float | None]], t: float
) -> tuple[float, float, float | None]:
    return min(samples, key=lambda sample: abs(sample[0] - t))


def _phase(
    name: str, start: float, end: float, timed: TimedStore, timeline: Timeline
) -> dict[str, Any]:
    def within(times: list[float]) -> int:
        return sum(1 for t in times if start <= t < end)

    latencies = [rtt for began, rtt in timed.renewals if start <= began < end]
    t0, cpu0, etcd0 = _cpu_at(timeline.cpu, start)
    t1, cpu1, etcd1 = _cpu_at(timeline.cpu, end)
    wall = (t1 - t0) or math.nan  # an empty phase: the kill came too late for an "after"
    return {
        "phase": name,
        "seconds": end - start,
        "cpu_share": (cpu1 - cpu0) / wall,
        "etcd_cpu_share": None if etcd0 is None or etcd1 is None else (etcd1 - etcd0) / wall,
        "keepalives": len(latencies),
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "max_ms": max(latencies, default=math.nan) * 1000,
        "failed_calls": within(timed.failures),
        "false_left": within(timeline.false_left),
        "lost": within(timeline.lost),
        "join_failures": within(timeline.join_failures),
    }


async def steady(
    store: Any,
    n: int,
    duration: float,
    etcd_cpu: Callable[[], float] | None,
    kill_at: float | None = None,
    kill: Callable[[], Awaitable[Kill]] | None = None,
    ttl: int = 3,
) -> dict[str, Any]:
    """Run ``n`` heartbeats for ``duration`` seconds of steady state, and measure it.

    With ``kill``, it is awaited ``kill_at`` seconds in, and the result has three
    phases: before, across (1 s before the kill to ``ttl`` + 1 s after) and after.
    """
    timed = TimedStore(store)
    timeline = Timeline()
    group = f"bench-{n}"
    stop = anyio.Event()

    async def watch(ready: anyio.Event) -> None:
        while not stop.is_set():
            try:
                async with aclosing(watch_members(store, group)) as events:
                    async for event in events:
                        if not isinstance(event, MemberEvent):
                            ready.set()
                        elif event.type is MemberEventType.LEFT and not stop.is_set():
                            timeline.false_left.append(time.perf_counter())
            except StoreError as exc:  # a real failure: report it, and watch again
                timeline.watch_errors.append((time.perf_counter(), f"{exc}"[:120]))
                await anyio.sleep(0.5)

    async def member(i: int, joined: list[int]) -> None:
        # A member whose heartbeat is lost joins again at once, as a supervisor would.
        first = True
        while not stop.is_set():
            try:
                async with Heartbeat(timed, group, f"m{i}", interval=1.0, max_missed=ttl):
                    if first:
                        joined.append(i)
                        first = False
                    await stop.wait()
            except StoreError:  # the join failed: try again, as a supervisor would
                timeline.join_failures.append(time.perf_counter())
                await anyio.sleep(0.5)
            except HeartbeatLost as lost:
                timeline.lost.append(time.perf_counter())  # and join again
                why = _why(lost).replace(f"'m{i}'", "'m…'")
                why = re.sub(r"\d+\.\d+ s\b", "… s", re.sub(r"lease \d+", "lease …", why))
                timeline.lost_why[why] = timeline.lost_why.get(why, 0) + 1

    async def sample_cpu() -> None:
        while True:
            timeline.cpu.append(
                (time.perf_counter(), time.process_time(), etcd_cpu() if etcd_cpu else None)
            )
            await anyio.sleep(0.1)

    killed: Kill | None = None
    async with anyio.create_task_group() as tg:
        ready = anyio.Event()
        tg.start_soon(watch, ready)
        await ready.wait()
        joined: list[int] = []
        start_join = time.perf_counter()
        for i in range(n):
            tg.start_soon(member, i, joined)
            if i % 10 == 9:
                await anyio.sleep(0.02)  # 500 joins a second, as nodes coming up would
        with anyio.fail_after(120):
            while len(joined) < n:  # noqa: ASYNC110 - benchmark bookkeeping
                await anyio.sleep(0.05)
        join_s = time.perf_counter() - start_join
        await anyio.sleep(1.5)
        tg.start_soon(sample_cpu)
        await anyio.sleep(0.2)
        begin = time.perf_counter()
        if kill is not None and kill_at is not None:
            await anyio.sleep(kill_at)
            killed = await kill()
            await anyio.sleep(max(0.0, begin + duration - time.perf_counter()))
        else:
            await anyio.sleep(duration)
        end = time.perf_counter()
        await anyio.sleep(0.2)
        stop.set()
        await anyio.sleep(0.5)
        tg.cancel_scope.cancel()
    common = {
        "members": n,
        "join_s": join_s,
        "watch_errors": timeline.watch_errors,
        "lost_why": timeline.lost_why,
        "lost_at": timeline.lost,
    }
    if killed is None:
        return {**common, "phases": [_phase("steady", begin, end, timed, timeline)]}
    across = (killed.at - 1.0, min(end, killed.at + ttl + 1.0))
    return {
        **common,
        "kill": killed,
        "phases": [
            _phase("before", begin, across[0], timed, timeline),
            _phase("across", across[0], across[1], timed, timeline),
            _phase("after", across[1], end, timed, timeline),
        ],
    }


async def detection(endpoint: str, n: int, interval: float, max_missed: int) -> list[float]:
    group = "bench-kill"
    ttl = math.ceil(interval * max_missed)
    killed_at: dict[str, float] = {}
    detected: dict[str, float] = {}
    async with EtcdStore(endpoint) as store, anyio.create_task_group() as tg:
        ready = anyio.Event()

        async def watch() -> None:
            async with aclosing(watch_members(store, group)) as events:
                async for event in events:
                    if not isinstance(event, MemberEvent):
                        ready.set()
                    elif event.type is MemberEventType.LEFT and event.member in killed_at:
                        detected[event.member] = time.monotonic() - killed_at[event.member]

        tg.start_soon(watch)
        await ready.wait()
        procs = []
        for i in range(n):
            procs.append(
                await start_member_process(endpoint, group, f"victim-{i}", interval, max_missed)
            )
        await anyio.sleep(interval * 1.5)
        for i, proc in enumerate(procs):
            killed_at[f"victim-{i}"] = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            await anyio.sleep(0.1)  # stagger: each kill lands at a different point of its lease
        with anyio.fail_after(ttl + 10):
            while len(detected) < n:  # noqa: ASYNC110 - benchmark bookkeeping
                await anyio.sleep(0.01)
        for proc in procs:
            await proc.aclose()
        tg.cancel_scope.cancel()
    return sorted(detected.values())


def _first_error(exc: BaseException) -> str:
    inner: tuple[BaseException, ...] = getattr(exc, "exceptions", ())
    while inner:
        exc = inner[0]
        inner = getattr(exc, "exceptions", ())
    return f"{type(exc).__name__}: {exc}"[:90]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of steady state")
    parser.add_argument("--etcd-members", type=int, nargs="+", default=[250, 500, 1000])
    parser.add_argument(
        "--memory-members", type=int, default=10000, help="0 leaves the MemoryStore row out"
    )
    parser.add_argument("--kills", type=int, default=10, help="0 leaves the SIGKILL test out")
    parser.add_argument("--backend", choices=("asyncio", "uvloop", "trio"), default="asyncio")
    parser.add_argument(
        "--cluster", type=int, default=0, metavar="N", help="run an N-member etcd cluster"
    )
    parser.add_argument(
        "--kill-leader-at",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --cluster: SIGKILL the leader this far into each steady state",
    )
    parser.add_argument(
        "--connect",
        choices=("all", "follower"),
        default="all",
        help="with --cluster: give the store every member (default), or one follower's "
        "endpoint alone, which the leader's death does not cut off",
    )
    parser.add_argument(
        "--etcd-args",
        default="",
        metavar="ARGS",
        help="more etcd flags, e.g. '--heartbeat-interval 50 --election-timeout 500' "
        "(etcd's defaults are 100 and 1000 ms)",
    )
    args = parser.parse_args()
    etcd_args = shlex.split(args.etcd_args)
    if args.kill_leader_at is not None:
        if args.cluster < 3:
            parser.error("--kill-leader-at needs --cluster 3 or more, to keep a quorum")
        if not 0 < args.kill_leader_at < args.duration:
            parser.error("--kill-leader-at must be within the steady state (--duration)")

    def run(func: Any, *func_args: Any) -> Any:
        options = {"use_uvloop": True} if args.backend == "uvloop" else {}
        backend = "trio" if args.backend == "trio" else "asyncio"
        return anyio.run(func, *func_args, backend=backend, backend_options=options)

    with tempfile.TemporaryDirectory() as tmp:
        cluster: EtcdCluster | None = None
        server: EtcdServer | None = None
        if args.cluster:
            cluster = EtcdCluster(Path(tmp), args.cluster, extra_args=etcd_args)
            cluster.start()
            etcd_name = f"etcd 3.4 ({args.cluster} members)"
        else:
            server = EtcdServer(Path(tmp), extra_args=etcd_args)
            server.start()
            etcd_name = "etcd 3.4 (local)"

        def etcd_pids() -> list[int]:
            members = cluster.members if cluster else [server] if server else []
            return [m.process.pid for m in members if m.process is not None]

        def store_endpoint() -> str:
            if cluster is None:
                assert server is not None
                return server.endpoint
            if args.connect == "follower":
                leader = cluster.leader_index()
                return cluster.endpoints[(leader + 1) % cluster.size]
            return cluster.endpoint_list

        async def kill_leader(store: Any) -> Kill:
            assert cluster is not None
            leader = await anyio.to_thread.run_sync(cluster.leader_index)
            store_member = getattr(store, "member", None)  # EtcdStore.member
            at = time.perf_counter()
            await anyio.to_thread.run_sync(cluster.kill, leader)
            new_leader = await anyio.to_thread.run_sync(cluster.wait_leader, 30.0)
            if store_member in cluster.endpoints:
                store_member = f"m{cluster.endpoints.index(store_member)}"
            return Kill(leader, at, time.perf_counter() - at, new_leader, store_member)

        try:

            async def on_etcd(n: int) -> dict[str, Any]:
                async with EtcdStore(store_endpoint()) as store:

                    async def kill() -> Kill:
                        return await kill_leader(store)

                    return await steady(
                        store,
                        n,
                        args.duration,
                        EtcdCpu(etcd_pids),
                        args.kill_leader_at,
                        kill if args.kill_leader_at is not None else None,
                    )

            etcd_rows = []
            for n in args.etcd_members:
                try:
                    etcd_rows.append(run(on_etcd, n))
                except BaseException as exc:  # noqa: BLE001 - reported in the table
                    etcd_rows.append({"members": n, "error": _first_error(exc)})
                if cluster is not None:
                    for i, member in enumerate(cluster.members):
                        if member.process is None:
                            cluster.restart(i)
                    cluster.wait_leader()
            memory_row = None
            if args.memory_members:
                try:
                    memory_row = run(
                        steady, MemoryStore(), args.memory_members, args.duration, None
                    )
                except BaseException as exc:  # noqa: BLE001 - reported in the table
                    memory_row = {"members": args.memory_members, "error": _first_error(exc)}
            times = run(detection, store_endpoint(), args.kills, 1.0, 2) if args.kills else []
        finally:
            if cluster is not None:
                cluster.close()
            if server is not None:
                server.stop()

    print(
        f"steady state on {args.backend}: heartbeats every 1 s, TTL 3 s, "
        f"{args.duration:.0f} s measured"
        + (f", store on {args.connect} members" if cluster is not None else "")
        + (f", etcd {args.etcd_args}" if args.etcd_args else "")
        + "\n"
    )
    if args.kill_leader_at is not None:
        print_failover(etcd_name, etcd_rows, args.kill_leader_at)
        rows = [(etcd_name, r) for r in etcd_rows if "error" in r]
    else:
        rows = [(etcd_name, r) for r in etcd_rows]
    if memory_row is not None:
        rows.append(("MemoryStore", memory_row))
    if rows:
        print_steady(rows)
    if times:
        print_detection(times, args.kills)


def print_steady(rows: list[tuple[str, dict[str, Any]]]) -> None:
    header = (
        "store",
        "members",
        "join all s",
        "CPU share (this process)",
        "etcd CPU share",
        "keep-alives",
        "p50 ms",
        "p99 ms",
        "false LEFT",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, row in rows:
        if "error" in row:
            print(f"| {name} | {row['members']:,} | failed: {row['error']} |" + " |" * 6)
            continue
        phase = row["phases"][0]
        etcd_share = "-" if phase["etcd_cpu_share"] is None else f"{phase['etcd_cpu_share']:.0%}"
        print(
            f"| {name} | {row['members']:,} | {row['join_s']:.1f} | {phase['cpu_share']:.0%} | "
            f"{etcd_share} | {phase['keepalives']:,} | {phase['p50_ms']:.2f} | "
            f"{phase['p99_ms']:.2f} | {phase['false_left']} |"
        )
        for at, error in row["watch_errors"]:
            print(f"\nwatch_members failed at {at:.1f} and was opened again: {error}")
    print()


def print_failover(name: str, rows: list[dict[str, Any]], kill_at: float) -> None:
    header = (
        "members",
        "phase",
        "s",
        "renewals",
        "p50 ms",
        "p99 ms",
        "max ms",
        "failed calls",
        "false LEFT",
        "HeartbeatLost",
        "CPU share (this process)",
        "etcd CPU share (all members)",
    )
    print(f"{name}: the leader SIGKILLed {kill_at:g} s into the steady state\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    notes = []
    for row in rows:
        if "error" in row:
            continue
        kill: Kill = row["kill"]
        notes.append(
            f"{row['members']:,} members: killed m{kill.member}, the leader; m{kill.new_leader} "
            f"led {kill.election_s:.2f} s later; the store's requests went to "
            f"{kill.store_member or '?'} before; all joined in {row['join_s']:.1f} s"
        )
        since = [t - kill.at for t in row["lost_at"] if t >= kill.at]
        if since:
            notes.append(f"  first HeartbeatLost after the kill: +{min(since):.2f} s")
        if len(since) < len(row["lost_at"]):
            notes.append(
                f"  {len(row['lost_at']) - len(since)} HeartbeatLost before the kill "
                "(the join phase included)"
            )
        for why, count in row["lost_why"].items():
            notes.append(f"  {count} x {why}")
        for at, error in row["watch_errors"]:
            notes.append(f"  watch_members failed {at - kill.at:+.1f} s from the kill: {error}")
        for phase in row["phases"]:
            joins = f" ({phase['join_failures']} failed rejoins)" if phase["join_failures"] else ""
            print(
                f"| {row['members']:,} | {phase['phase']} | {phase['seconds']:.1f} | "
                f"{phase['keepalives']:,} | {phase['p50_ms']:.2f} | {phase['p99_ms']:.2f} | "
                f"{phase['max_ms']:.0f} | {phase['failed_calls']} | {phase['false_left']} | "
                f"{phase['lost']}{joins} | {phase['cpu_share']:.0%} | "
                f"{phase['etcd_cpu_share']:.0%} |"
            )
    print()
    for note in notes:
        print(note)
    print()


def print_detection(times: list[float], kills: int) -> None:
    print(
        f"SIGKILL detection on etcd: {kills} member processes, interval 1 s, "
        "max_missed 2, TTL 2 s\n"
    )
    print("| kills | min s | p50 s | p99 s | max s | target (TTL + 1 s) | met |")
    print("|---|---|---|---|---|---|---|")
    p99 = pct(times, 0.99)
    print(
        f"| {len(times)} | {times[0]:.2f} | {pct(times, 0.5):.2f} | {p99:.2f} | {times[-1]:.2f} "
        f"| 3.00 | {'yes' if p99 <= 3 else 'no'} |"
    )


if __name__ == "__main__":
    main()
