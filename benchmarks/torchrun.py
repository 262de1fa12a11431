"""Benchmark: torchrun on ``anyrdzv-etcd`` beside torch's own ``c10d``, on one machine.

Run by hand (not a test): ``python benchmarks/torchrun.py [--backends anyrdzv-etcd c10d]``.
It needs torch (``pip install torch==2.13.0``) and Debian's etcd-server, and starts its
own etcd on free loopback ports. Four measurements, each backend in turn, in one run:

1. **Rendezvous latency, 2 nodes.** Two processes each make the backend's handler (as
   torchrun's registry does) and say they are ready; both are told to go at once, and
   each calls ``next_rendezvous()``: the time from the go until the later one returns.
   ``--repeat`` runs it several times (medians).
2. **Node loss.** Two real ``torchrun`` agents, ``--nnodes=1:2 --max-restarts=3``, one
   gloo worker each, torch's default conf. Once both workers run in a world of 2, one
   agent is SIGKILLed with its worker: the time until the survivor's restarted worker
   runs in a world of 1. For c10d the survivor is the agent that hosts the TCPStore
   (it starts first), as in torch's own experiments: killing the host ends the job.
3. **Scale-up.** One agent runs alone under ``--nnodes=1:2``; a second one starts: the
   time from its start until both workers run in a world of 2. It includes the new
   agent's start-up and the restarted workers' (each an ``import torch``, timed
   beside it); for anyrdzv-etcd, etcd also shows when the new node joined and when
   the 2-node round completed.
4. **16 agents.** ``--agents`` (16) real ``torchrun`` agents, ``--nnodes=16
   --nproc-per-node=1``, torch's default conf, each with a trivial worker (it writes its
   start time and its environment, and exits: no ``import torch``). Every agent imports
   torch first and waits; all are let go at once (the common start): the time from
   then until the last of the 16 workers has started, and until the first; torch's log
   also tells when every agent had called ``next_rendezvous()`` and when every call had
   returned. ``--agents-only`` runs just this row, ``--agents-repeat`` runs it several times.

Results: ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests._support.etcd_server import EtcdServer, free_port
from tests._support.torchrun_agents import Agent

PROBE = """
import json, sys, time
from torch.distributed.elastic.rendezvous import RendezvousParameters
from torch.distributed.elastic.rendezvous.registry import get_rendezvous_handler
backend, endpoint, run_id = sys.argv[1:4]
params = RendezvousParameters(backend, endpoint, run_id, 2, 2, local_addr="127.0.0.1",
                              is_host=sys.argv[4], timeout=900)
