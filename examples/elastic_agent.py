"""An elastic agent: each node rendezvouses, runs a worker process, and restarts it on a change.

    python examples/elastic_agent.py                          # 3 nodes on MemoryStore, one process
    python examples/elastic_agent.py --etcd 127.0.0.1:2379    # the nodes are processes on etcd

Each node enters a ``Rendezvous`` and, for each round, runs a worker subprocess with
``RANK``, ``WORLD_SIZE`` and ``ROUND`` in its environment. When ``changes()`` yields, the
node kills its worker and calls ``next_rendezvous()`` again.

Once every node runs its worker, one node is killed: SIGKILL on etcd; in one process, a
crash (its link to the store goes dead and its task is cancelled, so its lease is left to
expire, as a dead process leaves it; its own goodbye cannot reach the store either, and
its heartbeat logs that). The timeline shows the kill, ``changes()`` firing on
the survivors, the next round completing with one node fewer, and the workers restarting.
It exits 0 once the survivors' workers run that round, and 1 if that takes over --timeout.

On etcd, a node process ends on SIGTERM (what Kubernetes and Slurm send) or SIGINT as
any agent should: the signal cancels the node, which kills its worker and leaves the
run, its lease revoked, so its peers see it go at once instead of after the lease's TTL
(``stop_on_signals``). The demo stops its nodes so at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from contextlib import aclosing, asynccontextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
from _runner import BACKENDS, run
from anyio.streams.buffered import BufferedByteReceiveStream

from anyrdzv import EtcdStore, LeaseStore, MemoryStore, Rendezvous, RendezvousInfo
from anyrdzv.testing import StoreWrapper

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

T = TypeVar("T")

#: The worker: it reports its environment, then runs until its agent is gone (a worker
#: must not outlive an agent that was SIGKILLed, and that agent cannot kill it).
WORKER = """
import os, time
agent = os.getppid()
print(" ".join(f"{k}={os.environ[k]}" for k in ("RANK", "WORLD_SIZE", "ROUND")), flush=True)
while os.getppid() == agent:
    time.sleep(0.1)
"""


@dataclass(frozen=True)
class Event:
    """Something a node did; the demo prints it on its timeline."""

    node: str
    kind: str  # "round", "worker", "change" or "stop"
    text: str
    round: int = -1
    world_size: int = 0


async def agent(
    store: LeaseStore, name: str, args: argparse.Namespace, emit: Callable[[Event], None]
) -> None:
    """One node: rendezvous, run a worker, and on a change kill it and rendezvous again."""
    async with Rendezvous(
        store,
        args.run_id,
        node=name,
        min_nodes=args.nodes - 1,
        max_nodes=args.nodes,
        join_timeout=args.timeout,
        last_call_timeout=args.last_call_timeout,
        close_timeout=1,
        keep_alive_interval=args.keep_alive_interval,
        keep_alive_max_attempt=args.keep_alive_max_attempt,
    ) as rdzv:
        while True:
            info = await rdzv.next_rendezvous()
            who = ", ".join(info.participants)
            emit(
                Event(
                    name,
                    "round",
                    f"round {info.round} complete: rank {info.rank} of world size "
                    f"{info.world_size} ({who})",
                    info.round,
                    info.world_size,
                )
            )
            async with worker(info, name, emit):
                async with aclosing(rdzv.changes()) as changes:
                    change = await anext(changes)
                emit(Event(name, "change", f"changes() yielded {change!r}", info.round))
            if change == "closed":
                return


@asynccontextmanager
async def worker(
    info: RendezvousInfo, name: str, emit: Callable[[Event], None]
) -> AsyncIterator[None]:
    """Run this round's worker for the span of the block; then kill it."""
    env = {
        **os.environ,
        "RANK": str(info.rank),
        "WORLD_SIZE": str(info.world_size),
        "ROUND": str(info.round),
    }
    proc = await anyio.open_process(
        [sys.executable, "-c", WORKER], env=env, stdout=subprocess.PIPE, stderr=None
    )
    try:
        assert proc.stdout is not None
        line = await BufferedByteReceiveStream(proc.stdout).receive_until(b"\n", 1000)
        seen = dict(item.split("=", 1) for item in line.decode().split())
        emit(
            Event(
                name,
                "worker",
                f"worker pid {proc.pid} started: {line.decode()}",
                int(seen["ROUND"]),
                int(seen["WORLD_SIZE"]),
            )
        )
        yield
    finally:
        with anyio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
                emit(Event(name, "stop", f"worker pid {proc.pid} killed", info.round))
            await proc.aclose()


class Crashable(StoreWrapper):
    """Wraps a store; once ``crashed`` is set, the node's calls never get an answer."""

    CALLS = frozenset(
        {
            "grant",
            "keep_alive",
            "revoke",
            "put",
            "get",
            "get_prefix",
            "get_prefix_kv",
            "delete",
            "delete_prefix",
            "compare_and_swap",
            "txn",
        }
    )

    def __init__(self, store: LeaseStore) -> None:
        super().__init__(store)
        self.crashed = False

    async def intercept(self, method: str, call: Callable[[], Awaitable[T]]) -> T:
        if self.crashed and method in self.CALLS:
            await anyio.sleep_forever()
        return await call()


