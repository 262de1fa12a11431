"""Benchmark: the rendezvous of N nodes, on MemoryStore and etcd, beside torch's.

Run by hand (not a test): ``python benchmarks/rendezvous.py [--nodes 8 32 128 1024]``.
It starts its own etcd (Debian's etcd-server must be installed) on free loopback ports,
and prints two tables:

1. N ``Rendezvous`` nodes in one process, ``min_nodes = max_nodes = N`` (so the round
   completes at max, with no last call), ``keep_alive_interval`` 5 s: the time from the
   start (before the first node enters) until every ``next_rendezvous()`` has
   returned; the time from the completing condition (the store's answer to the last
   write of a join key: the N-th join is in by then) until every node holds its
   ``RendezvousInfo`` (the issue's bound: 100 ms on MemoryStore, 300 ms on local etcd);
   the store calls per node (keep-alives and watches apart), counted by wrapping the
   store; this process's CPU, and etcd's. When torch is importable, the
   same for torch's ``DynamicRendezvousHandler`` on a c10d TCPStore, with N threads in a
   child process (its CPU is that process's: the threads and the TCPStore server).
2. Node loss: 3 node processes on etcd with ``keep_alive_interval=1,
   keep_alive_max_attempt=2, last_call_timeout=1``; one is SIGKILLed once all hold round
   0, and the survivors call ``next_rendezvous()`` when ``changes()`` yields: the time
   from the kill until both hold round 1 with world size 2.

   ``--loss fast default`` runs it with torch's defaults too. With torch (``--torch-loss``)
   the same 3 nodes are torch handlers on a TCPStore; torch's handler does not notice a
   dead participant, so its survivors are told at the kill, as an agent whose workers
   failed at once would be (torch's best case).

Each row runs under ``--timeout`` (torch's under ``--torch-timeout``); a row that runs
out says how many nodes had a rank. ``--save FILE`` writes the results as JSON, and
``--plot FILE --load FILES`` draws the time against N (matplotlib, the ``bench`` extra).

``--independent`` measures nodes as a cluster runs them instead (issue 21): N nodes, each
with its own ``EtcdStore`` (its own connection, lease and watch), over ``--processes``
worker processes (by default 4 from 256 nodes on, else 2; ``benchmarks/_nodes.py``), on a
fresh local etcd per row (``--etcd-binary`` to choose it), ``min_nodes = max_nodes = N``,
on ``--backend`` (asyncio by default). Every worker opens all its stores first; then, from
a common start, every node enters its ``Rendezvous`` and calls ``next_rendezvous()``.
Per row: the time until the last node of all holds its ``RendezvousInfo``; the workers'
CPU over the round per node; etcd's CPU over the round; the watch events, bytes and
requests per node (each node's store wrapped in ``anyrdzv.testing.CountingStore``). Any
node's exception fails the row, and a row that runs past ``--limit`` says so. Beside it,
for the same N: all nodes in one process on one store (the first table's mode), and torch
c10d's ``DynamicRendezvousHandler`` as processes of ``--c10d-per-process`` nodes, each
with its own ``TCPStore`` client (N = ``--c10d-sizes``, within ``--c10d-limit``)::

    python benchmarks/rendezvous.py --independent [--sizes 64 256 1024 4096] \
        [--save FILE] [--plot docs/rendezvous.png] [--load FILES]

``--enter-first`` enters every node's ``Rendezvous`` (its lease, member key and watch)
before the start instead, so that the clock times ``next_rendezvous()`` alone;
``--repeat R`` runs each N R times (each run printed; medians beside and in the plot);
``--store-timeout S`` gives every ``EtcdStore`` ``timeout=S`` instead of its default.
With ``--independent``, each file of ``--load`` has lines of its own in the plot, named
after the file (``--sizes --c10d-sizes --plot FILE --load before.json after.json``
draws saved runs only).

Results: ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import aclosing, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))  # the checkout's own code

import _nodes

from anyrdzv import EtcdStore, MemoryStore, Rendezvous
from tests._support.etcd_server import EtcdServer

if TYPE_CHECKING:
    from collections.abc import Iterator


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CountingStore:
    """Delegates to a store, counting its calls by method name; ``watch_prefix`` (which
    opens a stream) is counted when it is called. It also notes when the store last
    acknowledged a write of a join key (``put``, or a ``txn`` that puts one): with
    ``min_nodes = max_nodes``, the last join is the completing condition."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.calls: dict[str, int] = {}
        self.last_join: float | None = None

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.store, name)
        if not callable(attribute) or name.startswith("_"):
            return attribute
        calls = self.calls

        if name in ("put", "txn"):

            async def write(*args: Any, **kwargs: Any) -> Any:
                calls[name] = calls.get(name, 0) + 1
                result = await attribute(*args, **kwargs)
                if name == "put":
                    joins = "/join/" in args[0]
                else:
                    ops = args[1] if len(args) > 1 else kwargs.get("success", ())
                    joins = result.succeeded and any(
                        "/join/" in getattr(op, "key", "") for op in ops
                    )
                if joins:
                    self.last_join = time.perf_counter()
                return result

            return write

        def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            return attribute(*args, **kwargs)

        return call


