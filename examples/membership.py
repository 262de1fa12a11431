"""Several members heartbeat into a store; a watcher prints who joins and who leaves.

    python examples/membership.py                          # MemoryStore, one process
    python examples/membership.py --etcd 127.0.0.1:2379    # members are processes on etcd

After ``--kill-after`` seconds one member is killed: SIGKILL on etcd; on the in-process
store, a network partition (its renewals and its goodbye never arrive). The watcher
sees it leave once its lease runs out, and the timeline shows how long that took
against the TTL. One more member then leaves cleanly. It exits 0.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import time
from contextlib import aclosing
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.abc
from _runner import BACKENDS, run

from anyrdzv import (
    EtcdStore,
    Heartbeat,
    HeartbeatLost,
    LeaseStore,
    MemberEvent,
    MemberEventType,
    MemoryStore,
    StoreConnectionError,
    watch_members,
)
from anyrdzv.testing import StoreWrapper

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

T = TypeVar("T")


class Partitionable(StoreWrapper):
    """Wraps a store; once ``cut`` is set, calls hang as if the network were gone."""

    def __init__(self, store: LeaseStore) -> None:
        super().__init__(store)
        self.cut = False

    async def intercept(self, method: str, call: Callable[[], Awaitable[T]]) -> T:
        if self.cut and method in {"grant", "keep_alive", "revoke", "put"}:
            await anyio.sleep(math.inf)
        return await call()


async def run_member(endpoint: str, group: str, name: str, interval: float, missed: int) -> None:
    async with (
        EtcdStore(endpoint) as store,
        Heartbeat(
            store,
            group,
            name,
            interval=interval,
            max_missed=missed,
            payload=f"pid {os.getpid()}".encode(),
        ),
    ):
        print("joined", flush=True)
        await anyio.sleep(math.inf)


async def demo(args: argparse.Namespace) -> None:
    ttl = math.ceil(args.interval * args.max_missed)
    started = time.monotonic()
    killed_at: dict[str, float] = {}
    left: list[str] = []

    def stamp() -> str:
        return f"{time.monotonic() - started:6.2f}s"

    async def watcher(store: LeaseStore, ready: anyio.Event) -> None:
        async with aclosing(watch_members(store, args.group)) as events:
            async for event in events:
                if not isinstance(event, MemberEvent):
                    print(f"{stamp()}  watching group {args.group!r}: {sorted(event.members)}")
                    ready.set()
                    continue
                note = ""
                if event.type is MemberEventType.LEFT:
                    left.append(event.member)
                    if event.member in killed_at:
                        after = time.monotonic() - killed_at[event.member]
                        note = f"  ({after:.2f} s after the kill; TTL {ttl} s)"
                print(f"{stamp()}  {event.type.value:<6} {event.member}{note}", flush=True)

    async def wait_left(name: str) -> None:
        with anyio.fail_after(ttl + 5):
            while name not in left:  # noqa: ASYNC110 - the watcher task fills it
                await anyio.sleep(0.01)

    names = [f"member-{i}" for i in range(args.members)]
    victim, leaver = names[0], names[-1]
    if args.etcd:
        async with EtcdStore(args.etcd) as store, anyio.create_task_group() as tg:
            ready = anyio.Event()
            tg.start_soon(watcher, store, ready)
            await ready.wait()
            procs = {
                name: await start_member_process(
                    args.etcd, args.group, name, args.interval, args.max_missed
                )
                for name in names
            }
            try:
                await anyio.sleep(args.kill_after)
                print(f"{stamp()}  KILL   {victim} (SIGKILL pid {procs[victim].pid})", flush=True)
                killed_at[victim] = time.monotonic()
                procs[victim].send_signal(signal.SIGKILL)
                await wait_left(victim)
                print(f"{stamp()}  STOP   {leaver} (Ctrl-C: a clean leave)", flush=True)
                procs[leaver].send_signal(signal.SIGINT)
                await wait_left(leaver)
            finally:
                for proc in procs.values():
                    if proc.returncode is None:
                        proc.kill()
                    with anyio.CancelScope(shield=True):
                        await proc.aclose()
            tg.cancel_scope.cancel()
        return

    memory = MemoryStore()
    links = {name: Partitionable(memory) for name in names}
    async with anyio.create_task_group() as tg:
        ready = anyio.Event()
        tg.start_soon(watcher, memory, ready)
        await ready.wait()
        scopes = {}
        ended = {name: anyio.Event() for name in names}
        for name in names:
            scopes[name] = anyio.CancelScope()
            tg.start_soon(member_task, links[name], args, name, scopes[name], ended[name])
        await anyio.sleep(args.kill_after)
        print(f"{stamp()}  KILL   {victim} (network partition)", flush=True)
        killed_at[victim] = time.monotonic()
        links[victim].cut = True
        await wait_left(victim)
        # The victim learns it is out once its renewals have had their grace past the TTL.
        await ended[victim].wait()
        print(f"{stamp()}  STOP   {leaver} (a clean leave)", flush=True)
        scopes[leaver].cancel()
        await wait_left(leaver)
        tg.cancel_scope.cancel()


async def member_task(
    store: Partitionable,
    args: argparse.Namespace,
    name: str,
    scope: anyio.CancelScope,
    ended: anyio.Event,
) -> None:
    with scope:
        try:
            async with Heartbeat(
                store,
                args.group,
                name,
                interval=args.interval,
                max_missed=args.max_missed,
            ):
                await anyio.sleep(math.inf)
        except HeartbeatLost:
            print(f"         {name} itself learned: heartbeat lost", flush=True)
        finally:
            ended.set()


async def start_member_process(
    etcd: str, group: str, name: str, interval: float, max_missed: int
) -> anyio.abc.Process:
    """Start one member as its own process on etcd, and wait until it has joined."""
    cmd = [
        sys.executable,
        __file__,
        "--etcd",
        etcd,
        "--group",
        group,
        "--interval",
        str(interval),
        "--max-missed",
        str(max_missed),
        "--member",
        name,
    ]
    proc = await anyio.open_process(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    if not await read_until(proc, b"joined", 30):
        proc.kill()
        await proc.aclose()
        raise StoreConnectionError(f"member {name} did not join")
    return proc


async def read_until(proc: anyio.abc.Process, marker: bytes, limit: float) -> bool:
    """Read the process's output until ``marker`` appears, for at most ``limit`` seconds."""
    assert proc.stdout is not None
    seen = b""
    with anyio.move_on_after(limit):
        async for chunk in proc.stdout:
            seen += chunk
            if marker in seen:
                return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--etcd", metavar="HOST:PORT", help="use etcd; members become processes")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--group", default="demo")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between renewals")
    parser.add_argument("--max-missed", type=int, default=2)
    parser.add_argument("--kill-after", type=float, default=2.0)
    parser.add_argument("--backend", choices=BACKENDS, default="asyncio")
    parser.add_argument("--member", help=argparse.SUPPRESS)  # run one member (etcd mode)
    args = parser.parse_args(argv)
    if args.members < 2:
        parser.error(f"--members must be at least 2, got {args.members}")
    try:
        Heartbeat(
            MemoryStore(), args.group, "check", interval=args.interval, max_missed=args.max_missed
        )
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    if args.member:
        return run(
            run_member,
            args.etcd,
            args.group,
            args.member,
            args.interval,
            args.max_missed,
            backend=args.backend,
        )
    return run(demo, args, backend=args.backend)


if __name__ == "__main__":
    sys.exit(main())
