"""Node processes for ``benchmarks/rendezvous.py --independent``, and the parent that
starts them and times them from a common start.

Two kinds of worker process, run as ``python benchmarks/_nodes.py anyrdzv|c10d ...``:

- ``anyrdzv``: nodes ``first`` to ``first + count - 1`` of an N-node run, each with its
  own ``EtcdStore`` (its own connection, lease and watch), wrapped in
  :class:`anyrdzv.testing.CountingStore`, on one event loop;
- ``c10d``: the same nodes as torch ``DynamicRendezvousHandler`` s on a
  ``C10dRendezvousBackend``, each with its own ``TCPStore`` client, one thread each
  (``next_rendezvous()`` blocks); ``c10d-host`` hosts the ``TCPStore`` server alone, so
  that its CPU is counted apart, as etcd's is.

The protocol, one JSON object a line: a worker opens its stores (and makes its torch
handlers), then writes ``{"ready": ...}``; the parent writes ``go <t0>`` (a
``time.monotonic()`` a little in the future: on Linux it is one clock for every process),
and at ``t0`` every node enters and calls ``next_rendezvous()``; each node writes
``{"ranked": i, "t": ...}`` or ``{"failed": i, "error": ...}``. Once every node is
accounted for (or the limit is up) the parent writes ``stop``, and each worker answers
with ``{"summary": ...}`` (the counts of its stores) before it leaves.

The parent (:func:`measure`) reads the CPU time of the workers and of the store's
server from ``/proc/<pid>/stat`` at ``t0`` and when the last node is accounted for.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
# The checkout's own code, whatever the venv's editable install points at.
sys.path.insert(0, str(ROOT / "src"))

#: How long before ``t0`` the parent sends the go: time for every worker to read it.
GO_AHEAD = 1.0
#: How long the workers may take to open their stores (or the limit, if longer), s.
OPEN_LIMIT = 120.0
#: How many times a worker tries to open each store.
OPEN_ATTEMPTS = 3
#: With a node failed, the parent stops once nothing new came for this long.
SETTLE = 15.0


def raise_file_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit (4,096 nodes hold
    more than 4,096 sockets); children inherit it. Return the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def name_of(i: int) -> str:
    return f"node-{i:05d}"


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


def kind_of(error: str) -> str:
    """An error's message with the node's name and the figures that vary taken out, so
    that the same error of many nodes counts as one kind."""
    error = re.sub(r"node-\d+", "node-…", error)
    error = re.sub(r"\b\d+(?:\.\d+)? s\b", "… s", error)  # durations
    return re.sub(r"\b\d{10,}\b", "…", error)  # lease ids


class Output:
    """Writes JSON lines to stdout, one writer at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, **record: Any) -> None:
        line = json.dumps(record)
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


# -- the anyrdzv worker ------------------------------------------------------------------


