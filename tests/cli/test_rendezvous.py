"""``anyrdzv rendezvous``: real Rendezvous nodes on etcd, shown by the command line."""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from anyrdzv import EtcdStore, Put, Rendezvous, RendezvousClosed, RendezvousInfo
from anyrdzv._rendezvous import _rules as rules
from anyrdzv._rendezvous._report import RunReport, read_run
from tests._support.cli import (
    assert_one_line_error,
    cli_command,
    environment,
    run_cli,
    start_cli,
)

if TYPE_CHECKING:
    from collections.abc import Callable

#: The nodes' lease TTL: keep_alive_interval × keep_alive_max_attempt, as etcd counts it.
TTL = 3
OPTIONS: dict[str, Any] = {
    "min_nodes": 2,
    "max_nodes": 3,
    "last_call_timeout": 0.3,
    "keep_alive_interval": 1,
    "keep_alive_max_attempt": TTL,
    "join_timeout": 20,
    "close_timeout": 5,
}


@pytest.fixture
def run_id() -> str:
    """A run id no other test uses: the etcd store is shared."""
    return f"run-{uuid.uuid4().hex[:12]}"


def rendezvous_args(etcd: str, run_id: str, *args: str) -> list[str]:
    """``anyrdzv rendezvous`` on run ``run_id``."""
    return ["rendezvous", "--etcd", etcd, "--run-id", run_id, *args]


async def show(etcd: str, run_id: str) -> tuple[str, dict[str, Any]]:
    """The command's text and JSON reports, run side by side, without blocking the
    nodes' event loop."""
    done: dict[bool, str] = {}

    async def one(as_json: bool) -> None:
        args = rendezvous_args(etcd, run_id, *(["--json"] if as_json else []))
        proc = await anyio.run_process(cli_command(*args), env=environment())
        assert not proc.stderr
        done[as_json] = proc.stdout.decode()

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, False)
        tg.start_soon(one, True)
    return done[False], json.loads(done[True])


async def until(store: EtcdStore, run_id: str, predicate: Callable[[RunReport], bool]) -> RunReport:
    """Read the run until ``predicate`` holds of its report."""
    with anyio.fail_after(10):
        while True:
            report = await read_run(store, run_id)
            if predicate(report):
                return report
            await anyio.sleep(0.05)


def ttl_of(line: str) -> int:
    """The TTL in a line that ends ``lease TTL <n> s``."""
    assert line.endswith(" s"), line
    return int(line.split()[-2])


