"""How long opening the first EtcdStore of a process stalls the event loop: a program
that a test runs in a fresh process, so that the first open is really the first.

``python loop_stall.py BACKEND ENDPOINT [--cafile CA]`` runs a task that ticks every
millisecond, and beside it makes an ``EtcdStore`` for ``ENDPOINT``, opens it, writes,
reads, watches one event and closes it; then makes 20 more. With ``--cafile``, the
endpoint serves TLS: the first store trusts ``CA`` (a context made before the loop
starts, as a program does at start-up), and the 20 are ``https://`` URLs with the
system's CAs, the last of which is opened, and fails (the system does not trust ``CA``).

It prints one JSON line: ``stall``, the longest time the loop did not get back to the
ticker beyond its millisecond, as counted below; ``late``, the same counted plainly;
and ``ticks``.

A late tick is the loop's fault only while the process was on a CPU: on a loaded
machine the kernel may leave it waiting for one. So each gap is counted less the time
the loop's thread spent runnable but not running, as Linux counts it in its
``schedstat`` (the second field): what remains is time that the thread spent running
something other than the ticker, or blocked in a call.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
from contextlib import aclosing

import anyio

from anyrdzv import EtcdStore, StoreConnectionError

TICK = 0.001


def runqueue_wait(fd: int) -> float:
    """How long the calling thread has waited for a CPU while runnable, in seconds."""
    return int(os.pread(fd, 200, 0).split()[1]) / 1e9


async def use_a_store(endpoint: str, context: ssl.SSLContext | None) -> None:
    async with EtcdStore(endpoint, ssl=context, timeout=10) as store:
        _, start = await store.get_prefix("/loop-stall/")
        revision = await store.put("/loop-stall/k", b"v")
        assert await store.get("/loop-stall/k") is not None
        async with aclosing(store.watch_prefix("/loop-stall/", start_revision=start + 1)) as w:
            async for event in w:
                assert event.revision == revision
                break
        await store.delete_prefix("/loop-stall/")
    url = f"https://{endpoint}" if context is not None else endpoint
    stores = [EtcdStore(url, timeout=10) for _ in range(20)]
    if context is not None:
        error = "it opened"
        try:
            async with stores[-1]:
                pass
        except StoreConnectionError as exc:
            error = str(exc)
        if "TLS" not in error:
            raise AssertionError(f"the system's CAs should not trust the test's CA: {error}")


async def main(endpoint: str, context: ssl.SSLContext | None) -> None:
    stall = late = 0.0
    ticks = 0
    done = False

    async def tick() -> None:
        nonlocal stall, late, ticks
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)  # this thread's, the loop's
        try:
            last, waited = time.perf_counter(), runqueue_wait(fd)
            while not done:
                await anyio.sleep(TICK)
                now, now_waited = time.perf_counter(), runqueue_wait(fd)
                late = max(late, now - last - TICK)
                stall = max(stall, now - last - TICK - (now_waited - waited))
                last, waited = now, now_waited
                ticks += 1
        finally:
            os.close(fd)

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        await anyio.sleep(0.05)  # the ticker runs
        await use_a_store(endpoint, context)
        done = True
    print(json.dumps({"stall": stall, "late": late, "ticks": ticks}))


if __name__ == "__main__":
    backend, endpoint, *rest = sys.argv[1:]
    context = ssl.create_default_context(cafile=rest[1]) if rest[:1] == ["--cafile"] else None
    name, _, loop = backend.partition("+")
    options = {"use_uvloop": True} if loop == "uvloop" else {}
    anyio.run(main, endpoint, context, backend=name, backend_options=options)
