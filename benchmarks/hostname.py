"""Benchmark: anyrdzv.matches_machine_hostname against torch's _matches_machine_hostname.

Run by hand (not a test): ``python benchmarks/hostname.py``. It prints a table. Torch's
function is measured in the same process when torch is importable; otherwise its
columns say so.
"""

from __future__ import annotations

import argparse
import socket
import time
import warnings
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

import anyrdzv

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.distributed.elastic.rendezvous.utils import (  # type: ignore[import-not-found]
            _matches_machine_hostname as torch_matches,
        )
except ImportError:  # pragma: no cover - depends on the machine
    torch_matches = None


def interface_ip() -> str:
    """An address of a non-loopback interface, or 127.0.0.1 if there is none."""
    identity = anyio.run(anyrdzv.local_identity)
    for name, addresses in identity.interfaces.items():
        for address in addresses:
            if name != "lo" and "." in address and not address.startswith("127."):
                return address
    return "127.0.0.1"


def rate_sync(func: Callable[[str], object], host: str, seconds: float) -> float:
    calls = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        func(host)
        calls += 1
    return calls / seconds


async def rate_async(func: Callable[[str], Awaitable[object]], host: str, seconds: float) -> float:
    calls = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        await func(host)
        calls += 1
    return calls / seconds


async def checkpoint_floor(_host: str) -> None:
    """What any async call that yields once costs: the ceiling for an async check."""
    await anyio.lowlevel.checkpoint()


async def max_lag(work: Callable[[], Awaitable[None]]) -> float:
    """The worst lateness of a 5 ms sleep loop while ``work`` runs, in seconds."""
    worst = 0.0
    done = anyio.Event()

    async def ticker() -> None:
        nonlocal worst
        while not done.is_set():
            before = time.perf_counter()
            await anyio.sleep(0.005)
            worst = max(worst, time.perf_counter() - before - 0.005)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.sleep(0.02)
        await work()
        done.set()
    return worst


async def anyrdzv_unresolvable(n: int) -> None:
    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(anyrdzv.matches_machine_hostname, f"bench-no-such-{i}.invalid")


async def torch_unresolvable(n: int) -> None:
    assert torch_matches is not None
    for i in range(n):
        try:
            torch_matches(f"bench-no-such-{i}.invalid")
        except OSError:
            pass
        await anyio.lowlevel.checkpoint()  # let the loop run between calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per rate measurement")
    parser.add_argument("--lookups", type=int, default=100, help="unresolvable lookups for lag")
    args = parser.parse_args()

    hosts = {
        "hostname": socket.gethostname(),
        "interface IP": interface_ip(),
        "localhost": "localhost",
        "floor: one checkpoint": "",
    }
    print(f"hosts: {hosts}")
    print(f"torch: {'importable' if torch_matches else 'not importable: torch columns skipped'}")
    print()
    rows: list[tuple[str, ...]] = []
    for label, host in hosts.items():
        floor = not host
        torch_rate = (
            rate_sync(torch_matches, host, args.seconds) if torch_matches and not floor else None
        )
        func = checkpoint_floor if floor else anyrdzv.matches_machine_hostname
        cells = [label, host]
        for backend, options in (("asyncio", {}), ("asyncio", {"use_uvloop": True}), ("trio", {})):
            rate = anyio.run(
                rate_async,
                func,
                host,
                args.seconds,
                backend=backend,
                backend_options=options,
            )
            cells.append(f"{rate:,.0f}")
            if backend == "asyncio" and not options:
                ratio = f"{rate / torch_rate:,.0f}x" if torch_rate else "-"
        cells.append(f"{torch_rate:,.0f}" if torch_rate else "n/a")
        cells.append(ratio)
        rows.append(tuple(cells))
    header = (
        "case",
        "host",
        "anyrdzv asyncio/s",
        "uvloop/s",
        "trio/s",
        "torch/s",
        "asyncio vs torch",
    )
    print_table(header, rows)

    print()
    lag_rows: list[tuple[str, ...]] = []
    for backend, options in (("asyncio", {}), ("asyncio", {"use_uvloop": True}), ("trio", {})):
        name = backend + ("+uvloop" if options else "")
        start = time.perf_counter()
        lag = anyio.run(
            max_lag,
            lambda: anyrdzv_unresolvable(args.lookups),
            backend=backend,
            backend_options=options,
        )
        lag_rows.append(
            (
                f"anyrdzv, {args.lookups} concurrent, {name}",
                f"{lag * 1000:.1f}",
                f"{time.perf_counter() - start:.1f}",
            )
        )
    if torch_matches:
        start = time.perf_counter()
        lag = anyio.run(max_lag, lambda: torch_unresolvable(args.lookups))
        lag_rows.append(
            (
                f"torch, {args.lookups} calls from the loop, asyncio",
                f"{lag * 1000:.1f}",
                f"{time.perf_counter() - start:.1f}",
            )
        )
    print_table(("unresolvable lookups", "max loop lag (ms)", "wall (s)"), lag_rows)


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    table: list[tuple[Any, ...]] = [header, *rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for index, row in enumerate(table):
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if index == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


if __name__ == "__main__":
    main()