@pytest.mark.anyio
async def test_a_run_from_open_round_to_closed(etcd_server: Any, run_id: str) -> None:
    etcd: str = etcd_server.endpoint
    infos: dict[str, RendezvousInfo] = {}
    both = anyio.Event()

    async def rendezvous(node: Rendezvous) -> None:
        infos[node.node] = await node.next_rendezvous()
        if len(infos) == 2:
            both.set()

    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(EtcdStore(etcd))
        tg = await stack.enter_async_context(anyio.create_task_group())
        a = await stack.enter_async_context(Rendezvous(store, run_id, node="a", **OPTIONS))
        tg.start_soon(rendezvous, a)
        await until(store, run_id, lambda r: len(r.joined) == 1)

        # An open round: one node joined, one short of min_nodes.
        text, record = await show(etcd, run_id)
        lines = text.splitlines()
        assert lines[0].endswith("round 0, open, not closed; min_nodes 2, max_nodes 3")
        assert lines[0].startswith(f"run {run_id!r} at revision ")
        assert lines[1] == "joined round 0, waiting for it to complete: 1 node(s), min_nodes 2"
        assert lines[2].startswith("  a  lease TTL ")
        assert 0 < ttl_of(lines[2]) <= TTL
        assert len(lines) == 3
        assert record["state"] == {
            "round": 0,
            "complete": False,
            "closed": False,
            "min_nodes": 2,
            "max_nodes": 3,
        }
        assert (record["previous"], record["coordinator"]) == (None, "a")
        assert record["participants"] == []
        assert [(n["node"], n["round"], n["alive"]) for n in record["joined"]] == [("a", 0, True)]
        assert record["waiting"] == []
        assert record["others"] == []

        # A complete round: the last call passes with two nodes.
        b = await stack.enter_async_context(Rendezvous(store, run_id, node="b", **OPTIONS))
        tg.start_soon(rendezvous, b)
        await until(store, run_id, lambda r: r.complete)
        with anyio.fail_after(5):
            await both.wait()
        assert infos["a"].participants == ("a", "b")
        text, record = await show(etcd, run_id)
        lines = text.splitlines()
        assert lines[0].endswith("round 0, complete, not closed; min_nodes 2, max_nodes 3")
        assert lines[1] == "participants of round 0 (2):"
        assert lines[2].startswith("  rank 0  a  lease TTL ")
        assert lines[3].startswith("  rank 1  b  lease TTL ")
        assert all(0 < ttl_of(line) <= TTL for line in lines[2:4])
        assert (
            lines[4] == "waiting for round 1: 0 node(s) joined it, 0 counted by num_nodes_waiting()"
        )
        assert len(lines) == 5
        assert [(p["rank"], p["node"]) for p in record["participants"]] == [(0, "a"), (1, "b")]
        assert all(0 < p["ttl"] <= TTL for p in record["participants"])
        assert record["state"]["complete"] is True
        assert record["waiting"] == []
        assert record["num_nodes_waiting"] == 0

        # A late node waits for the next round, and the participants count it.
        c = await stack.enter_async_context(Rendezvous(store, run_id, node="c", **OPTIONS))

        async def late() -> None:
            with pytest.raises(RendezvousClosed):
                await c.next_rendezvous()

        tg.start_soon(late)
        await until(store, run_id, lambda r: len(r.waiting) == 1)
        with anyio.fail_after(5):  # the coordinator counts it in the state, at once
            while await a.num_nodes_waiting() != 1:  # noqa: ASYNC110 - no event to wait on
                await anyio.sleep(0.01)
        text, record = await show(etcd, run_id)
        lines = text.splitlines()
        assert (
            lines[4] == "waiting for round 1: 1 node(s) joined it, 1 counted by num_nodes_waiting()"
        )
        assert lines[5].startswith("  c  lease TTL ")
        assert 0 < ttl_of(lines[5]) <= TTL
        assert [(n["node"], n["round"]) for n in record["waiting"]] == [("c", 1)]
        assert record["num_nodes_waiting"] == 1
        assert [p["node"] for p in record["participants"]] == ["a", "b"]

        # Closed.
        await a.set_closed()
        text, record = await show(etcd, run_id)
        assert text.splitlines()[0].endswith("round 0, complete, CLOSED; min_nodes 2, max_nodes 3")
        assert record["state"]["closed"] is True

    # Every node left: the run's keys are gone.
    text, record = await show(etcd, run_id)
    assert (
        text
        == f"run {run_id!r} at revision {record['revision']}: no state (no key under /anyrdzv/{run_id}/)\n"
    )
    assert record["keys"] == 0
    assert record["state"] is None


def test_no_state(etcd_server: Any, run_id: str) -> None:
    proc = run_cli("rendezvous", "--etcd", etcd_server.endpoint, "--run-id", run_id)
    assert proc.returncode == 0, proc.stderr
    assert f"no state (no key under /anyrdzv/{run_id}/)" in proc.stdout
    assert not proc.stderr


def test_malformed_state(etcd_server: Any, run_id: str) -> None:
    async def put() -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            await store.put(f"/elsewhere/{run_id}/state", b"\x80 not JSON " * 50)

    anyio.run(put)
    args = ["rendezvous", "--etcd", etcd_server.endpoint, "--run-id", run_id]
    proc = run_cli(*args, "--prefix", "/elsewhere/", "--json")
    assert proc.returncode == 1
    assert not proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"anyrdzv rendezvous: error: run {run_id!r}: key ")
    assert f"/elsewhere/{run_id}/state" in lines[0]
    assert "holds a malformed value (not a JSON document)" in lines[0]
    assert len(lines[0]) < 600


