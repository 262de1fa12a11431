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
Results: ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from anyrdzv import EtcdStore, MemoryStore, Rendezvous
from tests._support.etcd_server import EtcdServer


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
            counted,  # type: ignore[arg-type]
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
        done = ranked and not scope.cancel_called and counted.last_join is not None
        row["completion"] = max(ranked) - counted.last_join if done else None
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

    from torch.distributed import TCPStore
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

    from torch.distributed import TCPStore
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

    from torch.distributed import TCPStore

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
    parser.add_argument("--torch-worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--loss-node", help=argparse.SUPPRESS)
    parser.add_argument("--torch-node", help=argparse.SUPPRESS)
    parser.add_argument("--etcd", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--conf", choices=list(LOSS_CONFS), help=argparse.SUPPRESS)
    args = parser.parse_args()
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
        for path in args.load:
            saved = json.loads(Path(path).read_text())
            rows += [(name, row) for name, row in saved["rows"]]
            torch_rows.update({row["nodes"]: row for row in saved["torch"]})
        plot(rows, torch_rows, args.plot)


def plot(
    rows: list[tuple[str, dict[str, Any]]], torch_rows: dict[int, dict[str, Any]], path: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {}
    late: dict[str, list[tuple[int, float]]] = {}  # not done at the timeout
    named = [(f"anyrdzv, {name}", row) for name, row in rows]
    named += [("torch DynamicRendezvousHandler, c10d", row) for row in torch_rows.values()]
    for label, row in named:
        series.setdefault(label, [])
        if row["seconds"] is not None:
            series[label].append((row["nodes"], row["seconds"]))
        elif row.get("timeout"):
            late.setdefault(label, []).append((row["nodes"], row["timeout"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, points in series.items():
        points.sort()
        (line,) = ax.plot([n for n, _ in points], [t for _, t in points], marker="o", label=label)
        for n, t in late.get(label, []):
            ax.plot([n], [t], marker="^", markersize=10, color=line.get_color(), fillstyle="none")
            ax.annotate(f"not done in {t:g} s", (n, t), textcoords="offset points", xytext=(-40, 8))
    ax.set_xscale("log", base=2)
    ns = sorted({row["nodes"] for _, row in named})
    ax.set_xticks(ns, [f"{n:,}" for n in ns])
    ax.set_yscale("log")
    ax.set_xlabel("nodes (min_nodes = max_nodes), in one process")
    ax.set_ylabel("start → every node ranked (s)")
    ax.set_title("Rendezvous time against N (benchmarks/rendezvous.py)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot written to {path}")


if __name__ == "__main__":
    main()
