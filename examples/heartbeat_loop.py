"""Run N local heartbeat timers and print every beat with its lateness.

    python examples/heartbeat_loop.py --timers 3 --interval 1 --duration 5 --backend trio

It exits 0 after ``--duration`` seconds; Ctrl-C stops it cleanly at any time.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import AsyncExitStack

import anyio
from _runner import BACKENDS
from _runner import run as run_with

from anyrdzv import PeriodicTimer


def beat(node: str, timers: dict[str, PeriodicTimer], started: float) -> None:
    stats = timers[node].statistics()
    print(
        f"{time.monotonic() - started:7.3f}s  {node}  beat #{stats.calls + 1:<3} "
        f"(previous lateness {stats.last_lateness * 1000:6.2f} ms)",
        flush=True,
    )


async def run(timers: dict[str, PeriodicTimer], duration: float) -> None:
    # Each timer runs for the span of the block; Ctrl-C leaves it as KeyboardInterrupt.
    async with AsyncExitStack() as stack:
        for name, timer in timers.items():
            timer.set_name(f"heartbeat-{name}")
            await stack.enter_async_context(timer)
        await anyio.sleep(duration)
    print("summary:")
    for name, timer in timers.items():
        stats = timer.statistics()
        print(f"  {name}: {stats.calls} beats, max lateness {stats.max_lateness * 1000:.2f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--timers", type=int, default=3, help="how many heartbeats (default 3)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between beats")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds to run (default 5)")
    parser.add_argument("--backend", choices=BACKENDS, default="asyncio")
    args = parser.parse_args(argv)
    if args.timers < 1:
        parser.error(f"--timers must be at least 1, got {args.timers}")
    # The timers are built before the loop starts, so a bad --interval is reported
    # plainly, and this dict keeps them alive: a garbage-collected timer stops.
    started = time.monotonic()
    timers: dict[str, PeriodicTimer] = {}
    try:
        for index in range(args.timers):
            name = f"node-{index}"
            timers[name] = PeriodicTimer(args.interval, beat, name, timers, started)
    except ValueError as exc:
        parser.error(str(exc))
    print(
        f"{args.timers} heartbeats every {args.interval} s for {args.duration} s on {args.backend}"
    )
    return run_with(run, timers, args.duration, backend=args.backend)


if __name__ == "__main__":
    sys.exit(main())