def test_watch_prints_a_report_on_every_change(etcd_server: Any, run_id: str) -> None:
    state = rules.RunState(4, True, False, 1, 2, size=1)
    key = f"/anyrdzv/{run_id}/state"
    record = rules.encode_record(rules.Record(4, ("x",)))

    async def write(value: bytes | None) -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            if value is None:
                await store.delete_prefix(key)
            else:
                # The state and its round's record in one txn, as a coordinator writes them.
                await store.txn([], [Put(key, value), Put(key + ".round", record)])

    args = rendezvous_args(etcd_server.endpoint, run_id, "--watch", "--json")
    with start_cli(*args) as proc:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        anyio.run(write, rules.encode_state(state))
        second = json.loads(proc.stdout.readline())
        anyio.run(write, rules.encode_state(rules.RunState(4, True, True, 1, 2, size=1)))
        third = json.loads(proc.stdout.readline())
        anyio.run(write, None)
        fourth = json.loads(proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert (first["keys"], first["state"]) == (0, None)
    assert second["revision"] > first["revision"]
    assert (second["state"]["round"], second["state"]["closed"]) == (4, False)
    assert [p["node"] for p in second["participants"]] == ["x"]
    assert second["participants"][0]["alive"] is False
    assert second["participants"][0]["ttl"] is None
    assert third["state"]["closed"] is True
    assert (fourth["keys"], fourth["state"]) == (0, None)
    assert proc.returncode == 130
    assert "Traceback" not in err


def test_watch_ends_cleanly_on_sigterm(etcd_server: Any, run_id: str) -> None:
    """SIGTERM (what Kubernetes and Slurm send) ends --watch as Ctrl-C does: what was
    printed stays, no traceback, and exit status 143 (128 + SIGTERM), as a shell reports."""
    with start_cli(*rendezvous_args(etcd_server.endpoint, run_id, "--watch")) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert f"] run {run_id!r} at revision " in first  # after the report's time
    assert (proc.returncode, out) == (143, ""), err
    assert "Traceback" not in err


def test_watch_ends_at_a_malformed_value_with_one_line(etcd_server: Any, run_id: str) -> None:
    """A failure under --watch: the reports printed stay, then one line and status 1."""

    async def put() -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            await store.put(f"/anyrdzv/{run_id}/state", b"\x80 not JSON")

    args = rendezvous_args(etcd_server.endpoint, run_id, "--watch", "--json")
    with start_cli(*args) as proc:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        anyio.run(put)
        out, err = proc.communicate(timeout=20)
    assert (first["keys"], first["state"]) == (0, None)
    assert out == ""
    assert_one_line_error(
        subprocess.CompletedProcess(args, proc.returncode, out, err),
        1,
        f"run {run_id!r}: key '/anyrdzv/{run_id}/state'",
        "holds a malformed value (not a JSON document)",
        command="rendezvous",
    )


def test_text_of_a_participant_whose_lease_is_gone(etcd_server: Any, run_id: str) -> None:
    state = rules.RunState(2, True, False, 1, 2, size=2)

    async def put() -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            await store.put(f"/anyrdzv/{run_id}/state", rules.encode_state(state))
            record = rules.Record(2, ("x", "y"))
            await store.put(f"/anyrdzv/{run_id}/state.round", rules.encode_record(record))
            await store.put(f"/anyrdzv/{run_id}/join/z", rules.encode_join(0))

    anyio.run(put)
    proc = run_cli("rendezvous", "--etcd", etcd_server.endpoint, "--run-id", run_id)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1:] == [
        "participants of round 2 (2):",
        "  rank 0  x  GONE: no key left, its lease has expired",
        "  rank 1  y  GONE: no key left, its lease has expired",
        "waiting for round 3: 0 node(s) joined it, 0 counted by num_nodes_waiting()",
        (
            f"torchrun bootstrap of round 2: MASTER_ADDR MISSING (key /anyrdzv/{run_id}/store/"
            f"torch.rendezvous.{run_id}.2/MASTER_ADDR), and rank 0, x, is GONE: the other "
            "participants cannot start their workers (they take the next round)"
        ),
        "other nodes (1):",
        "  z  joined round 0, no heartbeat  no live lease",
    ]