async def scale(
    store: Any, n: int, run_id: str, timeout: float, etcd_pid: int | None
) -> dict[str, Any]:
    """Rendezvous ``n`` nodes of one run, all at once, and measure it."""
    counted = CountingStore(store)
    ranked: list[float] = []
    ranks: set[int] = set()
    stop = anyio.Event()

    async def node(i: int) -> None:
        async with Rendezvous(
            counted,
            run_id,
            node=f"node-{i:05d}",
            min_nodes=n,
            max_nodes=n,
            keep_alive_interval=5,
            keep_alive_max_attempt=3,
            join_timeout=timeout + 60,
        ) as rdzv:
            info = await rdzv.next_rendezvous()
            assert info.world_size == n
            ranks.add(info.rank)
            ranked.append(time.perf_counter())
            await stop.wait()

    etcd0 = cpu_seconds(etcd_pid) if etcd_pid else None
    cpu0 = time.process_time()
    start = time.perf_counter()
    row: dict[str, Any] = {"nodes": n, "timeout": timeout}
    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(node, i)
        with anyio.move_on_after(timeout) as scope:
            while len(ranked) < n:  # noqa: ASYNC110 - benchmark bookkeeping
                await anyio.sleep(0.005)
        row["seconds"] = max(ranked) - start if ranked and not scope.cancel_called else None
        last_join = counted.last_join
        done = ranked and not scope.cancel_called and last_join is not None
        row["completion"] = max(ranked) - last_join if done and last_join is not None else None
        row["cpu"] = time.process_time() - cpu0
        row["etcd_cpu"] = cpu_seconds(etcd_pid) - etcd0 if etcd_pid and etcd0 is not None else None
        row["ranked"] = len(ranked)
        row["calls"] = dict(counted.calls)
        assert scope.cancel_called or ranks == set(range(n))
        if scope.cancel_called:
            tg.cancel_scope.cancel()
        stop.set()
    return row


def per_node(row: dict[str, Any]) -> tuple[float, float, float]:
    """Store calls per node: (requests, keep-alives, watches opened)."""
    calls = dict(row["calls"])
    keep_alives = calls.pop("keep_alive", 0)
    watches = calls.pop("watch_prefix", 0)
    n = row["nodes"]
    return sum(calls.values()) / n, keep_alives / n, watches / n


# -- torch -------------------------------------------------------------------------------


def torch_available() -> bool:
    try:
        import torch.distributed.elastic.rendezvous.dynamic_rendezvous  # noqa: F401
    except ImportError:
        return False
    return True


