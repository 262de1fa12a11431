"""Real torchrun agents on the CPU (gloo on loopback), for the tests and the benchmark."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

WORKER = Path(__file__).resolve().parent / "torchrun_worker.py"
LAUNCH = Path(__file__).resolve().parent / "torchrun_launch.py"

#: A conf that notices a lost node in about 2 s and completes a first round 1 s after
#: it has min_nodes.
FAST_CONF = "keep_alive_interval=1,keep_alive_max_attempt=2,last_call_timeout=1"


class Agent:
    """One ``torchrun`` agent process, in its own process group, logging to a file
    (anyrdzv's records too).

    With ``hold``, torch is imported first, and torchrun starts once that file exists:
    :meth:`until_held` waits for the import.
    """

    def __init__(
        self,
        workdir: Path,
        name: str,
        *,
        endpoint: str,
        run_id: str,
        nnodes: str,
        nproc: int = 1,
        conf: str = FAST_CONF,
        backend: str = "anyrdzv-etcd",
        max_restarts: int = 0,
        steps: int = 1,
        pause: float = 0.0,
        until_world: int = 0,
        until_file: Path | None = None,
        fail_file: Path | None = None,
        env: dict[str, str] | None = None,
        hold: Path | None = None,
        extra: list[str] | None = None,
        worker: list[str] | None = None,
    ) -> None:
        self.name = name
        self.results = workdir / f"{name}.jsonl"
        self.log_path = workdir / f"{name}.log"
        self.results.touch()
        args = [
            sys.executable,
            str(LAUNCH),
            f"--rdzv-backend={backend}",
            f"--rdzv-endpoint={endpoint}",
            f"--rdzv-id={run_id}",
            f"--nnodes={nnodes}",
            f"--nproc-per-node={nproc}",
            f"--max-restarts={max_restarts}",
            "--monitor-interval=0.1",
            "--local-addr=127.0.0.1",
        ]
        if conf:
            args.append(f"--rdzv-conf={conf}")
        args += extra or []
        args += worker or [
            str(WORKER),
            "--steps",
            str(steps),
            "--pause",
            str(pause),
            "--until-world",
            str(until_world),
            "--until-file",
            str(until_file or ""),
            "--fail-file",
            str(fail_file or ""),
        ]
        environment = {
            **os.environ,
            "GLOO_SOCKET_IFNAME": "lo",
            "RESULTS": str(self.results),
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "LOGLEVEL": "INFO",
            "HOLD": str(hold or ""),
            **(env or {}),
        }
        self.started = time.monotonic()
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )

    def until_held(self, timeout: float = 90) -> None:
        """Wait until the held agent has imported torch and waits for its file."""
        wait_for(
            lambda: "torch imported, held" in self.log(),
            timeout,
            f"agent {self.name} imported torch",
            self,
        )

    def lines(self) -> list[dict[str, Any]]:
        """Every line the agent's workers wrote so far."""
        text = self.results.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait(self, timeout: float) -> int:
        """Wait for the agent to exit; return its exit code."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"agent {self.name} still runs after {timeout} s; its log:\n{self.log()[-6000:]}"
            ) from None

    def kill(self) -> None:
        """SIGKILL the agent and its workers (torchrun starts them in new sessions, so
        they are found by their pids in the results and by the agent's children)."""
        pids = {line["pid"] for line in self.lines()}
        pids |= _children(self.process.pid)
        for pid in [self.process.pid, *pids]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(10)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self._log.close()


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid``, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def wait_for(predicate: Any, timeout: float, what: str, *agents: Agent) -> None:
    """Poll ``predicate()`` (a test's own clock, not the code under test's) until true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {a.name}\n{a.log()[-4000:]}" for a in agents)
            raise AssertionError(f"not within {timeout} s: {what}\n{logs}")
        time.sleep(0.05)


def run_keys(endpoint: str, run_id: str, **store_options: Any) -> list[str]:
    """The keys of run ``run_id`` in etcd, read with a store of our own."""
    import anyio

    from anyrdzv import EtcdStore

    async def read() -> list[str]:
        async with EtcdStore(endpoint, **store_options) as store:
            kvs, _ = await store.get_prefix_kv(f"/anyrdzv/{run_id}/")
            return [kv.key for kv in kvs]

    return anyio.run(read)
