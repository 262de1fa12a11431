"""The examples are real programs: run each one briefly, on each backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from tests._support import EXAMPLES
from tests._support.torchrun_agents import run_keys

BACKENDS = ["asyncio", "uvloop", "trio"]


def run_example(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_heartbeat_loop(backend: str) -> None:
    proc = run_example(
        "heartbeat_loop.py",
        "--timers",
        "3",
        "--interval",
        "0.1",
        "--duration",
        "0.55",
        "--backend",
        backend,
    )
    assert proc.returncode == 0, proc.stderr
    for node in ("node-0", "node-1", "node-2"):
        assert proc.stdout.count(f"{node}  beat #") >= 4
        assert f"  {node}: " in proc.stdout
    assert "previous lateness" in proc.stdout
    assert proc.stderr == ""


def test_heartbeat_loop_bad_interval_is_a_usage_error() -> None:
    proc = run_example("heartbeat_loop.py", "--interval", "0")
    assert proc.returncode == 2
    assert "interval must be positive and finite, got 0.0" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_heartbeat_loop_stops_cleanly_on_ctrl_c(backend: str) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "heartbeat_loop.py",
            "--interval",
            "0.05",
            "--duration",
            "60",
            "--backend",
            backend,
        ],
        cwd=EXAMPLES,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the banner: the loop is about to start
    assert "heartbeats every" in first
    assert "beat #" in proc.stdout.readline()  # it is running
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert "interrupted: stopped cleanly" in err


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_async_launcher(backend: str) -> None:
    proc = run_example(
        "async_launcher.py",
        "--rdzv-endpoint",
        "127.0.0.1:29400",
        "--rdzv-conf",
        "join_timeout=60,keep_alive_interval=0.1",
        "--rdzv-id",
        "job42",
        "--duration",
        "0.45",
        "--backend",
        backend,
    )
    assert proc.returncode == 0, proc.stderr
    assert "this node hosts the store (loopback" in proc.stdout
    assert "joined rendezvous 'job42'" in proc.stdout
    assert proc.stdout.count("keep-alive  run=job42") >= 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rdzv-endpoint", "h:99999"], "The port number of the rendezvous endpoint 'h:99999'"),
        (["--rdzv-conf", "keep_alive_interval"], "option 'keep_alive_interval' must have a value"),
        (["--rdzv-conf", "keep_alive_interval=-1"], "keep_alive_interval must be a positive"),
    ],
)
def test_async_launcher_bad_flags(args: list[str], message: str) -> None:
    proc = run_example("async_launcher.py", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_async_launcher_remote_store() -> None:
    proc = run_example(
        "async_launcher.py",
        "--rdzv-endpoint",
        "192.0.2.250",
        "--rdzv-conf",
        "keep_alive_interval=0.1",
        "--duration",
        "0.15",
    )
    assert proc.returncode == 0, proc.stderr
    assert "joins a store on another node" in proc.stdout


def test_trio_agent() -> None:
    proc = run_example("trio_agent.py", "--interval", "0.1", "--duration", "0.45")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("keep-alive") >= 3
    assert "probe #0: hosts store = True" in proc.stdout
    assert "done: " in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_membership_in_process(backend: str) -> None:
    proc = run_example(
        "membership.py",
        "--members",
        "3",
        "--interval",
        "0.25",
        "--max-missed",
        "2",
        "--kill-after",
        "0.5",
        "--backend",
        backend,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    order = [
        line.split()[1] + " " + line.split()[2]
        for line in lines
        if "JOINED" in line or "LEFT" in line or "KILL" in line or "STOP" in line
    ]
    # The members start together, so they may join in any order (trio shuffles tasks).
    assert sorted(order[:3]) == ["JOINED member-0", "JOINED member-1", "JOINED member-2"]
    assert order[3:] == ["KILL member-0", "LEFT member-0", "STOP member-2", "LEFT member-2"]
    assert "s after the kill; TTL 1 s" in proc.stdout
    assert "member-0 itself learned: heartbeat lost" in proc.stdout


@pytest.mark.slow
def test_membership_on_etcd_with_member_processes(etcd_server: Any) -> None:
    proc = run_example(
        "membership.py",
        "--etcd",
        etcd_server.endpoint,
        "--group",
        "example-test",
        "--members",
        "3",
        "--interval",
        "0.5",
        "--max-missed",
        "4",
        "--kill-after",
        "0.5",
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    assert "KILL   member-0 (SIGKILL pid" in proc.stdout
    assert "LEFT   member-0  (" in proc.stdout
    assert "LEFT   member-2" in proc.stdout
    after = float(proc.stdout.split("LEFT   member-0  (")[1].split(" s after")[0])
    assert after <= 2 + 1  # TTL + 1 s


def elastic_timeline(stdout: str) -> list[tuple[str, str, str]]:
    """The (node, KIND, text) lines of the elastic agent's timeline, in order."""
    events = []
    for line in stdout.splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) == 4 and parts[0].endswith("s") and parts[1].startswith("node-"):
            events.append((parts[1], parts[2], parts[3]))
    return events


