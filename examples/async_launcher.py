"""The shape of an async elastic launcher, with torchrun's rendezvous flags.

    python examples/async_launcher.py --rdzv-endpoint node0:29400 \\
        --rdzv-conf join_timeout=60,keep_alive_interval=1 --rdzv-id job42 --duration 5

It parses the flags as torchrun would, decides whether this node would host the
rendezvous store, waits a random skew before joining, and keeps a keep-alive timer
running until ``--duration`` ends. ``--backend trio`` runs the very same code on trio.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import anyio
from _runner import BACKENDS, run

from anyrdzv import (
    Endpoint,
    PeriodicTimer,
    delay,
    explain_machine_hostname,
    parse_rendezvous_config,
    parse_rendezvous_endpoint,
)

C10D_DEFAULT_PORT = 29400


def keep_alive(rdzv_id: str, node: str, started: float) -> None:
    print(f"{time.monotonic() - started:7.3f}s  keep-alive  run={rdzv_id} node={node}", flush=True)


async def launch(endpoint: Endpoint, rdzv_id: str, interval: float, duration: float) -> None:
    started = time.monotonic()
    match = await explain_machine_hostname(endpoint.host)
    role = "hosts the store" if match.matches else "joins a store on another node"
    print(f"endpoint {endpoint}: this node {role} ({match.rule}: {match.detail})")

    await delay((0, 0.3))  # torch skews the first join so that nodes do not collide
    print(f"{time.monotonic() - started:7.3f}s  joined rendezvous {rdzv_id!r}")

    timer = PeriodicTimer(interval, keep_alive, rdzv_id, f"pid{os.getpid()}", started)
    timer.set_name(f"keep-alive-{rdzv_id}")
    async with timer:  # the keep-alives run for the span of the block
        await anyio.sleep(duration)
    print(f"{time.monotonic() - started:7.3f}s  left after {timer.statistics().calls} keep-alives")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rdzv-endpoint", default="localhost:29400", metavar="HOST[:PORT]")
    parser.add_argument("--rdzv-conf", default="", metavar="K=V,...")
    parser.add_argument("--rdzv-id", default="none", help="the run id (default: none)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to stay joined")
    parser.add_argument("--backend", choices=BACKENDS, default="asyncio")
    args = parser.parse_args(argv)
    try:
        endpoint = parse_rendezvous_endpoint(args.rdzv_endpoint, C10D_DEFAULT_PORT)
        conf = parse_rendezvous_config(args.rdzv_conf)
    except ValueError as exc:
        parser.error(str(exc))
    raw = conf.get("keep_alive_interval", "5")
    try:
        interval = float(raw)
    except ValueError:
        interval = math.nan
    if not (math.isfinite(interval) and interval > 0):
        parser.error(f"keep_alive_interval must be a positive number of seconds, got {raw!r}")
    return run(launch, endpoint, args.rdzv_id, interval, args.duration, backend=args.backend)


if __name__ == "__main__":
    sys.exit(main())