async def anyrdzv_nodes(args: argparse.Namespace) -> None:
    """Open one ``EtcdStore`` per node (and, with ``--enter-first``, enter each node's
    ``Rendezvous``), say ready, and at the go rendezvous them all."""
    from contextlib import AsyncExitStack

    import anyio
    import anyio.to_thread

    from anyrdzv import EtcdStore, Rendezvous
    from anyrdzv.testing import CountingStore

    out = Output()
    indexes = range(args.first, args.first + args.count)
    store_options = {"timeout": args.store_timeout} if args.store_timeout else {}
    stores: dict[int, CountingStore] = {}
    failed: set[int] = set()
    go, stop = anyio.Event(), anyio.Event()
    async with AsyncExitStack() as stack:
        opening = anyio.CapacityLimiter(16)  # no thundering herd of 1,024 handshakes
        started = time.monotonic()
        retries = 0

        async def open_store(i: int) -> None:
            # Opening is not part of the round: a store that times out opening (etcd
            # busy with the others) is tried again, and the retries are reported.
            nonlocal retries
            async with opening:
                for attempt in range(OPEN_ATTEMPTS):
                    try:
                        store = await stack.enter_async_context(
                            EtcdStore(args.endpoint, **store_options)
                        )
                    except Exception as exc:  # noqa: BLE001 - any node's error fails the row
                        if attempt + 1 < OPEN_ATTEMPTS:
                            retries += 1
                            continue
                        failed.add(i)
                        out(failed=i, t=time.monotonic(), opening=True, error=describe(exc))
                        return
                    break
            stores[i] = CountingStore(store)

        # The first alone: the first store of a process makes the SSL context that the
        # others share, and many at once would each make it, starving the event loop.
        await open_store(indexes[0])
        async with anyio.create_task_group() as tg:
            for i in indexes[1:]:
                tg.start_soon(open_store, i)

        settled = len(failed)  # nodes entered (with --enter-first) or failed
        all_settled = anyio.Event()

        def settle() -> None:
            nonlocal settled
            settled += 1
            if settled == args.count:
                all_settled.set()

        async def node(i: int) -> None:
            ranked = entered = False
            try:
                if not args.enter_first:
                    await go.wait()
                async with Rendezvous(
                    stores[i],
                    args.run_id,
                    node=name_of(i),
                    min_nodes=args.nodes,
                    max_nodes=args.nodes,
                    join_timeout=args.join_timeout,
                ) as rdzv:
                    entered = True
                    if args.enter_first:
                        settle()
                        await go.wait()
                    else:
                        out(entered=i, t=time.monotonic())
                    info = await rdzv.next_rendezvous()
                    ranked = True
                    out(ranked=i, t=time.monotonic(), rank=info.rank, world=info.world_size)
                    await stop.wait()
            except Exception as exc:  # noqa: BLE001 - any node's error fails the row
                if not stop.is_set():
                    out(failed=i, t=time.monotonic(), after_ranked=ranked, error=describe(exc))
                if args.enter_first and not entered:
                    settle()

        def counts(store: CountingStore) -> tuple[int, int, int, int]:
            return (
                store.events,
                store.bytes_received,
                store.requests(),
                store.calls["keep_alive"],
            )

        async def until_stop(nodes: anyio.CancelScope) -> None:
            line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            at_go = {i: counts(store) for i, store in stores.items()}
            if line.startswith("go "):
                await anyio.sleep(max(0.0, float(line.split()[1]) - time.monotonic()))
                at_go = {i: counts(store) for i, store in stores.items()}  # of the entry
                go.set()
                await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            # What each node's store received from the go on.
            rounds = [
                tuple(a - b for a, b in zip(counts(store), at_go[i], strict=True))
                for i, store in stores.items()
            ]
            summary = {
                "events": [r[0] for r in rounds],
                "bytes": [r[1] for r in rounds],
                "requests": [r[2] for r in rounds],
                "keep_alives": sum(r[3] for r in rounds),
            }
            out(summary=summary)
            stop.set()
            nodes.cancel()  # the nodes not ranked yet wait no longer

        async with anyio.create_task_group() as tg:
            for i in indexes:
                if i not in failed:
                    tg.start_soon(node, i)
            if args.enter_first and settled < args.count:
                await all_settled.wait()
            out(
                ready=len(stores),
                pid=os.getpid(),
                opened=time.monotonic() - started,
                retries=retries,
            )
            tg.start_soon(until_stop, tg.cancel_scope)


# -- the torch c10d worker ---------------------------------------------------------------


