"""Benchmark: heartbeats and membership on etcd and on MemoryStore.

Run by hand (not a test): ``python benchmarks/membership.py [--duration 20]``. It
starts its own etcd (Debian's etcd-server must be installed) on free loopback ports,
and prints a table:

1. N members in one process heartbeating every 1 s into one local etcd: the CPU share
   of one core (this process, and etcd's), keep-alive latency p50/p99, false LEFTs;
2. the same with MemoryStore and 10x the members;
3. 10 member processes SIGKILLed on etcd: the time until each is seen LEFT, against
   the TTL.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import tempfile
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "examples"))
from membership import start_member_process

from anyrdzv import (
    EtcdStore,
    Heartbeat,
    MemberEvent,
    MemberEventType,
    MemoryStore,
    watch_members,
)
from etcd_server import EtcdServer


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class TimedStore:
    """Delegates to a store, timing every keep-alive."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.latencies: list[float] = []
        self.recording = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def keep_alive(self, lease: Any) -> int:
        start = time.perf_counter()
        ttl: int = await self.store.keep_alive(lease)
        if self.recording:
            self.latencies.append(time.perf_counter() - start)
        return ttl


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values) or [math.nan]
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def steady(store: Any, n: int, duration: float, etcd_pid: int | None) -> dict[str, Any]:
    timed = TimedStore(store)
    false_left = 0
    group = f"bench-{n}"

    async def watch(ready: anyio.Event) -> None:
        nonlocal false_left
        async with aclosing(watch_members(store, group)) as events:
            async for event in events:
                if not isinstance(event, MemberEvent):
                    ready.set()
                elif event.type is MemberEventType.LEFT and timed.recording:
                    false_left += 1

    async def member(i: int, joined: list[int], stop: anyio.Event) -> None:
        async with Heartbeat(timed, group, f"m{i}", interval=1.0, max_missed=3):
            joined.append(i)
            await stop.wait()

    async with anyio.create_task_group() as tg:
        ready = anyio.Event()
        tg.start_soon(watch, ready)
        await ready.wait()
        joined: list[int] = []
        stop = anyio.Event()
        start_join = time.perf_counter()
        for i in range(n):
            tg.start_soon(member, i, joined, stop)
            if i % 10 == 9:
                await anyio.sleep(0.02)  # 500 joins a second, as nodes coming up would
        with anyio.fail_after(120):
            while len(joined) < n:  # noqa: ASYNC110 - benchmark bookkeeping
                await anyio.sleep(0.05)
        join_s = time.perf_counter() - start_join
        await anyio.sleep(1.5)
        timed.recording = True
        cpu0, etcd0, wall0 = (
            time.process_time(),
            etcd_pid and cpu_seconds(etcd_pid),
            time.perf_counter(),
        )
        await anyio.sleep(duration)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        etcd_cpu = (cpu_seconds(etcd_pid) - etcd0) if etcd_pid else None
        timed.recording = False
        stop.set()
        await anyio.sleep(0.5)
        tg.cancel_scope.cancel()
    return {
        "members": n,
        "join_s": join_s,
        "cpu_share": cpu / wall,
        "etcd_cpu_share": None if etcd_cpu is None else etcd_cpu / wall,
        "keepalives": len(timed.latencies),
        "p50_ms": pct(timed.latencies, 0.5) * 1000,
        "p99_ms": pct(timed.latencies, 0.99) * 1000,
        "false_left": false_left,
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
    parser.add_argument("--memory-members", type=int, default=10000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--backend", choices=("asyncio", "uvloop", "trio"), default="asyncio")
    args = parser.parse_args()

    def run(func: Any, *func_args: Any) -> Any:
        options = {"use_uvloop": True} if args.backend == "uvloop" else {}
        backend = "trio" if args.backend == "trio" else "asyncio"
        return anyio.run(func, *func_args, backend=backend, backend_options=options)

    with tempfile.TemporaryDirectory() as tmp:
        server = EtcdServer(Path(tmp))
        server.start()
        try:
            assert server.process is not None

            async def on_etcd(n: int) -> dict[str, Any]:
                assert server.process is not None
                async with EtcdStore(server.endpoint) as store:
                    return await steady(store, n, args.duration, server.process.pid)

            etcd_rows = []
            for n in args.etcd_members:
                try:
                    etcd_rows.append(run(on_etcd, n))
                except BaseException as exc:  # noqa: BLE001 - reported in the table
                    etcd_rows.append({"members": n, "error": _first_error(exc)})
            try:
                memory_row = run(steady, MemoryStore(), args.memory_members, args.duration, None)
            except BaseException as exc:  # noqa: BLE001 - reported in the table
                memory_row = {"members": args.memory_members, "error": _first_error(exc)}
            times = run(detection, server.endpoint, args.kills, 1.0, 2)
        finally:
            server.stop()

    print(
        f"steady state on {args.backend}: heartbeats every 1 s, TTL 3 s, "
        f"{args.duration:.0f} s measured\n"
    )
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
    for name, row in [("etcd 3.4 (local)", r) for r in etcd_rows] + [("MemoryStore", memory_row)]:
        if "error" in row:
            print(f"| {name} | {row['members']:,} | failed: {row['error']} |" + " |" * 6)
            continue
        etcd_share = "-" if row["etcd_cpu_share"] is None else f"{row['etcd_cpu_share']:.0%}"
        print(
            f"| {name} | {row['members']:,} | {row['join_s']:.1f} | {row['cpu_share']:.0%} | "
            f"{etcd_share} | {row['keepalives']:,} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
            f"{row['false_left']} |"
        )
    print(
        f"\nSIGKILL detection on etcd: {args.kills} member processes, interval 1 s, "
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