def torch_worker(n: int, conf: dict[str, str]) -> None:
    """In a child process: rendezvous ``n`` threads with torch's handler on one c10d
    TCPStore hosted here; print a JSON line with the time to all ranked and the CPU."""
    import threading
    from datetime import timedelta

    from torch.distributed import TCPStore  # type: ignore[attr-defined]
    from torch.distributed.elastic.rendezvous import RendezvousParameters
    from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import (
        C10dRendezvousBackend,
    )
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import create_handler

    host = TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=600))
    port = host.port
    barrier = threading.Barrier(n + 1)
    times: list[float] = []
    lock = threading.Lock()

    def node(i: int) -> None:
        store = TCPStore("127.0.0.1", port, is_master=False, timeout=timedelta(seconds=600))
        backend = C10dRendezvousBackend(store, "bench")
        params = RendezvousParameters(
            backend="c10d",
            endpoint=f"127.0.0.1:{port}",
            run_id="bench",
            min_nodes=n,
            max_nodes=n,
            local_addr="127.0.0.1",  # rank 0 hosts a TCPStore on it
            **conf,
        )
        handler = create_handler(store, backend, params)
        barrier.wait()
        info = handler.next_rendezvous()
        assert info.world_size == n
        with lock:
            times.append(time.perf_counter())

    threads = [threading.Thread(target=node, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    barrier.wait()
    cpu0 = time.process_time()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    print(
        json.dumps(
            {
                "nodes": n,
                "seconds": max(times) - start,
                "cpu": time.process_time() - cpu0,
                "ranked": len(times),
            }
        ),
        flush=True,
    )
    os._exit(0)  # the handlers' keep-alive threads would hold the process


def torch_scale(n: int, timeout: float) -> dict[str, Any]:
    command = [sys.executable, __file__, "--torch-worker", str(n)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        cpu = cpu_seconds(proc.pid)
        proc.kill()
        proc.wait()
        return {"nodes": n, "seconds": None, "cpu": cpu, "ranked": None, "timeout": timeout}
    return dict(json.loads(out.strip().splitlines()[-1]))


# -- node loss ---------------------------------------------------------------------------

#: The conf of the node-loss runs: "fast" is the issue's, "default" is torch's defaults.
LOSS_CONFS: dict[str, dict[str, float]] = {
    "fast": {"keep_alive_interval": 1, "keep_alive_max_attempt": 2, "last_call_timeout": 1},
    "default": {"keep_alive_interval": 5, "keep_alive_max_attempt": 3, "last_call_timeout": 30},
}


async def loss_node(endpoint: str, name: str, conf: dict[str, float]) -> None:
    """One node process: print a JSON line for each round it holds, and go to the next
    when ``changes()`` yields."""
    async with (
        EtcdStore(endpoint) as store,
        Rendezvous(
            store,
            "bench-loss",
            node=name,
            min_nodes=2,
            max_nodes=3,
            keep_alive_interval=conf["keep_alive_interval"],
            keep_alive_max_attempt=int(conf["keep_alive_max_attempt"]),
            last_call_timeout=conf["last_call_timeout"],
        ) as rdzv,
    ):
        while True:
            info = await rdzv.next_rendezvous()
            print(json.dumps({"node": name, "round": info.round, "world": info.world_size}))
            sys.stdout.flush()
            async with aclosing(rdzv.changes()) as changes:
                async for change in changes:
                    print(json.dumps({"node": name, "change": change}), flush=True)
                    break


def torch_loss_node(port: int, name: str, conf: dict[str, float]) -> None:
    """One torch node process on the TCPStore at ``port``: print a JSON line for each
    round it holds, and go to the next when a line comes on stdin (as an agent would
    when its workers fail: the handler itself does not tell)."""
    from datetime import timedelta

    from torch.distributed import TCPStore  # type: ignore[attr-defined]
    from torch.distributed.elastic.rendezvous import RendezvousParameters
    from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import (
        C10dRendezvousBackend,
    )
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import create_handler

    store = TCPStore("127.0.0.1", port, is_master=False, timeout=timedelta(seconds=600))
    params = RendezvousParameters(
        backend="c10d",
        endpoint=f"127.0.0.1:{port}",
        run_id="bench-loss",
        min_nodes=2,
        max_nodes=3,
        local_addr="127.0.0.1",
        **{key: str(value) for key, value in conf.items()},
    )
    handler = create_handler(store, C10dRendezvousBackend(store, "bench-loss"), params)
    round_ = 0
    while True:
        info = handler.next_rendezvous()
        print(json.dumps({"node": name, "round": round_, "world": info.world_size}), flush=True)
        if not sys.stdin.readline():
            os._exit(0)
        print(json.dumps({"node": name, "change": "told by the parent"}), flush=True)
        round_ += 1


async def node_loss(
    commands: dict[str, list[str]], timeout: float, tell: bool = False
) -> dict[str, Any]:
    """Start the node processes, SIGKILL the first once all hold round 0, and time the
    survivors' round 1. With ``tell``, the survivors get a line on stdin at the kill."""
    events: list[tuple[float, dict[str, Any]]] = []
    procs: dict[str, anyio.abc.Process] = {}

    async def relay(proc: anyio.abc.Process) -> None:
        assert proc.stdout is not None
        lines = BufferedByteReceiveStream(proc.stdout)
        while True:
            try:
                line = await lines.receive_until(b"\n", 10_000)
            except (anyio.EndOfStream, anyio.IncompleteRead):
                return
            events.append((time.perf_counter(), json.loads(line)))

    def rounds(round_: int) -> dict[str, tuple[float, int]]:
        return {e["node"]: (t, e["world"]) for t, e in events if e.get("round") == round_}

    result: dict[str, Any] = {}
    try:
        async with anyio.create_task_group() as tg:
            for name, command in commands.items():
                procs[name] = await anyio.open_process(
                    command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None
                )
                tg.start_soon(relay, procs[name])
            with anyio.fail_after(timeout):
                while len(rounds(0)) < len(commands):  # noqa: ASYNC110 - benchmark bookkeeping
                    await anyio.sleep(0.01)
            await anyio.sleep(0.5)
            victim, *survivors = commands
            killed = time.perf_counter()
            procs[victim].send_signal(signal.SIGKILL)
            if tell:
                for name in survivors:
                    stdin = procs[name].stdin
                    assert stdin is not None
                    await stdin.send(b"go\n")
            with anyio.move_on_after(timeout):
                while len(rounds(1)) < len(survivors):  # noqa: ASYNC110 - benchmark bookkeeping
                    await anyio.sleep(0.01)
            changes = [(t - killed, e["node"], e["change"]) for t, e in events if "change" in e]
            result = {
                "victim": victim,
                "changes": changes,
                "round1": {n: (t - killed, w) for n, (t, w) in rounds(1).items()},
            }
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            for proc in procs.values():
                if proc.returncode is None:
                    proc.send_signal(signal.SIGINT)
            with anyio.move_on_after(5):
                for proc in procs.values():
                    await proc.wait()
            for proc in procs.values():
                if proc.returncode is None:
                    proc.kill()
                await proc.aclose()
    return result


def anyrdzv_loss(endpoint: str, conf_name: str, timeout: float) -> dict[str, Any]:
    command = [sys.executable, __file__, "--etcd", endpoint, "--conf", conf_name]
    commands = {name: [*command, "--loss-node", name] for name in ("node-a", "node-b", "node-c")}
    return anyio.run(node_loss, commands, timeout)


def torch_loss(conf_name: str, timeout: float) -> dict[str, Any]:
    from datetime import timedelta

    from torch.distributed import TCPStore  # type: ignore[attr-defined]

    host = TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=600))
    command = [sys.executable, __file__, "--port", str(host.port), "--conf", conf_name]
    commands = {name: [*command, "--torch-node", name] for name in ("node-a", "node-b", "node-c")}
    return anyio.run(node_loss, commands, timeout, True)


# -- the report --------------------------------------------------------------------------


def _seconds(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    if row["seconds"] is None:
        ranked = "?" if row.get("ranked") is None else f"{row['ranked']:,}"
        return f"timed out ({ranked} ranked)"
    return f"{row['seconds']:.2f}"


def print_scale(
    rows: list[tuple[str, dict[str, Any]]], torch_rows: dict[int, dict[str, Any]]
) -> None:
    header = (
        "store",
        "nodes",
        "start → all ranked s",
        "last join → all ranked ms",
        "requests / node",
        "keep-alives / node",
        "watches / node",
        "CPU s (this process)",
        "etcd CPU s",
        "torch c10d s",
        "torch CPU s",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, row in rows:
        requests, keep_alives, watches = per_node(row)
        torch_row = torch_rows.get(row["nodes"])
        etcd_cpu = "-" if row["etcd_cpu"] is None else f"{row['etcd_cpu']:.2f}"
        completion = row.get("completion")
        completion_ms = "-" if completion is None else f"{completion * 1000:.0f}"
        print(
            f"| {name} | {row['nodes']:,} | {_seconds(row)} | {completion_ms} | {requests:.1f} | "
            f"{keep_alives:.2f} | {watches:.2f} | {row['cpu']:.2f} | {etcd_cpu} | "
            f"{_seconds(torch_row)} | "
            f"{'-' if torch_row is None else format(torch_row['cpu'], '.1f')} |"
        )
    print()
    for name, row in rows:
        calls = ", ".join(f"{k} {v / row['nodes']:.2f}" for k, v in sorted(row["calls"].items()))
        print(f"{name}, {row['nodes']:,} nodes, calls per node: {calls}")
    print()


def print_loss(runs: list[tuple[str, str, dict[str, Any]]]) -> None:
    print("node loss: 3 node processes (min_nodes 2, max_nodes 3), the first SIGKILLed\n")
    for name, conf_name, result in runs:
        conf = ",".join(f"{k}={v:g}" for k, v in LOSS_CONFS[conf_name].items())
        print(f"{name}, {conf}:\n")
        print("| s after the kill | node | event |")
        print("|---|---|---|")
        lines = [(t, n, f"changes() yields {c!r}") for t, n, c in result.get("changes", [])]
        if name.startswith("torch"):
            lines = [(t, n, "told (by the parent, at the kill)") for t, n, _ in lines]
        lines += [
            (t, n, f"round 1 complete, world size {w}")
            for n, (t, w) in result.get("round1", {}).items()
        ]
        for t, n, text in sorted(lines):
            print(f"| {t:.2f} | {n} | {text} |")
        print()
    print("| rendezvous | conf | kill → both survivors in round 1 s | world sizes |")
    print("|---|---|---|---|")
    for name, conf_name, result in runs:
        round1 = result.get("round1", {})
        done = (
            f"{max(t for t, _ in round1.values()):.2f}"
            if len(round1) == 2
            else "not within the timeout"
        )
        sizes = ", ".join(str(w) for _, w in round1.values()) or "-"
        print(f"| {name} | {conf_name} | {done} | {sizes} |")
    print()


# -- independent nodes (issue 21) --------------------------------------------------------


@contextmanager
def fresh_etcd(tmp: Path) -> Iterator[EtcdServer]:
    """A local etcd on a fresh data dir, for one row."""
    server = EtcdServer(Path(tempfile.mkdtemp(dir=tmp)))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def use_etcd_binary(binary: str, tmp: Path) -> None:
    """Make ``binary`` the ``etcd`` on PATH, for the test support's EtcdServer."""
    found = shutil.which(binary)
    if found is None:
        raise SystemExit(f"--etcd-binary: {binary!r} is not an executable")
    bindir = tmp / "bin"
    bindir.mkdir()
    (bindir / "etcd").symlink_to(Path(found).resolve())
    os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ['PATH']}"


def etcd_version() -> str:
    binary = shutil.which("etcd")
    if binary is None:
        return "no etcd on PATH"
    out = subprocess.run([binary, "--version"], check=False, capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else binary


def code_version() -> str:
    import anyrdzv

    where = Path(anyrdzv.__file__).resolve().parent.parent.parent
    commit = subprocess.run(
        ["git", "-C", str(where), "log", "-1", "--format=%h %s"],
        check=False,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{where} at {commit[:80] or '?'}"


async def in_process(
    n: int, endpoint: str, etcd_pid: int, timeout: float, store_timeout: float | None
) -> dict[str, Any]:
    """All ``n`` nodes in this process on one ``EtcdStore`` (the first table's mode)."""
    try:
        store = (
            EtcdStore(endpoint) if not store_timeout else EtcdStore(endpoint, timeout=store_timeout)
        )
        async with store:
            return await scale(store, n, f"bench-{n}", timeout, etcd_pid)
    except Exception as exc:  # noqa: BLE001 - any node's error fails the row
        return {"nodes": n, "seconds": None, "timeout": timeout, "error": _nodes.describe(exc)}


def _ms(value: float | None, n: int) -> str:
    return "-" if value is None else f"{value / n * 1000:.1f}"


def _s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _spread(values: list[int]) -> str:
    """Per node: the mean, and the largest in brackets."""
    if not values:
        return "-"
    return f"{sum(values) / len(values):,.1f} ({max(values):,})"


def _outcome(row: _nodes.Row) -> str:
    if row.seconds is not None:
        return f"**{row.seconds:.2f}**"
    if row.outcome == "limit" and not row.failed:
        return f"not done in {row.limit:g} s ({row.ranked:,} of {row.nodes:,} ranked)"
    if row.outcome in ("not ready", "crashed"):
        return f"**{row.outcome}**: {row.note.splitlines()[0] if row.note else ''}"
    return f"**failed**: {row.ranked:,} of {row.nodes:,} ranked, {row.failed:,} failed"


def print_rows(rows: list[_nodes.Row]) -> None:
    """The independent table."""
    print(
        "start (all stores open) → every node ranked: min_nodes = max_nodes = N, one "
        "EtcdStore per node, over P processes; at the start each node enters its Rendezvous "
        "(unless --enter-first) and calls next_rendezvous()\n"
    )
    header = (
        "N",
        "P",
        "all ranked s",
        "all entered s",
        "client CPU / node ms",
        "etcd CPU s",
        "watch events / node (max)",
        "bytes / node (max)",
        "requests / node (max)",
        "keep-alives / node",
        "stores open s",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        keep_alives = "-" if not row.events else f"{row.keep_alives / row.nodes:.2f}"
        print(
            f"| {row.nodes:,} | {row.processes} | {_outcome(row)} | "
            f"{'before the go' if row.enter_first else _s(row.entered)} | "
            f"{_ms(row.client_cpu, row.nodes)} | {_s(row.store_cpu)} | {_spread(row.events)} | "
            f"{_spread(row.bytes)} | {_spread(row.requests)} | {keep_alives} | "
            f"{_s(row.opened, 1)} |"
        )
    print()


def median_of(runs: list[Any]) -> Any:
    """The median run by its time (a run that did not finish counts as the longest); of
    an even number, the lower of the middle two."""

    def seconds(run: Any) -> float:
        value = run.seconds if isinstance(run, _nodes.Row) else run.get("seconds")
        return math.inf if value is None else float(value)

    return sorted(runs, key=seconds)[(len(runs) - 1) // 2]


def print_independent(
    rows: list[_nodes.Row],
    in_rows: dict[int, list[dict[str, Any]]],
    c10d: dict[int, list[_nodes.Row]],
) -> None:
    if rows:
        print_rows(rows)
    for row in rows + [run for runs in c10d.values() for run in runs]:
        for error, count in list(row.errors.items())[:5]:
            print(f"{row.mode} N={row.nodes:,}: {count:,} × {error}")
        if len(row.errors) > 5:
            print(f"{row.mode} N={row.nodes:,}: and {len(row.errors) - 5} other errors")
        if row.note:
            print(f"{row.mode} N={row.nodes:,}: {row.note}")
        if row.open_retries:
            print(f"{row.mode} N={row.nodes:,}: {row.open_retries:,} stores opened at a retry")
    counts = Counter(row.nodes for row in rows)
    repeated = any(n > 1 for n in counts.values()) or any(len(r) > 1 for r in c10d.values())
    print("\nthe same N, other modes" + (" (the median run of each)" if repeated else "") + "\n")
    beside = (
        "N",
        "independent s",
        "in one process, one EtcdStore s",
        "in one process: CPU / node ms",
        "in one process: etcd CPU s",
        "torch c10d s",
        "c10d processes",
        "c10d client CPU / node ms",
        "c10d TCPStore host CPU s",
    )
    print("| " + " | ".join(beside) + " |")
    print("|" + "---|" * len(beside))
    sizes = sorted({row.nodes for row in rows} | set(in_rows) | set(c10d))
    for n in sizes:
        runs = [row for row in rows if row.nodes == n]
        ind = median_of(runs) if runs else None
        inp = median_of(in_rows[n]) if in_rows.get(n) else None
        tc = median_of(c10d[n]) if c10d.get(n) else None
        cells = [
            f"{n:,}",
            "-" if ind is None else _outcome(ind),
            "-" if inp is None else inp.get("error") or _seconds(inp),
            "-" if inp is None or "cpu" not in inp else _ms(inp["cpu"], n),
            "-" if inp is None else _s(inp.get("etcd_cpu")),
            "-" if tc is None else _outcome(tc),
            "-" if tc is None else str(tc.processes),
            "-" if tc is None else _ms(tc.client_cpu, n),
            "-" if tc is None else _s(tc.store_cpu),
        ]
        print("| " + " | ".join(cells) + " |")
    print()


def independent(args: argparse.Namespace) -> None:
    """The ``--independent`` tables: see the module's docstring."""
    limit = _nodes.raise_file_limit()  # etcd inherits it: it holds every node's sockets
    rows: list[_nodes.Row] = []
    in_rows: dict[int, list[dict[str, Any]]] = {}
    c10d: dict[int, list[_nodes.Row]] = {}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if args.etcd_binary:
            use_etcd_binary(args.etcd_binary, tmp)
        timeout = f"{args.store_timeout:g} s" if args.store_timeout else "its default"
        print(
            f"code: {code_version()}\n{etcd_version()}; backend {args.backend}; "
            f"open files limit {limit:,}; EtcdStore timeout {timeout}\n"
        )
        for n in [n for n in args.sizes for _ in range(args.repeat)]:
            processes = args.processes or (4 if n >= 256 else 2)
            logdir = Path(tempfile.mkdtemp(dir=tmp))
            with fresh_etcd(tmp) as server:
                assert server.process is not None
                row = _nodes.run_independent(
                    n,
                    processes,
                    endpoint=server.endpoint,
                    etcd_pid=server.process.pid,
                    limit=args.limit,
                    backend=args.backend,
                    enter_first=args.enter_first,
                    store_timeout=args.store_timeout,
                    logdir=logdir,
                )
            rows.append(row)
            print(f"independent {n}: {_outcome(row)}", file=sys.stderr, flush=True)
            if not args.no_in_process:
                with fresh_etcd(tmp) as server:
                    assert server.process is not None
                    pid, endpoint = server.process.pid, server.endpoint
                    in_rows.setdefault(n, []).append(
                        anyio.run(
                            in_process,
                            n,
                            endpoint,
                            pid,
                            args.limit,
                            args.store_timeout,
                            backend="asyncio" if args.backend == "uvloop" else args.backend,
                            backend_options={"use_uvloop": True}
                            if args.backend == "uvloop"
                            else {},
                        )
                    )
                print(
                    f"in one process {n}: {_seconds(in_rows[n][-1])}", file=sys.stderr, flush=True
                )
        if args.c10d_sizes and not torch_available():
            print("torch is not importable: no c10d rows\n")
        elif args.c10d_sizes:
            for n in [n for n in args.c10d_sizes for _ in range(args.repeat)]:
                logdir = Path(tempfile.mkdtemp(dir=tmp))
                row = _nodes.run_c10d(
                    n, args.c10d_per_process, limit=args.c10d_limit, logdir=logdir
                )
                c10d.setdefault(n, []).append(row)
                print(f"c10d {n}: {_outcome(row)}", file=sys.stderr, flush=True)
    print_independent(rows, in_rows, c10d)
    saved = {
        "independent": [asdict(row) for row in rows],
        "in_process": [run for runs in in_rows.values() for run in runs],
        "c10d": [asdict(run) for runs in c10d.values() for run in runs],
    }
    if args.save:
        Path(args.save).write_text(json.dumps(saved))
    if args.plot:
        # Each file's lines apart, named after it: --load before.json after.json.
        mine = rows or in_rows or c10d
        series = {
            (f"{label} (this run)" if args.load else label): points
            for label, points in (independent_series(saved).items() if mine else [])
        }
        for path in args.load:
            saved_run = json.loads(Path(path).read_text())
            for label, points in independent_series(saved_run).items():
                series[f"{label} ({Path(path).stem})"] = points
        plot(series, args.plot)


def independent_series(saved: dict[str, Any]) -> dict[str, list[Point]]:
    """The plot's lines from saved results, of either table."""
    series: dict[str, list[Point]] = {}

    def add(label: str, point: Point | None) -> None:
        if point is not None:
            series.setdefault(label, []).append(point)

    for raw in saved.get("independent", []):
        row = _nodes.Row(**raw)
        add("anyrdzv, one EtcdStore per node (2-4 processes)", row_point(row))
    for row in saved.get("c10d", []):
        row = _nodes.Row(**row)
        add("torch c10d, processes of a few nodes, a TCPStore client each", row_point(row))
    for raw in saved.get("in_process", []):
        add("anyrdzv, all nodes in one process on one EtcdStore", dict_point(raw))
    for name, raw in saved.get("rows", []):
        label = "anyrdzv, all nodes in one process on one " + (
            "EtcdStore" if name.startswith("etcd") else name
        )
        add(label, dict_point(raw))
    for raw in saved.get("torch", []):
        add("torch c10d, threads in one process", dict_point(raw))
    return series


def row_point(row: _nodes.Row) -> Point | None:
    """The row's point: None if it never started (its stores did not open)."""
    if row.seconds is not None:
        return (row.nodes, row.seconds, "")
    if row.stopped is None:
        return None
    if row.outcome == "limit" and not row.failed:
        return (row.nodes, row.stopped, f"not done in {row.limit:g} s")
    return (row.nodes, row.stopped, f"failed ({row.ranked:,} of {row.nodes:,} ranked)")


def dict_point(row: dict[str, Any]) -> Point:
    if row.get("seconds") is not None:
        return (row["nodes"], row["seconds"], "")
    return (row["nodes"], row.get("timeout") or 0.0, f"not done in {row.get('timeout', 0):g} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="*", default=[8, 32, 128, 1024])
    parser.add_argument("--torch-nodes", type=int, nargs="*", default=[8, 32, 128])
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a row may take")
    parser.add_argument("--no-memory", action="store_true", help="leave MemoryStore out")
    parser.add_argument(
        "--loss", nargs="*", choices=list(LOSS_CONFS), default=["fast"], help="node-loss confs"
    )
    parser.add_argument(
        "--torch-loss",
        nargs="*",
        choices=list(LOSS_CONFS),
        default=["fast"],
        help="node-loss confs for torch",
    )
    parser.add_argument("--torch-timeout", type=float, default=300.0, help="the same for torch")
    parser.add_argument("--save", metavar="FILE", help="write the results as JSON")
    parser.add_argument(
        "--plot", metavar="FILE", help="draw the time against N, with the rows of --load"
    )
    parser.add_argument("--load", metavar="FILE", nargs="*", default=[], help="saved results")
    parser.add_argument(
        "--independent",
        action="store_true",
        help="N nodes each with its own EtcdStore, over processes (issue 21), beside the "
        "in-process mode and torch c10d as processes",
    )
    parser.add_argument(
        "--sizes", type=int, nargs="*", default=[64, 256, 1024, 4096], help="N, independent"
    )
    parser.add_argument(
        "--processes", type=int, help="worker processes (default: 4 from 256 nodes, else 2)"
    )
    parser.add_argument(
        "--backend", choices=["asyncio", "uvloop", "trio"], default="asyncio", help="event loop"
    )
    parser.add_argument(
        "--limit", type=float, default=120.0, help="seconds an anyrdzv row may take"
    )
    parser.add_argument("--etcd-binary", help="the etcd to start (default: etcd on PATH)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each N (tables: every run, and medians)"
    )
    parser.add_argument(
        "--enter-first",
        action="store_true",
        help="independent nodes enter their Rendezvous before the go (lease, member key and "
        "watch off the clock): the clock then times next_rendezvous() alone",
    )
    parser.add_argument(
        "--store-timeout",
        type=float,
        help="the EtcdStores' timeout= (default: EtcdStore's own, 5 s)",
    )
    parser.add_argument(
        "--no-in-process", action="store_true", help="leave the in-process rows out"
    )
    parser.add_argument("--c10d-sizes", type=int, nargs="*", default=[64, 128], help="N, c10d")
    parser.add_argument("--c10d-per-process", type=int, default=8, help="c10d nodes a process")
    parser.add_argument(
        "--c10d-limit", type=float, default=300.0, help="seconds a c10d row may take"
    )
    parser.add_argument("--torch-worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--loss-node", help=argparse.SUPPRESS)
    parser.add_argument("--torch-node", help=argparse.SUPPRESS)
    parser.add_argument("--etcd", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--conf", choices=list(LOSS_CONFS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.independent:
        independent(args)
        return
    if args.torch_worker:
        torch_worker(args.torch_worker, {})
        return
    if args.loss_node:
        try:
            anyio.run(loss_node, args.etcd, args.loss_node, LOSS_CONFS[args.conf])
        except KeyboardInterrupt:
            pass
        return
    if args.torch_node:
        try:
            torch_loss_node(args.port, args.torch_node, LOSS_CONFS[args.conf])
        except KeyboardInterrupt:
            pass
        return

    rows: list[tuple[str, dict[str, Any]]] = []
    loss: list[tuple[str, str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = EtcdServer(Path(tmp))
        server.start()
        assert server.process is not None
        etcd_pid = server.process.pid
        try:

            async def on_etcd(n: int) -> dict[str, Any]:
                async with EtcdStore(server.endpoint) as store:
                    return await scale(store, n, f"bench-{n}", args.timeout, etcd_pid)

            for n in args.nodes:
                if not args.no_memory:
                    row = anyio.run(scale, MemoryStore(), n, f"bench-{n}", args.timeout, None)
                    rows.append(("MemoryStore", row))
                    print(f"MemoryStore {n}: {_seconds(row)}", file=sys.stderr)
                rows.append(("etcd 3.4 (local)", anyio.run(on_etcd, n)))
                print(f"etcd {n}: {_seconds(rows[-1][1])}", file=sys.stderr)
            for conf_name in args.loss:
                result = anyrdzv_loss(server.endpoint, conf_name, 120.0)
                loss.append(("anyrdzv on etcd", conf_name, result))
                print(f"anyrdzv loss {conf_name}: {result.get('round1')}", file=sys.stderr)
        finally:
            server.stop()
    torch_rows: dict[int, dict[str, Any]] = {}
    if torch_available():
        for n in args.torch_nodes:
            torch_rows[n] = torch_scale(n, args.torch_timeout)
            print(f"torch {n}: {_seconds(torch_rows[n])}", file=sys.stderr)
        for conf_name in args.torch_loss:
            result = torch_loss(conf_name, 120.0)
            loss.append(("torch c10d", conf_name, result))
            print(f"torch loss {conf_name}: {result.get('round1')}", file=sys.stderr)
    else:
        print("torch is not importable: its columns are empty\n")
    if rows:
        print(
            "start → every node ranked: min_nodes = max_nodes = N, keep_alive_interval 5 s, "
            "all nodes in one process\n"
        )
        print_scale(rows, torch_rows)
    if loss:
        print_loss(loss)
    if args.save:
        saved = {"rows": rows, "torch": list(torch_rows.values()), "loss": loss}
        Path(args.save).write_text(json.dumps(saved))
    if args.plot:
        series = independent_series({"rows": rows, "torch": list(torch_rows.values())})
        for path in args.load:
            for label, points in independent_series(json.loads(Path(path).read_text())).items():
                series.setdefault(label, []).extend(points)
        plot(series, args.plot)


#: One point of the plot: nodes, seconds, and what went wrong ("" if all were ranked; the
#: seconds are then those it ran for).
Point = tuple[int, float, str]


def median_of_points(points: list[Point]) -> Point:
    """The median of one N's points, a failed one counting as the longest."""
    return sorted(points, key=lambda p: (bool(p[2]), p[1]))[(len(points) - 1) // 2]


def plot(series: dict[str, list[Point]], path: str) -> None:
    """Draw the time to every node ranked against N, log-log, a line per mode; a row
    that failed or ran out of time is a hollow marker at the time it ran, with a note."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    sizes: set[int] = set()
    notes: list[tuple[int, float, str, Any]] = []  # N, time, note, colour
    for label, all_points in series.items():
        points = [
            median_of_points([p for p in all_points if p[0] == n])
            for n in sorted({p[0] for p in all_points})
        ]
        done = [(n, t) for n, t, note in points if not note]
        sizes.update(n for n, _, _ in points)
        (line,) = ax.plot([n for n, _ in done], [t for _, t in done], marker="o", label=label)
        for n, t, note in points:
            if note:
                marker = "^" if note.startswith("not done") else "X"
                ax.plot(
                    [n],
                    [t],
                    marker=marker,
                    markersize=10,
                    color=line.get_color(),
                    fillstyle="none",
                    linestyle="none",
                )
                notes.append((n, t, note, line.get_color()))
    for n in {n for n, _, _, _ in notes}:  # stacked above the highest marker at n
        here = [(t, note, color) for m, t, note, color in notes if m == n]
        top = max(t for t, _, _ in here)
        for k, (_, note, color) in enumerate(here):
            ax.annotate(
                note,
                (n, top),
                textcoords="offset points",
                xytext=(-50, 8 + 11 * k),
                fontsize=8,
                color=color,
            )
    ax.set_xscale("log", base=2)
    ns = sorted(sizes)
    ax.set_xticks(ns, [f"{n:,}" for n in ns])
    ax.set_yscale("log")
    ax.margins(x=0.08, y=0.15)  # room for the notes
    ax.set_xlabel("nodes N (min_nodes = max_nodes = N)")
    ax.set_ylabel("start → every node ranked (s)")
    ax.set_title("Rendezvous time against N, one local etcd, 2 cores (benchmarks/rendezvous.py)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot written to {path}")


if __name__ == "__main__":
    main()
