"""Benchmark: many periodic timers, anyrdzv against bare tasks and torch's threads.

Run by hand (not a test): ``python benchmarks/timers.py [--quick] [--repeat 3] [--plot FILE]``.
Every configuration runs in a fresh process, which prints one JSON line; this script
prints the table of medians, then each anyrdzv row as a ratio to the bare-task floor of
the same backend, N and interval, measured in the same run.

- The floors are bare sleep loops, one task each, with no timer machinery at all:
  ``asyncio.create_task`` (also under uvloop) and trio's ``nursery.start_soon``.
- ``anyio-task`` is one anyio task per timer, ``tg.start_soon`` of a bare
  ``anyio.sleep`` loop: what any design with a task of its own per timer pays at least.
- torch's ``_PeriodicTimer`` is measured when torch is importable, under a time limit
  ("did not finish" past it).

CPU per tick counts the start: it is the CPU time from just before the timers are
made until the end of the measured span, over every tick in that time. "steady" is the
CPU per tick of the measured span alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Any

IMPLS = (
    "anyrdzv-asyncio",
    "anyrdzv-uvloop",
    "anyrdzv-trio",
    "floor-asyncio",
    "floor-uvloop",
    "floor-trio",
    "anyio-task-asyncio",
    "anyio-task-trio",
    "torch-threads",
)
FLOOR_OF = {
    "anyrdzv-asyncio": "floor-asyncio",
    "anyrdzv-uvloop": "floor-uvloop",
    "anyrdzv-trio": "floor-trio",
    "anyio-task-asyncio": "floor-asyncio",
    "anyio-task-trio": "floor-trio",
}
METRICS = (
    "ticks",
    "cpu_per_tick_us",
    "steady_cpu_per_tick_us",
    "rss_per_timer_kib",
    "p50_ms",
    "p99_ms",
    "start_all_ms",
    "cancel_all_ms",
    "cancel_in_flight_ms",
)
# The targets: each of these, as a ratio to the floor, at most this much.
TARGETS = {
    "cpu_per_tick_us": 1.2,
    "rss_per_timer_kib": 2.0,
    "start_all_ms": 2.0,
    "cancel_all_ms": 2.0,
}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Recorder:
    """Counts every call, and collects the gap between consecutive calls of each timer."""

    def __init__(self, n: int) -> None:
        self.last = [0.0] * n
        self.gaps: list[float] = []
        self.calls = 0
        self.recording = False

    def tick(self, index: int) -> None:
        now = time.monotonic()
        self.calls += 1
        if self.recording and self.last[index]:
            self.gaps.append(now - self.last[index])
        self.last[index] = now


class Phases:
    """The clocks of one run: start, warm-up, the measured span, cancel."""

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.cpu0 = time.process_time()
        self.t0 = time.perf_counter()
        self.start_s = self.cancel_s = 0.0
        self.rss = 0
        self.calls0 = 0
        self.cpu_steady0 = 0.0
        self.cpu_all = self.cpu_steady = 0.0
        self.calls_all = 0

    def started(self) -> None:
        self.start_s = time.perf_counter() - self.t0

    def begin_measuring(self, base_rss: int) -> None:
        self.rss = rss_bytes() - base_rss
        self.rec.recording = True
        self.calls0 = self.rec.calls
        self.cpu_steady0 = time.process_time()

    def end_measuring(self) -> None:
        now = time.process_time()
        self.rec.recording = False
        self.cpu_all = now - self.cpu0
        self.cpu_steady = now - self.cpu_steady0
        self.calls_all = self.rec.calls
        self.t0 = time.perf_counter()

    def cancelled(self) -> None:
        self.cancel_s = time.perf_counter() - self.t0

    def summary(self, interval: float, n: int, cancel_latency: float | None) -> dict[str, Any]:
        lateness = sorted(g - interval for g in self.rec.gaps) or [math.nan]
        steady_calls = self.calls_all - self.calls0
        return {
            "ticks": steady_calls,
            "cpu_per_tick_us": self.cpu_all / max(self.calls_all, 1) * 1e6,
            "steady_cpu_per_tick_us": self.cpu_steady / max(steady_calls, 1) * 1e6,
            "rss_per_timer_kib": self.rss / n / 1024,
            "p50_ms": lateness[len(lateness) // 2] * 1000,
            "p99_ms": lateness[min(len(lateness) - 1, int(len(lateness) * 0.99))] * 1000,
            "start_all_ms": self.start_s * 1000,
            "cancel_all_ms": self.cancel_s * 1000,
            "cancel_in_flight_ms": None if cancel_latency is None else cancel_latency * 1000,
        }


def run_asyncio(main: Any, backend: str) -> Any:
    import asyncio

    if backend == "uvloop":
        import uvloop

        return uvloop.run(main())
    return asyncio.run(main())


def worker_anyrdzv(backend: str, n: int, interval: float, duration: float) -> dict[str, Any]:
    import anyio

    from anyrdzv import PeriodicTimer

    rec = Recorder(n)

    async def main() -> dict[str, Any]:
        base_rss = rss_bytes()
        async with anyio.create_task_group() as tg:
            phases = Phases(rec)
            timers = [PeriodicTimer(interval, rec.tick, i) for i in range(n)]
            for timer in timers:
                timer.start(tg)
            # Twice: on trio, the first may run before the timers' first steps.
            await anyio.lowlevel.checkpoint()
            await anyio.lowlevel.checkpoint()
            phases.started()
            await anyio.sleep(interval * 1.5)  # let every timer tick once
            phases.begin_measuring(base_rss)
            await anyio.sleep(duration)
            phases.end_measuring()
            for timer in timers:
                timer.cancel()
        phases.cancelled()

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
        return phases.summary(interval, n, latency)

    options = {"use_uvloop": True} if backend == "uvloop" else {}
    return anyio.run(
        main, backend="trio" if backend == "trio" else "asyncio", backend_options=options
    )


def worker_anyio_task(backend: str, n: int, interval: float, duration: float) -> dict[str, Any]:
    import anyio

    rec = Recorder(n)

    async def loop(i: int) -> None:
        while True:
            await anyio.sleep(interval)
            rec.tick(i)

    async def main() -> dict[str, Any]:
        base_rss = rss_bytes()
        async with anyio.create_task_group() as tg:
            phases = Phases(rec)
            for i in range(n):
                tg.start_soon(loop, i)
            await anyio.lowlevel.checkpoint()
            await anyio.lowlevel.checkpoint()
            phases.started()
            await anyio.sleep(interval * 1.5)
            phases.begin_measuring(base_rss)
            await anyio.sleep(duration)
            phases.end_measuring()
            tg.cancel_scope.cancel()
        phases.cancelled()
        return phases.summary(interval, n, None)

    return anyio.run(main, backend=backend)


def worker_floor_asyncio(backend: str, n: int, interval: float, duration: float) -> dict[str, Any]:
    import asyncio

    rec = Recorder(n)

    async def loop(i: int) -> None:
        while True:
            await asyncio.sleep(interval)
            rec.tick(i)

    async def main() -> dict[str, Any]:
        base_rss = rss_bytes()
        phases = Phases(rec)
        tasks = [asyncio.create_task(loop(i)) for i in range(n)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        phases.started()
        await asyncio.sleep(interval * 1.5)
        phases.begin_measuring(base_rss)
        await asyncio.sleep(duration)
        phases.end_measuring()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        phases.cancelled()
        return phases.summary(interval, n, None)

    result: dict[str, Any] = run_asyncio(main, backend)
    return result


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
            phases = Phases(rec)
            for i in range(n):
                nursery.start_soon(loop, i)
            await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()
            phases.started()
            await trio.sleep(interval * 1.5)
            phases.begin_measuring(base_rss)
            await trio.sleep(duration)
            phases.end_measuring()
            nursery.cancel_scope.cancel()
        phases.cancelled()
        return phases.summary(interval, n, None)

    return trio.run(main)


def worker_torch(n: int, interval: float, duration: float) -> dict[str, Any]:
    import datetime
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.distributed.elastic.rendezvous.utils import _PeriodicTimer

    rec = Recorder(n)
    base_rss = rss_bytes()
    phases = Phases(rec)
    timers = [_PeriodicTimer(datetime.timedelta(seconds=interval), rec.tick, i) for i in range(n)]
    for timer in timers:
        timer.start()
    phases.started()
    time.sleep(interval * 1.5)
    phases.begin_measuring(base_rss)
    time.sleep(duration)
    phases.end_measuring()
    for timer in timers:
        timer.cancel()
    phases.cancelled()

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
    return phases.summary(interval, n, latency)


def worker(impl: str, n: int, interval: float, duration: float) -> dict[str, Any]:
    if impl.startswith("anyrdzv-"):
        return worker_anyrdzv(impl.removeprefix("anyrdzv-"), n, interval, duration)
    if impl.startswith("anyio-task-"):
        return worker_anyio_task(impl.removeprefix("anyio-task-"), n, interval, duration)
    if impl in ("floor-asyncio", "floor-uvloop"):
        return worker_floor_asyncio(impl.removeprefix("floor-"), n, interval, duration)
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


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each metric over the runs that finished."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0]["error"], "runs": 0}
    result: dict[str, Any] = {"runs": len(ok)}
    for key in METRICS:
        values = [r[key] for r in ok if r.get(key) is not None]
        result[key] = statistics.median(values) if values else None
    return result


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def print_table(results: list[dict[str, Any]]) -> None:
    header = (
        "impl",
        "N",
        "interval",
        "ticks",
        "CPU/tick µs",
        "steady µs",
        "RSS/timer KiB",
        "p50 ms",
        "p99 ms",
        "start all ms",
        "cancel all ms",
        "cancel in flight ms",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in results:
        head = [r["impl"], f"{r['n']:,}", str(r["interval"])]
        if "error" in r:
            cells = [*head, r["error"]] + [""] * (len(header) - 4)
        else:
            cells = [
                *head,
                fmt(round(r["ticks"])),
                fmt(r["cpu_per_tick_us"]),
                fmt(r["steady_cpu_per_tick_us"]),
                fmt(r["rss_per_timer_kib"]),
                fmt(r["p50_ms"], 2),
                fmt(r["p99_ms"], 2),
                fmt(r["start_all_ms"]),
                fmt(r["cancel_all_ms"]),
                fmt(r["cancel_in_flight_ms"], 2),
            ]
        print("| " + " | ".join(cells) + " |")


def print_ratios(results: list[dict[str, Any]]) -> None:
    """Each anyrdzv and anyio-task row against its floor, from the same run."""
    by_key = {(r["impl"], r["n"], r["interval"]): r for r in results}
    header = ("impl", "N", "interval", *(f"{m} ≤ {t}×" for m, t in _TARGET_NAMES), "all met")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in results:
        floor = by_key.get((FLOOR_OF.get(r["impl"], ""), r["n"], r["interval"]))
        if floor is None or "error" in r or "error" in floor:
            continue
        cells = [r["impl"], f"{r['n']:,}", str(r["interval"])]
        met = True
        for key, limit in TARGETS.items():
            ratio = r[key] / floor[key] if floor[key] else math.inf
            met = met and ratio <= limit
            cells.append(f"{r[key]:,.1f} / {floor[key]:,.1f} = **{ratio:.2f}×**")
        cells.append("yes" if met else "no")
        print("| " + " | ".join(cells) + " |")


_TARGET_NAMES = (
    ("CPU/tick", TARGETS["cpu_per_tick_us"]),
    ("RSS/timer", TARGETS["rss_per_timer_kib"]),
    ("start all", TARGETS["start_all_ms"]),
    ("cancel all", TARGETS["cancel_all_ms"]),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--worker", nargs=4, metavar=("IMPL", "N", "INTERVAL", "DURATION"), help=argparse.SUPPRESS
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    parser.add_argument("--quick", action="store_true", help="N = 100 and 1,000 only, 2 s each")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each configuration; the table has medians"
    )
    parser.add_argument(
        "--impl",
        action="append",
        metavar="PREFIX",
        help="only the implementations whose name starts with this (may be repeated)",
    )
    parser.add_argument(
        "--targets-only",
        action="store_true",
        help="only the configurations of the targets: N = 1,000 at 100 ms, 10,000 at 1 s",
    )
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
    impls = [i for i in IMPLS if not args.impl or any(i.startswith(p) for p in args.impl)]
    if "torch-threads" in impls and not torch_importable():
        impls.remove("torch-threads")
    if args.targets_only:
        configs = [(impl, 1_000, 0.1) for impl in impls if impl != "torch-threads"]
        configs += [(impl, 10_000, 1.0) for impl in impls if impl != "torch-threads"]
    else:
        sizes = (100, 1_000) if args.quick else (100, 1_000, 10_000)
        configs = [(impl, n, 0.1) for n in sizes for impl in impls]
        if not args.quick:
            configs += [(impl, 10_000, 1.0) for impl in impls if impl != "torch-threads"]
    runs: dict[tuple[str, int, float], list[dict[str, Any]]] = {c: [] for c in configs}
    for round_ in range(args.repeat):
        for impl, n, interval in configs:  # round by round, so that drift hits every row
            limit = args.torch_limit if impl == "torch-threads" else 120 + n / 100
            if round_ and impl == "torch-threads" and "error" in runs[impl, n, interval][0]:
                continue
            r = run_config(impl, n, interval, duration, limit)
            runs[impl, n, interval].append(r)
            print(f"# round {round_ + 1}: {impl} {n} {interval}: {json.dumps(r)}", flush=True)
    results = [
        {"impl": impl, "n": n, "interval": interval, **median_of(rs)}
        for (impl, n, interval), rs in runs.items()
    ]
    print()
    print_table(results)
    print()
    print_ratios(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"medians": results, "runs": [[*k, v] for k, v in runs.items()]}, f, indent=1)
    if args.plot:
        plot(results, args.plot)


def plot(results: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cpu_ax, rss_ax, p99_ax) = plt.subplots(1, 3, figsize=(15, 4.4))
    for impl in IMPLS:
        rows = sorted(
            (r for r in results if r["impl"] == impl and r["interval"] == 0.1 and "error" not in r),
            key=lambda r: r["n"],
        )
        if not rows:
            continue
        ns = [r["n"] for r in rows]
        style = "--" if impl.startswith(("floor-", "anyio-task-")) else "-"
        cpu_ax.plot(ns, [r["cpu_per_tick_us"] for r in rows], style, marker="o", label=impl)
        rss_ax.plot(ns, [r["rss_per_timer_kib"] for r in rows], style, marker="o", label=impl)
        p99_ax.plot(ns, [max(r["p99_ms"], 0.01) for r in rows], style, marker="o", label=impl)
    for ax, title in (
        (cpu_ax, "CPU per tick, start included (µs)"),
        (rss_ax, "RSS per timer (KiB)"),
        (p99_ax, "p99 lateness (ms)"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("timers (N), 100 ms interval")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = cpu_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}")


if __name__ == "__main__":
    main()