handler = get_rendezvous_handler(params)
print("ready", flush=True)
sys.stdin.readline()
info = handler.next_rendezvous()
print(json.dumps({"done": time.time(), "rank": info.rank}), flush=True)
sys.stdin.readline()  # c10d's host must outlive the other node's rendezvous
handler.shutdown()
"""


def endpoint_for(backend: str, etcd: EtcdServer) -> str:
    return etcd.endpoint if backend == "anyrdzv-etcd" else f"127.0.0.1:{free_port()}"


def latency(backend: str, etcd: EtcdServer) -> float:
    """One 2-node rendezvous: seconds from the go until both hold their rank."""
    endpoint, run_id = endpoint_for(backend, etcd), f"lat-{uuid.uuid4().hex[:8]}"
    procs = []
    for is_host in ("1", "0"):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", PROBE, backend, endpoint, run_id, is_host],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
        assert procs[-1].stdout is not None
        assert procs[-1].stdout.readline().strip() == "ready"  # the host first, for c10d
    go = time.time()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    done = []
    for proc in procs:
        assert proc.stdout is not None
        done.append(json.loads(proc.stdout.readline())["done"])
    for proc in reversed(procs):  # the host last
        assert proc.stdin is not None
        proc.stdin.write("exit\n")
        proc.stdin.flush()
        proc.wait(60)
    return float(max(done) - go)


def agents_run(
    backend: str, etcd: EtcdServer, workdir: Path, timeout: float
) -> dict[str, float | None]:
    """Node loss and scale-up with real torchrun agents."""
    row: dict[str, float | None] = {}
    endpoint = endpoint_for(backend, etcd)
    common: dict[str, Any] = {
        "endpoint": endpoint,
        "nnodes": "1:2",
        "max_restarts": 3,
        "conf": "",
        "backend": backend,
        "steps": 10_000,
        "pause": 0.2,
    }

    def world_of(agent: Agent, size: str) -> bool:
        return any(line["WORLD_SIZE"] == size for line in agent.lines())

    def wait(predicate: Any, limit: float) -> float | None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if predicate():
                return time.monotonic()
            time.sleep(0.02)
        return None

    run_id = f"loss-{uuid.uuid4().hex[:8]}"
    a = Agent(workdir / "loss", "a", run_id=run_id, **common)
    if backend == "c10d":  # a hosts the TCPStore, so that the node killed is not its host
        host, port = endpoint.rsplit(":", 1)
        wait(lambda: listening(host, int(port)), timeout)
    b = Agent(workdir / "loss", "b", run_id=run_id, **common)
    try:
        both = wait(lambda: world_of(a, "2") and world_of(b, "2"), timeout)
        if both is None:
            row["loss"] = None
        else:
            seen = len(a.lines())
            b.kill()
            killed = time.monotonic()
            again = wait(lambda: any(x["WORLD_SIZE"] == "1" for x in a.lines()[seen:]), timeout)
            row["loss"] = None if again is None else again - killed
    finally:
        a.close()
        b.close()

    run_id = f"up-{uuid.uuid4().hex[:8]}"
    a = Agent(workdir / "up", "a", run_id=run_id, **common)
    late: Agent | None = None
    try:
        alone = wait(lambda: world_of(a, "1"), timeout + 40)
        if alone is None:
            row["scale_up"] = None
        else:
            late = new = Agent(workdir / "up", "b", run_id=run_id, **common)
            if backend == "anyrdzv-etcd":  # the rendezvous itself, as etcd shows it
                joined = wait(lambda: len(run_keys(endpoint, run_id, "members/")) == 2, timeout)
                formed = wait(lambda: round_of_two(endpoint, run_id), timeout)
                if joined is not None and formed is not None:
                    row["scale_up_joined"] = joined - new.started
                    row["scale_up_rendezvous"] = formed - joined
            up = wait(lambda: world_of(a, "2") and world_of(new, "2"), timeout)
            row["scale_up"] = None if up is None else up - new.started
    finally:
        a.close()
        if late is not None:
            late.close()
    return row


#: The trivial worker of the many-agents row: its start time and environment, one line.
TRIVIAL_WORKER = """
import json, os, time
started = time.monotonic()
names = ("RANK", "WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
line = {"pid": os.getpid(), "started": started, **{n: os.environ.get(n) for n in names}}
with open(os.environ["RESULTS"], "a", encoding="utf-8") as results:
    results.write(json.dumps(line) + "\\n")
"""


def many_agents(
    backend: str, etcd: EtcdServer, workdir: Path, count: int, timeout: float
) -> dict[str, Any]:
    """``count`` agents of one job, let go at once once all have imported torch: the
    time until every one of their workers has started."""
    endpoint = endpoint_for(backend, etcd)
    run_id = f"many-{uuid.uuid4().hex[:8]}"
    worker = workdir / "trivial_worker.py"
    worker.write_text(TRIVIAL_WORKER)
    hold = workdir / "go"
    row: dict[str, Any] = {"agents": count}
    agents = [
        Agent(
            workdir,
            f"agent-{i:02d}",
            endpoint=endpoint,
            run_id=run_id,
            nnodes=str(count),
            conf="",
            backend=backend,
            hold=hold,
            worker=[str(worker)],
        )
        for i in range(count)
    ]
    try:
        for agent in agents:
            agent.until_held(timeout=max(timeout, 180))
        start, wall = time.monotonic(), time.time()
        hold.touch()
        deadline = start + timeout
        while time.monotonic() < deadline and not all(agent.lines() for agent in agents):
            time.sleep(0.02)
        lines = [line for agent in agents for line in agent.lines()[:1]]
        row["started"] = len(lines)
        row["world_sizes"] = sorted({str(line["WORLD_SIZE"]) for line in lines})
        if lines:
            row["first"] = min(line["started"] for line in lines) - start
        for key, text in (("rendezvousing", RENDEZVOUSING), ("complete", COMPLETE)):
            seen = [logged_at(agent.log(), text) for agent in agents]
            if all(at is not None for at in seen):
                row[key] = max(at for at in seen if at is not None) - wall
        if len(lines) == count:
            row["all"] = max(line["started"] for line in lines) - start
        else:
            row["all"] = None
            tails = [agent.log()[-1500:] for agent in agents if not agent.lines()][:2]
            row["logs"] = tails
    finally:
        for agent in agents:
            agent.close()
    return row


#: What torch's agent logs as it calls ``next_rendezvous()``, and as it returns.
RENDEZVOUSING = "Rendezvous'ing worker group"
COMPLETE = "Rendezvous complete for workers"


def logged_at(log: str, text: str) -> float | None:
    """The time (``time.time()``) of the first line of torch's log that holds ``text``:
    its lines start with ``I1206 21:16:18.980000``, the year left out."""
    for line in log.splitlines():
        if text in line:
            stamp = line.split()[:2]
            year = time.localtime().tm_year
            parsed = time.strptime(
                f"{year}{stamp[0][1:]} {stamp[1].split('.')[0]}", "%Y%m%d %H:%M:%S"
            )
            return time.mktime(parsed) + float("0." + stamp[1].split(".")[1])
    return None


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _range(endpoint: str, key: str, prefix: bool) -> list[dict[str, Any]]:
    body: dict[str, str] = {"key": base64.b64encode(key.encode()).decode()}
    if prefix:
        end = key[:-1] + chr(ord(key[-1]) + 1)
        body["range_end"] = base64.b64encode(end.encode()).decode()
    answer = httpx.post(f"http://{endpoint}/v3/kv/range", json=body, timeout=5).json()
    kvs: list[dict[str, Any]] = answer.get("kvs", [])
    return kvs


def run_keys(endpoint: str, run_id: str, under: str) -> list[dict[str, Any]]:
    """The keys of the run under ``under``, read straight from etcd's gateway."""
    return _range(endpoint, f"/anyrdzv/{run_id}/{under}", prefix=True)


def round_of_two(endpoint: str, run_id: str) -> bool:
    """Whether the run's state shows a complete round after the first, of two nodes."""
    kvs = _range(endpoint, f"/anyrdzv/{run_id}/state", prefix=False)
    if not kvs:
        return False
    state = json.loads(base64.b64decode(kvs[0]["value"]))
    return bool(state["round"] >= 1 and state["complete"] and len(state["participants"]) == 2)


def import_time() -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import torch.distributed.run"], check=True)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["anyrdzv-etcd", "c10d"])
    parser.add_argument("--repeat", type=int, default=5, help="latency runs per backend")
    parser.add_argument("--timeout", type=float, default=90.0, help="per measurement, s")
    parser.add_argument("--skip-agents", action="store_true", help="latency only")
    parser.add_argument("--save", type=Path, help="write the results as JSON")
    parser.add_argument(
        "--agents", type=int, default=16, help="agents of the many-agents row (0: no row)"
    )
    parser.add_argument("--agents-only", action="store_true", help="the many-agents row only")
    parser.add_argument("--agents-repeat", type=int, default=1, help="runs of the many-agents row")
    args = parser.parse_args()
    results: dict[str, Any] = {"import_torch": import_time()}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "etcd").mkdir()
        etcd = EtcdServer(workdir / "etcd")
        etcd.start()
        try:
            for backend in args.backends:
                row: dict[str, Any] = {}
                if not args.agents_only:
                    row["latency"] = [latency(backend, etcd) for _ in range(args.repeat)]
                if not args.skip_agents and not args.agents_only:
                    for sub in ("loss", "up"):
                        (workdir / backend / sub).mkdir(parents=True)
                    row.update(agents_run(backend, etcd, workdir / backend, args.timeout))
                row["many"] = []
                for run in range(args.agents_repeat if args.agents else 0):
                    (workdir / backend / f"many-{run}").mkdir(parents=True)
                    row["many"].append(
                        many_agents(
                            backend,
                            etcd,
                            workdir / backend / f"many-{run}",
                            args.agents,
                            args.timeout,
                        )
                    )
                results[backend] = row
                print(backend, json.dumps(row), file=sys.stderr, flush=True)
        finally:
            etcd.stop()
    print(f"python -c 'import torch.distributed.run': {results['import_torch']:.2f} s\n")
    if not args.agents_only:
        print_rows(results, args)
    if args.agents:
        print(
            f"\n{args.agents} agents (--nnodes={args.agents} --nproc-per-node=1, a trivial "
            "worker), all let go at once after their import of torch:\n"
        )
        print(
            "| backend | go → all workers started | go → first worker started | "
            "go → every agent calls next_rendezvous() | go → every agent's returned | "
            "world size |"
        )
        print("|---|---|---|---|---|---|")
        for backend, many in ((b, m) for b in args.backends for m in results[b]["many"]):
            done = (
                f"{many['all']:.2f} s"
                if many["all"] is not None
                else f"not within {args.timeout:g} s ({many['started']} started)"
            )
            first = f"{many['first']:.2f} s" if "first" in many else "-"
            calls, returned = (
                f"{many[key]:.2f} s" if key in many else "-"
                for key in ("rendezvousing", "complete")
            )
            sizes = ", ".join(many["world_sizes"]) or "-"
            print(f"| {backend} | {done} | {first} | {calls} | {returned} | {sizes} |")
            for log in many.get("logs", []):
                print(f"\n{backend}, an agent whose worker did not start:\n{log}")
    if args.save:
        args.save.write_text(json.dumps(results, indent=2))


def print_rows(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        "| backend | 2-node rendezvous (median, min–max) | node loss → survivor runs | new node start → 2-node world |"
    )
    print("|---|---|---|---|")
    for backend in args.backends:
        row = results[backend]
        lat = row["latency"]
        cells = [f"{statistics.median(lat):.3f} s ({min(lat):.3f}–{max(lat):.3f})"]
        for key in ("loss", "scale_up"):
            value = row.get(key, "skipped")
            cells.append(
                "skipped"
                if value == "skipped"
                else f"not within {args.timeout:g} s"
                if value is None
                else f"{value:.1f} s"
            )
        print(f"| {backend} | " + " | ".join(cells) + " |")
    for backend in args.backends:
        row = results[backend]
        if "scale_up_rendezvous" in row:
            print(
                f"\n{backend} scale-up: the new node joined {row['scale_up_joined']:.1f} s after "
                f"its start (its import of torch), and the 2-node round completed "
                f"{row['scale_up_rendezvous']:.2f} s after it joined."
            )


if __name__ == "__main__":
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    main()