def test_the_bootstrap_of_a_torchrun_round(etcd_server: Any, run_id: str) -> None:
    """A complete round of a run with torch store keys: whether its rank 0 published
    MASTER_ADDR in the round's store."""
    state = rules.RunState(1, True, False, 1, 2, size=2)
    round_store = f"/anyrdzv/{run_id}/store/torch.rendezvous.{run_id}.1/"

    async def put(key: str, value: bytes) -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            await store.put(key, value)

    def bootstrap() -> tuple[str, Any]:
        text = run_cli("rendezvous", "--etcd", etcd_server.endpoint, "--run-id", run_id)
        as_json = run_cli(
            "rendezvous", "--etcd", etcd_server.endpoint, "--run-id", run_id, "--json"
        )
        (line,) = [each for each in text.stdout.splitlines() if "bootstrap" in each]
        return line, json.loads(as_json.stdout)["bootstrap"]

    anyio.run(put, f"/anyrdzv/{run_id}/state", rules.encode_state(state))
    record = rules.encode_record(rules.Record(1, ("x", "y")))
    anyio.run(put, f"/anyrdzv/{run_id}/state.round", record)
    anyio.run(put, f"/anyrdzv/{run_id}/nodes/x", rules.encode_member(rules.Member(1, 2, b"")))
    anyio.run(put, round_store + "torchelastic/role_info/1", b"{}")
    line, record = bootstrap()
    assert line == (
        "torchrun bootstrap of round 1: MASTER_ADDR not published yet by rank 0, x "
        f"(key {round_store}MASTER_ADDR)"
    )
    assert record == {
        "round": 1,
        "key": round_store + "MASTER_ADDR",
        "master_addr": None,
        "master_port": None,
    }
    anyio.run(put, round_store + "MASTER_ADDR", b"10.0.0.1")
    anyio.run(put, round_store + "MASTER_PORT", b"29500")
    line, record = bootstrap()
    assert line == "torchrun bootstrap of round 1: MASTER_ADDR 10.0.0.1, MASTER_PORT 29500"
    assert (record["master_addr"], record["master_port"]) == ("10.0.0.1", "29500")


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_watch_prints_the_time_and_only_what_changed(
    etcd_server: Any, run_id: str, as_json: bool
) -> None:
    """Under --watch each report has its time, and a write that changes nothing the
    report shows (the torch store's keys, say) prints nothing."""
    from datetime import datetime

    def write(key: str, value: bytes) -> None:
        async def put() -> None:
            async with EtcdStore(etcd_server.endpoint) as store:
                await store.put(f"/anyrdzv/{run_id}/{key}", value)

        anyio.run(put)

    def time_of(line: str) -> datetime:
        if as_json:
            return datetime.fromisoformat(json.loads(line)["time"])
        assert line.startswith("["), line
        return datetime.fromisoformat(line[1 : line.index("]")])

    args = rendezvous_args(etcd_server.endpoint, run_id, "--watch", *(["--json"] * as_json))
    started = datetime.now().astimezone()
    with start_cli(*args) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        for step in range(3):  # the torch store's writes: no report
            write(f"store/torch.rendezvous.{run_id}.0/k{step}", b"v")
        write("state.round", rules.encode_record(rules.Record(4, ("x",))))
        write("state", rules.encode_state(rules.RunState(4, True, False, 1, 2, size=1)))
        second = proc.stdout.readline()
        if not as_json:
            while not second.startswith("["):  # the rest of the first report
                second = proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert started <= time_of(first) <= time_of(second) <= datetime.now().astimezone()
    assert ("round 4" in second) if not as_json else json.loads(second)["state"]["round"] == 4


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--etcd", "127.0.0.1:1", "--run-id", "r", "--timeout", "1"], 1, "cannot reach etcd"),
        (["--etcd", "h", "--run-id", "a/b"], 2, "run_id must be non-empty and contain no '/'"),
        (["--etcd", "h", "--run-id", ""], 2, "run_id must be non-empty"),
        (["--etcd", "h"], 2, "the following arguments are required: --run-id"),
        (["--run-id", "r"], 2, "the following arguments are required: --etcd"),
        (["--etcd", "h:99999", "--run-id", "r"], 2, "The port number of the rendezvous endpoint"),
        (["--etcd", "h", "--run-id", "r", "--user", "root"], 2, "--user 'root' needs a password"),
    ],
)
def test_errors(args: list[str], status: int, message: str) -> None:
    proc = run_cli("rendezvous", *args)
    assert proc.returncode == status, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("anyrdzv rendezvous: error: ")
    if status == 1:
        # Before the error, only the open's retries within --timeout, each a WARNING.
        *retries, _ = proc.stderr.splitlines()
        assert all(" WARNING anyrdzv._etcd._gateway: retrying opening" in r for r in retries)


def test_topology_labels_and_spares(etcd_server: Any, run_id: str) -> None:
    """Each node's topology label, and the spares: nodes that wait while the live
    participants are max_nodes already."""
    state = rules.RunState(2, True, False, 1, 2, size=2)

    async def put() -> None:
        async with EtcdStore(etcd_server.endpoint) as store:
            run = f"/anyrdzv/{run_id}/"
            await store.put(run + "state", rules.encode_state(state))
            await store.put(run + "state.round", rules.encode_record(rules.Record(2, ("x", "y"))))
            for name, label in (("x", "rack1/sw2"), ("y", None), ("z", "rack2")):
                member = rules.Member(1, 2, b"", label)
                await store.put(run + "nodes/" + name, rules.encode_member(member))
            await store.put(run + "join/z", rules.encode_join(3))

    anyio.run(put)
    proc = run_cli("rendezvous", "--etcd", etcd_server.endpoint, "--run-id", run_id)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1:] == [
        "participants of round 2 (2):",
        "  rank 0  x  no live lease  topology rack1/sw2",
        "  rank 1  y  no live lease",
        "waiting for round 3: 1 node(s) joined it, 0 counted by num_nodes_waiting()",
        "  z  no live lease  topology rack2  spare",
    ]
    proc = run_cli("rendezvous", "--etcd", etcd_server.endpoint, "--run-id", run_id, "--json")
    record = json.loads(proc.stdout)
    assert [(n["topology"], n["spare"]) for n in record["participants"]] == [
        ("rack1/sw2", False),
        (None, False),
    ]
    assert [(n["node"], n["topology"], n["spare"]) for n in record["waiting"]] == [
        ("z", "rack2", True)
    ]
