"""A trio-first agent: trio.run, cancel scopes, and anyrdzv inside, with nothing special.

    python examples/trio_agent.py --rdzv-endpoint localhost:29400 --duration 3

The agent keeps a keep-alive timer running while it works: its "work" is a health probe
that re-checks whether this node still hosts the store, until ``--duration`` ends.
"""

from __future__ import annotations

import argparse
import sys
import time

import trio
from _runner import interruptible

import anyrdzv


async def agent(endpoint: anyrdzv.Endpoint, interval: float, duration: float) -> None:
    started = time.monotonic()

    def beat() -> None:
        print(f"{time.monotonic() - started:7.3f}s  keep-alive", flush=True)

    async def probe() -> None:
        async for tick in anyrdzv.periodic(interval, schedule="fixed-rate", jitter=0.2):
            hosts = await anyrdzv.matches_machine_hostname(endpoint.host)
            print(f"{time.monotonic() - started:7.3f}s  probe #{tick.index}: hosts store = {hosts}")

    # The timer's task lives in the timer's own nursery, for the span of the block; what
    # the block raises (Ctrl-C's KeyboardInterrupt) leaves it as itself.
    async with anyrdzv.PeriodicTimer(interval, beat) as timer:
        with trio.move_on_after(duration):
            await probe()
    print(f"done: {timer.statistics().calls} keep-alives")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rdzv-endpoint", default="localhost:29400", metavar="HOST[:PORT]")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    try:
        endpoint = anyrdzv.parse_rendezvous_endpoint(args.rdzv_endpoint, 29400)
    except ValueError as exc:
        parser.error(str(exc))
    return interruptible(lambda: trio.run(agent, endpoint, args.interval, args.duration))


if __name__ == "__main__":
    sys.exit(main())
