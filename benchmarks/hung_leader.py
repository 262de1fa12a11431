"""Benchmark: what lease TTL a hung etcd leader needs, on etcd's default timing.

Run by hand (not a test): ``python benchmarks/hung_leader.py [--ttls 1,2,3,4]``. It
starts a 3-member etcd cluster on loopback (Debian's etcd-server must be installed) with
etcd's default timing (heartbeat 100 ms, election timeout 1 s), and for each TTL runs
``--repeat`` tries of one hang each:

1. ``--members`` heartbeats (default 50) join one group through one :class:`EtcdStore`,
   at ``interval=1, max_missed=TTL`` (so a lease of TTL seconds), one by one as agents
   start; a ``watch_members`` on another store counts the group's ``LEFT`` events;
2. the store is sent to one member (``use_member``), counted from the leader in the
   members' order, in turn per try (``--at``, default ``1,0,2``: the follower after the
   leader, the leader itself, the follower before it), and every lease renews once
   through it;
3. the leader is SIGSTOPped for ``--hang`` seconds (default 6), then the hang ends as a
   supervisor's liveness probe ends one: a SIGKILL and a restart of the hung member
   (``--end kill``). ``--end cont`` sends SIGCONT instead: on etcd before 3.4.31 and
   3.5.13 (Debian's 3.4.23) a leader resuming after a hang longer than the TTL has the
   new leader revoke every lease it held (etcd issue #15247), renewed or not;
4. the try waits for a leader again, then TTL + 3 s more (13 s more with ``--end
   cont``), so that any loss surfaces (a heartbeat waits up to 2 s past its lease for
   the store's word), and counts the
   ``HeartbeatLost`` raised and the ``LEFT`` seen; the heartbeats then leave.

It prints one line per try (the lease TTL etcd granted, where the store was, when a new
leader was seen, the heartbeats never renewed during the hang, the library's WARNINGs;
``-v`` prints those too), then a table per TTL: the tries, the heartbeats lost and the
``LEFT`` events per try, the worst renewal gap, and how long the followers took to elect
a new leader. The worst renewal gap is the longest time one lease went between two
successful renewals (answer to answer, by this process's clock), or from its last one
to the end of the try for a lease still held; a gap longer than the TTL means the lease
was kept by the new leader's extension alone. etcd grants no TTL shorter than 1.5
election timeouts (2 s on the default timing): asked for 1 s, it grants 2 s.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
import time
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from anyrdzv import (
    EtcdStore,
    Heartbeat,
    HeartbeatLost,
    MemberEvent,
    MemberEventType,
    watch_members,
)
from anyrdzv.testing import StoreWrapper, use_member
from tests._support.etcd_cluster import EtcdCluster

if TYPE_CHECKING:
    from anyrdzv import Lease

PREFIX = "/hung-leader-bench"
ROLES = {0: "the leader", 1: "the follower after the leader", 2: "the follower before it"}


class WarningCount(logging.Handler):
    """Counts the library's WARNINGs (retries, failovers, late renewals)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


WARNINGS = WarningCount()


class TimedStore(StoreWrapper):
    """A store that notes, per lease, when each renewal was answered, and the longest
    time between two answers."""

    def __init__(self, store: EtcdStore) -> None:
        super().__init__(store)
        self.last: dict[int, float] = {}  # lease id -> when it was last granted or renewed
        self.worst = 0.0

    def _note(self, lease: int) -> None:
        now = time.monotonic()
        if lease in self.last:
            self.worst = max(self.worst, now - self.last[lease])
        self.last[lease] = now

    async def grant(self, ttl: int) -> Lease:
        lease = await super().grant(ttl)
        self._note(lease.id)
        return lease

    async def keep_alive(self, lease: Lease | int) -> int:
        remaining = await super().keep_alive(lease)
        self._note(lease if isinstance(lease, int) else lease.id)
        return remaining

    def worst_gap(self, alive: set[int]) -> float:
        """The worst gap, counting the open gap of every lease in ``alive`` up to now."""
        now = time.monotonic()
        open_gaps = [now - self.last[lease] for lease in alive if lease in self.last]
        return max([self.worst, *open_gaps])


@dataclass
class Try:
    ttl: int
    at: int
    leader: str
    lost: int = 0
    left: int = 0
    never_renewed: int = 0
    worst_gap: float = 0.0
    other_errors: int = 0
    causes: list[str] = field(default_factory=list)
    new_leader_after: float | None = None
    granted: set[int] = field(default_factory=set)  # the TTLs etcd granted
    warnings: int = 0  # the library's WARNINGs in the try, leaving included