class Timeline:
    """Prints the nodes' events, and tells when to kill and when the survivors recovered."""

    def __init__(self, args: argparse.Namespace, names: list[str]) -> None:
        self.names = names
        self.on_etcd = bool(args.etcd)
        self.nodes = args.nodes
        self.ttl = math.ceil(args.keep_alive_interval * args.keep_alive_max_attempt)
        self.started = time.monotonic()
        self.victim = names[0]
        self.killed_at: float | None = None
        self.workers: dict[str, tuple[int, int]] = {}  # node -> the (round, world size) it runs
        self.full_round: int | None = None
        self.times: dict[str, list[float]] = {"change": [], "round": [], "worker": []}

    def stamp(self) -> str:
        return f"{time.monotonic() - self.started:6.2f}s"

    def show(self, node: str, kind: str, text: str) -> None:
        print(f"{self.stamp()}  {node:<7} {kind.upper():<7} {text}", flush=True)

    def all_running(self) -> bool:
        """Whether every node has run a worker of one round with the full world size."""
        return self.full_round is not None

    def record(self, event: Event) -> None:
        if event.node == self.victim and self.killed_at is not None:
            return  # a dead node tells nothing
        self.show(event.node, event.kind, event.text)
        if event.kind == "worker":
            self.workers[event.node] = (event.round, event.world_size)
            running = {self.workers.get(name) for name in self.names}
            if self.full_round is None and running == {(event.round, self.nodes)}:
                self.full_round = event.round
        if self.killed_at is not None and event.kind in self.times:
            if event.kind == "worker" and not self.recovered_on(event.node):
                return
            self.times[event.kind].append(time.monotonic() - self.killed_at)

    def recovered_on(self, node: str) -> bool:
        assert self.full_round is not None
        return self.workers.get(node) == (self.full_round + 1, self.nodes - 1)

    def recovered(self) -> bool:
        return self.killed_at is not None and all(
            self.recovered_on(name) for name in self.names if name != self.victim
        )

    def kill(self, how: str) -> None:
        self.killed_at = time.monotonic()
        self.show(self.victim, "kill", how)

    def floor(self) -> str:
        return "; etcd raises a TTL to its minimum, 2 s by default" if self.on_etcd else ""

    def summary(self) -> str:
        assert self.full_round is not None
        after = {kind: max(times) for kind, times in self.times.items()}
        return (
            f"after the kill: changes() fired on every survivor within {after['change']:.2f} s "
            f"(lease TTL {self.ttl} s{self.floor()}), round {self.full_round + 1} completed with world size "
            f"{self.nodes - 1} within {after['round']:.2f} s, and the workers ran again "
            f"within {after['worker']:.2f} s"
        )


async def follow(
    timeline: Timeline,
    events: MemoryObjectReceiveStream[Event],
    kill: Callable[[], Awaitable[None]],
    kill_after: float,
) -> None:
    """Print events until every node runs; kill one; print until the survivors run again."""

    async def kill_later() -> None:
        await anyio.sleep(kill_after)
        await kill()

    async with anyio.create_task_group() as tg:
        scheduled = False
        async for event in events:
            timeline.record(event)
            if not scheduled and timeline.all_running():
                scheduled = True
                tg.start_soon(kill_later)
            if timeline.recovered():
                break
        tg.cancel_scope.cancel()


async def demo(args: argparse.Namespace) -> int:
    names = [f"node-{i}" for i in range(args.nodes)]
    timeline = Timeline(args, names)
    where = f"etcd at {args.etcd}, one process each" if args.etcd else "MemoryStore, one process"
    print(
        f"{args.nodes} nodes of run {args.run_id!r} on {where}; min_nodes={args.nodes - 1}, "
        f"max_nodes={args.nodes}, lease TTL {timeline.ttl} s "
        f"(keep_alive_interval={args.keep_alive_interval:g} x {args.keep_alive_max_attempt})",
        flush=True,
    )
    send, receive = anyio.create_memory_object_stream[Event](math.inf)
    try:
        with anyio.fail_after(args.timeout):
            if args.etcd:
                await on_etcd(args, names, timeline, send, receive)
            else:
                await in_process(args, names, timeline, send, receive)
    except TimeoutError:
        print(
            f"FAILED: the survivors did not run the next round with world size "
            f"{args.nodes - 1} within --timeout={args.timeout:g} s",
            flush=True,
        )
        return 1
    finally:
        send.close()
        receive.close()
    print(timeline.summary(), flush=True)
    return 0


async def in_process(
    args: argparse.Namespace,
    names: list[str],
    timeline: Timeline,
    send: MemoryObjectSendStream[Event],
    receive: MemoryObjectReceiveStream[Event],
) -> None:
    memory = MemoryStore()
    links = {name: Crashable(memory) for name in names}
    scopes = {name: anyio.CancelScope() for name in names}

    async def node(name: str) -> None:
        with scopes[name]:
            await agent(links[name], name, args, send.send_nowait)

    async def kill() -> None:
        timeline.kill("crashed: its link to the store is dead and its task cancelled")
        links[timeline.victim].crashed = True
        scopes[timeline.victim].cancel()
        await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(node, name)
        await follow(timeline, receive, kill, args.kill_after)
        tg.cancel_scope.cancel()