def c10d_nodes(args: argparse.Namespace) -> None:
    """Make one torch handler per node, each with its own TCPStore client, say ready, and
    at the go call ``next_rendezvous()`` on each, in a thread of its own."""
    from datetime import timedelta

    from torch.distributed import TCPStore  # type: ignore[attr-defined]
    from torch.distributed.elastic.rendezvous import RendezvousParameters
    from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import (
        C10dRendezvousBackend,
    )
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import create_handler

    out = Output()
    started = time.monotonic()
    handlers: dict[int, Any] = {}
    timeout = timedelta(seconds=args.join_timeout)
    for i in range(args.first, args.first + args.count):
        try:
            store = TCPStore("127.0.0.1", args.port, is_master=False, timeout=timeout)
            params = RendezvousParameters(
                backend="c10d",
                endpoint=f"127.0.0.1:{args.port}",
                run_id=args.run_id,
                min_nodes=args.nodes,
                max_nodes=args.nodes,
                local_addr="127.0.0.1",  # rank 0 publishes it as the master address
                join_timeout=str(int(args.join_timeout)),
            )
            backend = C10dRendezvousBackend(store, args.run_id)
            handlers[i] = create_handler(store, backend, params)
        except Exception as exc:  # noqa: BLE001 - any node's error fails the row
            out(failed=i, t=time.monotonic(), opening=True, error=describe(exc))
    out(ready=len(handlers), pid=os.getpid(), opened=time.monotonic() - started)
    line = sys.stdin.readline()
    if not line.startswith("go "):
        os._exit(0)
    t0 = float(line.split()[1])

    def node(i: int) -> None:
        time.sleep(max(0.0, t0 - time.monotonic()))
        try:
            info = handlers[i].next_rendezvous()
        except Exception as exc:  # noqa: BLE001 - any node's error fails the row
            out(failed=i, t=time.monotonic(), after_ranked=False, error=describe(exc))
        else:
            out(ranked=i, t=time.monotonic(), rank=info.rank, world=info.world_size)

    for i in handlers:
        threading.Thread(target=node, args=(i,), daemon=True).start()
    sys.stdin.readline()
    out(summary={})
    os._exit(0)  # the handlers' keep-alive threads would hold the process


def c10d_host() -> None:
    """Host the run's TCPStore server; say its port; serve until stdin closes."""
    from datetime import timedelta

    from torch.distributed import TCPStore  # type: ignore[attr-defined]

    raise_file_limit()
    store = TCPStore(
        "127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=900)
    )
    print(json.dumps({"port": store.port, "pid": os.getpid()}), flush=True)
    sys.stdin.read()
    os._exit(0)


# -- the parent --------------------------------------------------------------------------


@dataclass
class Row:
    """One measurement: ``nodes`` nodes over ``processes`` worker processes."""

    mode: str
    nodes: int
    processes: int
    limit: float
    seconds: float | None = None  # t0 → the last node ranked; None unless all ranked
    stopped: float | None = None  # t0 → when the parent stopped waiting, s
    entered: float | None = None  # t0 → every node in its run (entered at the go), s
    enter_first: bool = False  # the nodes entered their run before the go
    ranked: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # message → nodes
    outcome: str = ""  # "", "limit", "failed", "not ready", "crashed"
    opened: float | None = None  # launch → every worker ready, s
    open_retries: int = 0  # stores that timed out opening, and were opened again
    client_cpu: float | None = None  # the workers' CPU over the round, s
    store_cpu: float | None = None  # etcd's (or the TCPStore host's) over the round, s
    events: list[int] = field(default_factory=list)  # watch events, per node
    bytes: list[int] = field(default_factory=list)  # bytes received, per node
    requests: list[int] = field(default_factory=list)  # store calls (no keep-alives)
    keep_alives: int = 0
    note: str = ""