def check_elastic_timeline(stdout: str) -> None:
    events = elastic_timeline(stdout)
    kill = [(node, kind) for node, kind, _ in events].index(("node-0", "KILL"))
    before, after = events[:kill], events[kill + 1 :]
    for rank, node in enumerate(["node-0", "node-1", "node-2"]):
        assert (
            node,
            "ROUND",
            f"round 0 complete: rank {rank} of world size 3 (node-0, node-1, node-2)",
        ) in before
        started = [text for name, kind, text in before if name == node and kind == "WORKER"]
        assert len(started) == 1
        assert started[0].endswith(f"RANK={rank} WORLD_SIZE=3 ROUND=0")
    assert all(node != "node-0" for node, _, _ in after)  # a dead node tells nothing
    for rank, node in enumerate(["node-1", "node-2"]):
        mine = [(kind, text) for name, kind, text in after if name == node]
        assert [kind for kind, _ in mine] == ["CHANGE", "STOP", "ROUND", "WORKER"]
        assert mine[0][1] in ("changes() yielded 'lost'", "changes() yielded 'new_round'")
        assert mine[1][1].endswith(" killed")
        assert mine[2][1] == f"round 1 complete: rank {rank} of world size 2 (node-1, node-2)"
        assert mine[3][1].endswith(f"RANK={rank} WORLD_SIZE=2 ROUND=1")
    assert "after the kill: changes() fired on every survivor within " in stdout


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_elastic_agent_in_process(backend: str) -> None:
    started = time.monotonic()
    proc = run_example("elastic_agent.py", "--backend", backend, timeout=20)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 nodes of run 'elastic-demo' on MemoryStore" in proc.stdout
    assert "KILL    crashed: its link to the store is dead" in proc.stdout
    check_elastic_timeline(proc.stdout)
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 20


@pytest.mark.slow
def test_elastic_agent_on_etcd_with_node_processes(etcd_server: Any) -> None:
    proc = run_example(
        "elastic_agent.py",
        "--etcd",
        etcd_server.endpoint,
        "--run-id",
        "example-elastic-agent",
        timeout=20,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "KILL    SIGKILL pid " in proc.stdout
    check_elastic_timeline(proc.stdout)
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_elastic_agent_node_leaves_at_once_on_sigterm(etcd_server: Any, backend: str) -> None:
    """SIGTERM, what Kubernetes and Slurm send, ends a node process cleanly: it kills its
    worker and leaves the run, its lease revoked, so its keys are gone at once, not after
    the lease's TTL (30 s here), and it exits 0."""
    run_id = f"sigterm-{backend}-{uuid.uuid4().hex[:8]}"
    node = [
        sys.executable,
        str(EXAMPLES / "elastic_agent.py"),
        "--etcd",
        etcd_server.endpoint,
        "--node",
        "node-0",
        "--nodes",
        "2",
        "--run-id",
        run_id,
        "--keep-alive-interval",
        "3",
        "--keep-alive-max-attempt",
        "10",
        "--last-call-timeout",
        "0.2",
        "--timeout",
        "60",
        "--backend",
        backend,
    ]
    with subprocess.Popen(node, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        worker = None
        for line in proc.stdout:  # its events, until its worker runs
            event = json.loads(line)
            if event["kind"] == "worker":
                worker = int(event["text"].split()[2])
                break
        assert worker is not None, proc.stderr.read() if proc.stderr else ""
        assert f"/anyrdzv/{run_id}/nodes/node-0" in run_keys(etcd_server.endpoint, run_id)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        out, err = proc.communicate(timeout=20)
        left = run_keys(etcd_server.endpoint, run_id)
        took = time.monotonic() - signalled
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert [json.loads(line)["kind"] for line in out.splitlines()] == ["stop"]
    assert left == []  # the last node of the run leaves no key
    assert took < 10  # well before the 30-s TTL
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)  # its worker is gone too