async def on_etcd(
    args: argparse.Namespace,
    names: list[str],
    timeline: Timeline,
    send: MemoryObjectSendStream[Event],
    receive: MemoryObjectReceiveStream[Event],
) -> None:
    procs: dict[str, anyio.abc.Process] = {}

    async def relay(proc: anyio.abc.Process) -> None:
        assert proc.stdout is not None
        lines = BufferedByteReceiveStream(proc.stdout)
        while True:
            try:
                line = await lines.receive_until(b"\n", 10_000)
            except (anyio.EndOfStream, anyio.IncompleteRead):
                return
            send.send_nowait(Event(**json.loads(line)))

    async def kill() -> None:
        proc = procs[timeline.victim]
        timeline.kill(f"SIGKILL pid {proc.pid}")
        proc.send_signal(signal.SIGKILL)
        await anyio.lowlevel.checkpoint()

    try:
        async with anyio.create_task_group() as tg:
            for name in names:
                procs[name] = await anyio.open_process(
                    node_command(args, name), stdout=subprocess.PIPE, stderr=None
                )
                tg.start_soon(relay, procs[name])
            await follow(timeline, receive, kill, args.kill_after)
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await stop(list(procs.values()))


async def stop(procs: list[anyio.abc.Process]) -> None:
    """Stop node processes: SIGTERM first (they leave cleanly), SIGKILL after 5 s."""
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    with anyio.move_on_after(5):
        for proc in procs:
            await proc.wait()
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        await proc.aclose()


def node_command(args: argparse.Namespace, name: str) -> list[str]:
    return [
        sys.executable,
        __file__,
        "--etcd",
        args.etcd,
        "--node",
        name,
        "--nodes",
        str(args.nodes),
        "--run-id",
        args.run_id,
        "--keep-alive-interval",
        str(args.keep_alive_interval),
        "--keep-alive-max-attempt",
        str(args.keep_alive_max_attempt),
        "--last-call-timeout",
        str(args.last_call_timeout),
        "--timeout",
        str(args.timeout),
        "--backend",
        args.backend,
    ]


async def stop_on_signals(
    scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    """Cancel ``scope`` when SIGTERM or SIGINT arrives: the code under it then unwinds
    as from any cancellation, each ``async with`` leaving cleanly (a rendezvous or a
    heartbeat revokes its lease, and its keys are gone at once)."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for _ in signals:
            scope.cancel()
            return


async def run_node(args: argparse.Namespace) -> None:
    """One node as its own process (etcd mode): its events go to stdout, as JSON lines.
    SIGTERM or SIGINT makes it leave cleanly."""

    def emit(event: Event) -> None:
        print(json.dumps(asdict(event)), flush=True)

    async with EtcdStore(args.etcd) as store, anyio.create_task_group() as tg:
        await tg.start(stop_on_signals, tg.cancel_scope)
        await agent(store, args.node, args, emit)
        tg.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--etcd", metavar="HOST:PORT", help="use etcd; nodes become processes")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--run-id", default="elastic-demo")
    parser.add_argument("--keep-alive-interval", type=float, default=0.5)
    parser.add_argument("--keep-alive-max-attempt", type=int, default=2)
    parser.add_argument("--last-call-timeout", type=float, default=1.0)
    parser.add_argument("--kill-after", type=float, default=0.5, help="seconds of round 0")
    parser.add_argument("--timeout", type=float, default=15.0, help="give up after this long")
    parser.add_argument("--backend", choices=BACKENDS, default="asyncio")
    parser.add_argument("--node", help=argparse.SUPPRESS)  # run one node (etcd mode)
    args = parser.parse_args(argv)
    # An application configures logging, the library does not: a crashed node's own
    # cleanup cannot reach the store, and its heartbeat says so.
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    if args.nodes < 2:
        parser.error(f"--nodes must be at least 2, got {args.nodes}")
    try:
        Rendezvous(
            MemoryStore(),
            args.run_id,
            min_nodes=args.nodes - 1,
            max_nodes=args.nodes,
            join_timeout=args.timeout,
            last_call_timeout=args.last_call_timeout,
            keep_alive_interval=args.keep_alive_interval,
            keep_alive_max_attempt=args.keep_alive_max_attempt,
        )
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    if args.node:
        return node_main(args)
    status: list[int] = []

    async def go() -> None:
        status.append(await demo(args))

    return run(go, backend=args.backend) or status[0]


def node_main(args: argparse.Namespace) -> int:
    """Run one node until SIGTERM or SIGINT, which make it leave cleanly, with no
    message; exit status 0."""
    name = "trio" if args.backend == "trio" else "asyncio"
    options = {"use_uvloop": True} if args.backend == "uvloop" else {}
    try:
        anyio.run(run_node, args, backend=name, backend_options=options)
    except KeyboardInterrupt:
        pass  # SIGINT: the node has left cleanly
    return 0


if __name__ == "__main__":
    sys.exit(main())