class Workers:
    """Worker processes, their stdout read into one queue by a thread each."""

    def __init__(self, commands: list[list[str]], logdir: Path) -> None:
        self.lines: queue.Queue[tuple[int, dict[str, Any] | None]] = queue.Queue()
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: list[Path] = []
        for index, command in enumerate(commands):
            log = logdir / f"worker-{index}.log"
            self.logs.append(log)
            with open(log, "w") as stderr:
                proc = subprocess.Popen(
                    command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True
                )
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(index, proc), daemon=True).start()

    def _read(self, index: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                self.lines.put((index, json.loads(line)))
            except json.JSONDecodeError:
                continue  # a stray print of a library
        self.lines.put((index, None))

    def send(self, text: str) -> None:
        for proc in self.procs:
            stdin: IO[str] | None = proc.stdin
            try:
                assert stdin is not None
                stdin.write(text + "\n")
                stdin.flush()
            except (BrokenPipeError, OSError):
                pass

    def cpu(self) -> float:
        total = 0.0
        for proc in self.procs:
            try:
                total += cpu_seconds(proc.pid)
            except OSError:
                pass  # exited: its time is lost, and the row says it crashed
        return total

    def stderr_tail(self, lines: int = 5) -> str:
        tails = []
        for log in self.logs:
            text = log.read_text(errors="replace").strip().splitlines()
            if text:
                tails.append(f"{log.name}: " + " | ".join(text[-lines:]))
        return "\n".join(tails)

    def close(self, timeout: float) -> None:
        """Close their stdin, let them leave within ``timeout``, then SIGKILL them."""
        for proc in self.procs:
            try:
                assert proc.stdin is not None
                proc.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def split(nodes: int, processes: int) -> list[tuple[int, int]]:
    """Nodes 0..nodes-1 in ``processes`` contiguous runs: (first, count) each."""
    base, extra = divmod(nodes, processes)
    runs, first = [], 0
    for p in range(processes):
        count = base + (1 if p < extra else 0)
        runs.append((first, count))
        first += count
    return [(f, c) for f, c in runs if c]


def measure(row: Row, commands: list[list[str]], store_pid: int | None, logdir: Path) -> Row:
    """Start the workers, wait until all are ready, give the go, and time the round."""
    workers = Workers(commands, logdir)
    launched = time.monotonic()
    ranked: dict[int, float] = {}
    entered: dict[int, float] = {}
    failed: dict[int, str] = {}
    ready: set[int] = set()
    ended: set[int] = set()
    try:
        opening = max(row.limit, OPEN_LIMIT)
        deadline = launched + opening
        while len(ready) < len(commands):
            try:
                index, record = workers.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                row.outcome = "not ready"
                row.note = f"{len(ready)} of {len(commands)} workers ready in {opening:g} s"
                return row
            if record is None:
                row.outcome = "crashed"
                row.note = f"worker {index} exited before it was ready\n{workers.stderr_tail()}"
                return row
            if "failed" in record:
                failed[record["failed"]] = record["error"]
            elif "ready" in record:
                ready.add(index)
                row.open_retries += record.get("retries", 0)
        row.opened = time.monotonic() - launched
        if failed:
            row.outcome = "failed"
            return row

        t0 = time.monotonic() + GO_AHEAD
        workers.send(f"go {t0!r}")
        time.sleep(max(0.0, t0 - 0.005 - time.monotonic()))
        cpu0 = workers.cpu()
        store0 = cpu_seconds(store_pid) if store_pid else None
        last_news = t0
        deadline = t0 + row.limit
        while len(ranked.keys() | failed.keys()) < row.nodes:
            now = time.monotonic()
            if now >= deadline:
                row.outcome = "limit"
                break
            if failed and now - last_news > SETTLE:
                break
            try:
                index, record = workers.lines.get(timeout=min(1.0, deadline - now))
            except queue.Empty:
                continue
            if record is None:
                ended.add(index)
                row.outcome = "crashed"
                row.note = f"worker {index} exited in the round\n{workers.stderr_tail()}"
                break
            if "entered" in record:
                entered[record["entered"]] = record["t"]
            elif "ranked" in record:
                ranked[record["ranked"]] = record["t"]
                last_news = time.monotonic()
            elif "failed" in record:
                failed[record["failed"]] = record["error"]
                last_news = time.monotonic()
        row.client_cpu = workers.cpu() - cpu0
        row.stopped = time.monotonic() - t0
        if store_pid and store0 is not None:
            row.store_cpu = cpu_seconds(store_pid) - store0
        if failed and not row.outcome:
            row.outcome = "failed"
        if len(ranked) == row.nodes and not failed and not row.outcome:
            row.seconds = max(ranked.values()) - t0
        if len(entered) == row.nodes:
            row.entered = max(entered.values()) - t0

        workers.send("stop")
        summaries = 0
        until = time.monotonic() + 60
        while summaries < len(commands) - len(ended) and time.monotonic() < until:
            try:
                index, record = workers.lines.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                break
            if record is None:
                ended.add(index)
            elif "summary" in record:
                summaries += 1
                summary = record["summary"]
                row.events += summary.get("events", [])
                row.bytes += summary.get("bytes", [])
                row.requests += summary.get("requests", [])
                row.keep_alives += summary.get("keep_alives", 0)
            elif "failed" in record and record["failed"] not in ranked:
                failed.setdefault(record["failed"], record["error"])
        return row
    finally:
        row.ranked = len(ranked)
        row.failed = len(failed)
        row.errors = dict(Counter(map(kind_of, failed.values())).most_common())
        workers.close(timeout=60)


def run_independent(
    nodes: int,
    processes: int,
    *,
    endpoint: str,
    etcd_pid: int,
    limit: float,
    backend: str,
    enter_first: bool,
    store_timeout: float | None,
    logdir: Path,
) -> Row:
    """``nodes`` anyrdzv nodes, each with its own ``EtcdStore``, over ``processes``
    worker processes, on the etcd at ``endpoint`` (process ``etcd_pid``); with
    ``enter_first``, each enters its ``Rendezvous`` before the go."""
    row = Row("independent", nodes, processes, limit, enter_first=enter_first)
    commands = [
        [
            sys.executable,
            str(HERE),
            "anyrdzv",
            f"--endpoint={endpoint}",
            f"--run-id=bench-{nodes}",
            f"--nodes={nodes}",
            f"--first={first}",
            f"--count={count}",
            f"--join-timeout={limit + 60:g}",
            f"--backend={backend}",
            *(["--enter-first"] if enter_first else []),
            *([f"--store-timeout={store_timeout:g}"] if store_timeout else []),
        ]
        for first, count in split(nodes, processes)
    ]
    row.processes = len(commands)
    return measure(row, commands, etcd_pid, logdir)


def run_c10d(nodes: int, per_process: int, *, limit: float, logdir: Path) -> Row:
    """``nodes`` torch c10d handlers, ``per_process`` to a worker process, each with its
    own TCPStore client of one TCPStore hosted by a process of its own."""
    processes = -(-nodes // per_process)
    row = Row("c10d", nodes, processes, limit)
    host = subprocess.Popen(
        [sys.executable, str(HERE), "c10d-host"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert host.stdout is not None
        started = json.loads(host.stdout.readline())
        commands = [
            [
                sys.executable,
                str(HERE),
                "c10d",
                f"--port={started['port']}",
                f"--run-id=bench-{nodes}",
                f"--nodes={nodes}",
                f"--first={first}",
                f"--count={count}",
                f"--join-timeout={limit + 60:g}",
            ]
            for first, count in split(nodes, processes)
        ]
        row.processes = len(commands)
        return measure(row, commands, host.pid, logdir)
    finally:
        if host.stdin is not None:
            host.stdin.close()
        try:
            host.wait(10)
        except subprocess.TimeoutExpired:
            host.kill()
            host.wait()


# -- the command line of a worker --------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description="a worker of benchmarks/rendezvous.py")
    parser.add_argument("kind", choices=["anyrdzv", "c10d", "c10d-host"])
    parser.add_argument("--endpoint", default="")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--run-id", default="bench")
    parser.add_argument("--nodes", type=int, default=0, help="N, min_nodes = max_nodes")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--join-timeout", type=float, default=600)
    parser.add_argument("--backend", default="asyncio")
    parser.add_argument("--enter-first", action="store_true", help="enter before the go")
    parser.add_argument("--store-timeout", type=float, help="EtcdStore's timeout=, s")
    args = parser.parse_args()
    raise_file_limit()
    if args.kind == "c10d-host":
        c10d_host()
    elif args.kind == "c10d":
        c10d_nodes(args)
    else:
        import anyio

        options = {"use_uvloop": True} if args.backend == "uvloop" else {}
        backend = "asyncio" if args.backend == "uvloop" else args.backend
        try:
            anyio.run(anyrdzv_nodes, args, backend=backend, backend_options=options)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