class Members:
    """``count`` heartbeats, each in a task of its own, until :attr:`done` is set."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.beats: list[Heartbeat] = []
        self.leases: set[int] = set()  # the leases of heartbeats still held
        self.lost: list[HeartbeatLost] = []
        self.errors: list[Exception] = []
        self.done = anyio.Event()
        self.entered = anyio.Event()

    async def run(self, store: TimedStore, group: str, name: str, ttl: int) -> None:
        lease = None
        try:
            async with Heartbeat(
                store, group, name, interval=1, max_missed=ttl, prefix=PREFIX
            ) as beat:
                self.beats.append(beat)
                assert beat.lease is not None
                lease = beat.lease.id
                self.leases.add(lease)
                self._check_entered()
                await self.done.wait()
        except HeartbeatLost as exc:
            self.lost.append(exc)
        except Exception as exc:  # noqa: BLE001 - counted and shown, not hidden
            self.errors.append(exc)
        finally:
            self.leases.discard(lease or 0)
            self._check_entered()

    def _check_entered(self) -> None:
        if len(self.beats) + len(self.lost) + len(self.errors) >= self.count:
            self.entered.set()


def cause(exc: BaseException) -> str:
    text = f"{exc} (cause: {exc.__cause__!r})"
    return text if len(text) < 300 else text[:297] + "..."


async def follow(
    store: EtcdStore, group: str, left: list[MemberEvent], counting: list[bool], ready: anyio.Event
) -> None:
    """Record every member seen leaving ``group`` while ``counting[0]`` is true."""
    async with aclosing(watch_members(store, group, prefix=PREFIX)) as items:
        async for item in items:
            if not isinstance(item, MemberEvent):
                ready.set()
            elif item.type is MemberEventType.LEFT and counting[0]:
                left.append(item)


def new_leader(cluster: EtcdCluster, old: int, timeout: float) -> float | None:
    """When a leader other than ``old`` was seen (``time.monotonic()``), or None if
    none within ``timeout`` seconds."""
    try:
        cluster.wait_leader(timeout, other_than=old)
    except TimeoutError:
        return None
    return time.monotonic()


async def one_try(
    cluster: EtcdCluster, ttl: int, at: int, number: int, args: argparse.Namespace
) -> Try:
    leader = await anyio.to_thread.run_sync(cluster.leader_index)
    target = cluster.endpoints[(leader + at) % cluster.size]
    result = Try(ttl=ttl, at=at, leader=f"m{leader}")
    group = f"ttl{ttl}-try{number}"
    members = Members(args.members)
    left: list[MemberEvent] = []
    counting = [True]
    async with AsyncExitStack() as stack:
        store = EtcdStore(cluster.endpoint_list, timeout=5)
        use_member(store, target)
        await stack.enter_async_context(store)
        watcher = EtcdStore(cluster.endpoint_list, timeout=5)
        use_member(watcher, cluster.endpoints[(leader + 2) % cluster.size])
        await stack.enter_async_context(watcher)
        timed = TimedStore(store)
        tasks = await stack.enter_async_context(anyio.create_task_group())
        ready = anyio.Event()
        tasks.start_soon(follow, watcher, group, left, counting, ready)
        await ready.wait()
        for i in range(args.members):  # members come one by one, as agents start
            tasks.start_soon(members.run, timed, group, f"m{i:03d}", ttl)
            await anyio.sleep(0.01)
        with anyio.fail_after(60):
            await members.entered.wait()
        await anyio.sleep(1.5)  # every lease renewed once through that member
        joined_lost = len(members.lost)
        result.granted = {beat.lease.ttl for beat in members.beats if beat.lease is not None}
        before = [beat.renewals for beat in members.beats]
        cluster.stop(leader)
        stopped_at = time.monotonic()
        try:
            # When the followers elect a new leader, asked from a thread; it must be done
            # before the restart below touches the cluster.
            elected = await anyio.to_thread.run_sync(
                new_leader, cluster, leader, max(0.5, args.hang - 0.5)
            )
            if elected is not None:
                result.new_leader_after = elected - stopped_at
            await anyio.sleep(max(0.0, stopped_at + args.hang - time.monotonic()))
        finally:
            result.never_renewed = sum(
                1
                for beat, b in zip(members.beats, before, strict=True)
                if beat.loss is None and beat.renewals <= b
            )
            if args.end == "kill":
                await anyio.to_thread.run_sync(cluster.restart, leader)
            else:
                cluster.cont(leader)
        await anyio.to_thread.run_sync(lambda: cluster.wait_leader(30))
        # Any loss surfaces, and its LEFT comes; a leader that resumed revokes the rest of
        # the leases it held about 7 s after it resumed (etcd #15247).
        await anyio.sleep(ttl + 3 + (10 if args.end == "cont" else 0))
        counting[0] = False
        result.worst_gap = timed.worst_gap(members.leases)
        result.lost = len(members.lost)
        result.left = len(left)
        result.other_errors = len(members.errors)
        result.causes = [cause(exc) for exc in [*members.lost, *members.errors][:2]]
        if joined_lost:
            result.causes.insert(0, f"{joined_lost} lost before the hang")
        members.done.set()
        await anyio.sleep(0.5)  # they leave
        tasks.cancel_scope.cancel()
    return result


async def run_all(cluster: EtcdCluster, args: argparse.Namespace) -> list[Try]:
    tries: list[Try] = []
    for ttl in args.ttls:
        for number in range(args.repeat):
            at = args.at[number % len(args.at)]
            started = time.monotonic()
            warnings = WARNINGS.count
            result = await one_try(cluster, ttl, at, number, args)
            result.warnings = WARNINGS.count - warnings
            tries.append(result)
            print(
                f"TTL {ttl} s (granted {sorted(result.granted)}), try {number + 1}: store at {ROLES.get(at, f'leader + {at}')} "
                f"(leader {result.leader}): {result.lost} lost, {result.left} LEFT, "
                f"{result.never_renewed} never renewed in the hang, new leader after "
                f"{'-' if result.new_leader_after is None else f'{result.new_leader_after:.2f} s'}"
                f", worst gap "
                f"{result.worst_gap:.2f} s, {result.other_errors} other errors, "
                f"{result.warnings} WARNINGs "
                f"({time.monotonic() - started:.0f} s)",
                flush=True,
            )
            for text in result.causes:
                print(f"    {text}", flush=True)
            await anyio.to_thread.run_sync(lambda: cluster.wait_leader(30))
    return tries


def table(tries: list[Try], args: argparse.Namespace) -> str:
    lines = [
        (
            "| TTL (s) | tries | heartbeats lost per try | LEFT per try "
            "| worst renewal gap (s) | new leader after (s) |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for ttl in args.ttls:
        rows = [t for t in tries if t.ttl == ttl]
        lost = ", ".join(f"{t.lost}/{args.members}" for t in rows)
        left = ", ".join(str(t.left) for t in rows)
        worst = max(t.worst_gap for t in rows)
        elected = [t.new_leader_after for t in rows if t.new_leader_after is not None]
        span = f"{min(elected):.1f}–{max(elected):.1f}" if elected else "-"
        if len(elected) < len(rows):
            span += f" ({len(rows) - len(elected)} tries: none within the hang)"
        granted = sorted(set().union(*(t.granted for t in rows)))
        shown = f"{ttl}" if granted == [ttl] else f"{ttl} (etcd granted {granted})"
        lines.append(f"| {shown} | {len(rows)} | {lost} | {left} | {worst:.2f} | {span} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])

    def ints(text: str) -> list[int]:
        try:
            values = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"a list of integers, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"a list of integers, got {text!r}")
        return values

    parser.add_argument("--ttls", type=ints, default=[1, 2, 3, 4], help="TTLs in seconds")
    parser.add_argument("--members", type=int, default=50, help="heartbeats through one store")
    parser.add_argument("--hang", type=float, default=6.0, help="seconds the leader hangs")
    parser.add_argument("--repeat", type=int, default=3, help="tries per TTL")
    parser.add_argument(
        "--at",
        type=ints,
        default=[1, 0, 2],
        help="where the store sends requests, per try in turn, counted from the leader in "
        "the members' order (0 is the leader)",
    )
    parser.add_argument(
        "--end",
        choices=("kill", "cont"),
        default="kill",
        help="end the hang with SIGKILL and a restart (default), or SIGCONT",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print the library's WARNINGs too"
    )
    parser.add_argument("--backend", choices=("asyncio", "uvloop", "trio"), default="asyncio")
    parser.add_argument(
        "--etcd-args", default="", metavar="ARGS", help="more etcd flags (default timing)"
    )
    args = parser.parse_args()
    if min(args.ttls) < 1 or args.members < 1 or args.repeat < 1 or args.hang <= 0:
        parser.error("TTLs, --members and --repeat must be at least 1, --hang positive")
    if any(at not in (0, 1, 2) for at in args.at):
        parser.error("--at takes 0, 1 and 2")
    library = logging.getLogger("anyrdzv")
    library.addHandler(WARNINGS)
    if args.verbose:
        logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
    else:
        library.propagate = False
    options = {"use_uvloop": True} if args.backend == "uvloop" else {}
    backend = "trio" if args.backend == "trio" else "asyncio"
    with tempfile.TemporaryDirectory() as tmp:
        cluster = EtcdCluster(Path(tmp), 3, extra_args=shlex.split(args.etcd_args))
        with cluster:
            cluster.start()
            started = time.monotonic()
            tries = anyio.run(run_all, cluster, args, backend=backend, backend_options=options)
    print()
    print(
        f"{args.members} heartbeats through one EtcdStore at interval=1, max_missed=TTL, "
        f"on a 3-member etcd cluster (default timing), the leader SIGSTOPped {args.hang:g} s "
        f"per try, the hang ended by {'SIGKILL + restart' if args.end == 'kill' else 'SIGCONT'}"
        f", {args.backend}, {time.monotonic() - started:.0f} s in all:"
    )
    print(table(tries, args))


if __name__ == "__main__":
    main()
