"""Benchmark: many periodic timers, anyrdzv against torch's thread-per-timer design.

Run by hand (not a test): ``python benchmarks/timers.py [--quick] [--plot FILE]``.
Every configuration runs in a fresh process, which prints one JSON line; this script
prints the table. torch's ``_PeriodicTimer`` is measured when torch is importable, under
a time limit ("did not finish" past it). The floors are bare sleep loops, one task
each, with no timer machinery at all.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from typing import Any

IMPLS = (
    "anyrdzv-asyncio",
    "anyrdzv-uvloop",
    "anyrdzv-trio",
    "floor-asyncio",
    "floor-trio",
    "torch-threads",
)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Recorder:
    """Collects the gap between consecutive calls of each timer."""

    def __init__(self, n: int) -> None:
        self.last = [0.0] * n
        self.gaps: list[float] = []
        self.ticks = 0
        self.recording = False

    def tick(self, index: int) -> None:
        now = time.monotonic()
        if self.recording and self.last[index]:
            self.gaps.append(now - self.last[index])
            self.ticks += 1
        self.last[index] = now


def summarize(
    rec: Recorder,
    interval: float,
    cpu: float,
    rss: int,
    n: int,
    start_s: float,
    cancel_s: float,
    cancel_latency: float | None,
) -> dict[str, Any]:
    lateness = sorted(g - interval for g in rec.gaps) or [math.nan]
    return {
        "ticks": rec.ticks,
        "cpu_per_tick_us": cpu / max(rec.ticks, 1) * 1e6,
        "rss_per_timer_kib": rss / n / 1024,
        "p50_ms": lateness[len(lateness) // 2] * 1000,
        "p99_ms": lateness[min(len(lateness) - 1, int(len(lateness) * 0.99))] * 1000,
        "start_all_ms": start_s * 1000,
        "cancel_all_ms": cancel_s * 1000,
        "cancel_in_flight_ms": None if cancel_latency is None else cancel_latency * 1000,
    }


def worker_anyrdzv(backend: str, n: int, interval: float, duration: float) -> dict[str, Any]:
    import anyio

    from anyrdzv import PeriodicTimer

    rec = Recorder(n)

    async def main() -> dict[str, Any]:
        base_rss = rss_bytes()
        async with anyio.create_task_group() as tg:
            t0 = time.perf_counter()
            timers = [PeriodicTimer(interval, rec.tick, i) for i in range(n)]
            for timer in timers:
                timer.start(tg)
            await anyio.lowlevel.checkpoint()
            start_s = time.perf_counter() - t0
            await anyio.sleep(interval * 1.5)  # let every timer tick once
            rss = rss_bytes() - base_rss
            rec.recording = True
            cpu0 = time.process_time()
            await anyio.sleep(duration)
            cpu = time.process_time() - cpu0
            rec.recording = False
            t0 = time.perf_counter()
            for timer in timers:
                timer.cancel()
        cancel_s = time.perf_counter() - t0

        entered = anyio.Event()

        async def long_call() -> None:
            entered.set()
            await anyio.sleep(10)

        async with anyio.create_task_group() as tg:
            timer = PeriodicTimer(0.01, long_call)
            timer.start(tg)
            await entered.wait()
            t0 = time.perf_counter()
            await timer.aclose()
            latency = time.perf_counter() - t0
        return summarize(rec, interval, cpu, rss, n, start_s, cancel_s, latency)

    options = {"use_uvloop": True} if backend == "uvloop" else {}
    return anyio.run(
        main, backend="trio" if backend == "trio" else "asyncio", backend_options=options
    )


def worker_floor_asyncio(n: int, interval: float, duration: float) -> dict[str, Any]:
    import asyncio

    rec = Recorder(n)

    async def loop(i: int) -> None:
        while True:
            await asyncio.sleep(interval)
            rec.tick(i)

    async def main() -> dict[str, Any]:
        base_rss = rss_bytes()
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(loop(i)) for i in range(n)]
        await asyncio.sleep(0)
        start_s = time.perf_counter() - t0
        await asyncio.sleep(interval * 1.5)
        rss = rss_bytes() - base_rss
        rec.recording = True
        cpu0 = time.process_time()
        await asyncio.sleep(duration)
        cpu = time.process_time() - cpu0
        rec.recording = False
        t0 = time.perf_counter()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return summarize(rec, interval, cpu, rss, n, start_s, time.perf_counter() - t0, None)

    return asyncio.run(main())


def worker_floor_trio(n: int, interval: float, duration: float) -> dict[str, Any]:
    import trio

    rec = Recorder(n)

    async def loop(i: int) -> None:
        while True:
            await trio.sleep(interval)
            rec.tick(i)

    async def main() -> dict[str, Any]:
        base_rss = rss_bytes()
        async with trio.open_nursery() as nursery:
            t0 = time.perf_counter()
            for i in range(n):
                nursery.start_soon(loop, i)
            await trio.lowlevel.checkpoint()
            start_s = time.perf_counter() - t0
            await trio.sleep(interval * 1.5)
            rss = rss_bytes() - base_rss
            rec.recording = True
            cpu0 = time.process_time()
            await trio.sleep(duration)
            cpu = time.process_time() - cpu0
            rec.recording = False
            t0 = time.perf_counter()
            nursery.cancel_scope.cancel()
        cancel_s = time.perf_counter() - t0
        return summarize(rec, interval, cpu, rss, n, start_s, cancel_s, None)

    return trio.run(main)


def worker_torch(n: int, interval: float, duration: float) -> dict[str, Any]:
    import datetime
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.distributed.elastic.rendezvous.utils import _PeriodicTimer

    rec = Recorder(n)
    base_rss = rss_bytes()
    t0 = time.perf_counter()
    timers = [_PeriodicTimer(datetime.timedelta(seconds=interval), rec.tick, i) for i in range(n)]
    for timer in timers:
        timer.start()
    start_s = time.perf_counter() - t0
    time.sleep(interval * 1.5)
    rss = rss_bytes() - base_rss
    rec.recording = True
    cpu0 = time.process_time()
    time.sleep(duration)
    cpu = time.process_time() - cpu0
    rec.recording = False
    t0 = time.perf_counter()
    for timer in timers:
        timer.cancel()
    cancel_s = time.perf_counter() - t0

    entered = time.monotonic()
    flag: list[float] = []

    def long_call() -> None:
        flag.append(time.monotonic())
        time.sleep(0.5)

    timer = _PeriodicTimer(datetime.timedelta(seconds=0.01), long_call)
    timer.start()
    while not flag and time.monotonic() - entered < 5:
        time.sleep(0.001)
    t0 = time.perf_counter()
    timer.cancel()  # torch waits for the call in flight
    latency = time.perf_counter() - t0
    return summarize(rec, interval, cpu, rss, n, start_s, cancel_s, latency)


def worker(impl: str, n: int, interval: float, duration: float) -> dict[str, Any]:
    if impl.startswith("anyrdzv-"):
        return worker_anyrdzv(impl.removeprefix("anyrdzv-"), n, interval, duration)
    if impl == "floor-asyncio":
        return worker_floor_asyncio(n, interval, duration)
    if impl == "floor-trio":
        return worker_floor_trio(n, interval, duration)
    return worker_torch(n, interval, duration)


def torch_importable() -> bool:
    probe = [sys.executable, "-c", "import torch.distributed.elastic.rendezvous.utils"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def run_config(impl: str, n: int, interval: float, duration: float, limit: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", impl, str(n), str(interval), str(duration)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {limit:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:60]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--worker", nargs=4, metavar=("IMPL", "N", "INTERVAL", "DURATION"), help=argparse.SUPPRESS
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--quick", action="store_true", help="N = 100 and 1,000 only, 2 s each")
    parser.add_argument(
        "--torch-limit",
        type=float,
        default=60.0,
        help="seconds before a torch run is reported as not finished",
    )
    parser.add_argument("--plot", metavar="FILE", help="draw CPU per tick and p99 against N")
    parser.add_argument("--json", metavar="FILE", help="also write the raw results here")
    args = parser.parse_args()
    if args.worker:
        impl, n, interval, duration = args.worker
        print(json.dumps(worker(impl, int(n), float(interval), float(duration))))
        return

    duration = 2.0 if args.quick else args.duration
    sizes = (100, 1_000) if args.quick else (100, 1_000, 10_000)
    impls = [i for i in IMPLS if i != "torch-threads" or torch_importable()]
    configs = [(impl, n, 0.1) for n in sizes for impl in impls]
    if not args.quick:
        configs += [(impl, 10_000, 1.0) for impl in impls if impl != "torch-threads"]
    results: list[dict[str, Any]] = []
    header = (
        "impl",
        "N",
        "interval",
        "ticks",
        "CPU/tick µs",
        "RSS/timer KiB",
        "p50 ms",
        "p99 ms",
        "start all ms",
        "cancel all ms",
        "cancel in flight ms",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for impl, n, interval in configs:
        limit = args.torch_limit if impl == "torch-threads" else 120 + n / 100
        r = run_config(impl, n, interval, duration, limit)
        results.append({"impl": impl, "n": n, "interval": interval, **r})
        if "error" in r:
            cells = [impl, f"{n:,}", str(interval), r["error"]] + [""] * 7
        else:
            cells = [
                impl,
                f"{n:,}",
                str(interval),
                f"{r['ticks']:,}",
                fmt(r["cpu_per_tick_us"]),
                fmt(r["rss_per_timer_kib"]),
                fmt(r["p50_ms"], 2),
                fmt(r["p99_ms"], 2),
                fmt(r["start_all_ms"]),
                fmt(r["cancel_all_ms"]),
                fmt(r["cancel_in_flight_ms"], 2),
            ]
        print("| " + " | ".join(cells) + " |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.plot:
        plot(results, args.plot)


def plot(results: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cpu_ax, p99_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for impl in IMPLS:
        rows = sorted(
            (r for r in results if r["impl"] == impl and r["interval"] == 0.1 and "error" not in r),
            key=lambda r: r["n"],
        )
        if not rows:
            continue
        ns = [r["n"] for r in rows]
        cpu_ax.plot(ns, [r["cpu_per_tick_us"] for r in rows], marker="o", label=impl)
        p99_ax.plot(ns, [max(r["p99_ms"], 0.01) for r in rows], marker="o", label=impl)
    for ax, title in ((cpu_ax, "CPU per tick (µs)"), (p99_ax, "p99 lateness (ms)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("timers (N), 100 ms interval")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    cpu_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}")


if __name__ == "__main__":
    main()
