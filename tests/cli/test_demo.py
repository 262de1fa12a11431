"""``anyrdzv demo``: the README's Quick start. An elastic rendezvous on MemoryStore, a
node killed, the survivors re-forming: the timeline's shape, its order and its exit
status, on asyncio, asyncio+uvloop and trio."""

from __future__ import annotations

import re
import signal

import pytest

from tests._support.cli import run_cli, start_cli

BACKENDS = ["asyncio", "uvloop", "trio"]

#: One event: the time in milliseconds, right-aligned in 8 columns; the node and the
#: event, left-aligned in 7 and 8; the detail.
EVENT = re.compile(
    r"^(?P<ms>[ \d]{7}\d)  (?P<node>node-\d ) (?P<kind>[a-z-]{1,8}) *(?P<detail>\S.*)$"
)


def events(stdout: str) -> list[tuple[int, str, str, str]]:
    """The timeline's events: (ms, node, kind, detail), in the order printed."""
    found = []
    for line in stdout.splitlines():
        match = EVENT.match(line)
        if match is not None:
            found.append((int(match["ms"]), match["node"].strip(), match["kind"], match["detail"]))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("nodes", [3, 5])
def test_the_demo_ranks_kills_and_re_forms(backend: str, nodes: int) -> None:
    proc = run_cli("demo", "--nodes", str(nodes), "--backend", backend)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # the crashed node's lost goodbye is a line of the timeline
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"anyrdzv demo: {nodes} nodes of run 'demo'")
    assert f"({backend})" in lines[0]
    assert lines[1] == " time ms  node    event    detail"
    timeline = events(proc.stdout)
    # Every line between the header and the summary is one event, aligned.
    summary = next(i for i, line in enumerate(lines) if line.startswith("summary: "))
    assert len(timeline) == summary - 2
    assert len(lines) > summary + 1
    assert all(line.startswith(" " * 9) for line in lines[summary + 1 :])
    times = [ms for ms, *_ in timeline]
    assert times == sorted(times)
    assert times[-1] < 10_000  # the demo's own deadline; it takes about 2 s

    names = [f"node-{i}" for i in range(nodes)]
    victim = "node-1"
    survivors = [name for name in names if name != victim]
    killed = next(i for i, (_, node, kind, _) in enumerate(timeline) if kind == "killed")
    before, after = timeline[:killed], timeline[killed + 1 :]
    assert timeline[killed][1] == victim
    # Round 0: every node ranked, ranks by sorted name.
    ranked0 = {node: detail for _, node, kind, detail in before if kind == "ranked"}
    assert ranked0 == {name: f"round 0: rank {i} of {nodes}" for i, name in enumerate(names)}
    # After the kill: the victim says nothing but its lost goodbye; every survivor sees
    # it lost, is ranked in round 1 with the ranks that close up, and leaves on close.
    assert {kind for _, node, kind, _ in after if node == victim} <= {"no-bye"}
    lost = {node for _, node, kind, detail in after if kind == "change" and "'lost'" in detail}
    assert lost == set(survivors)
    ranked1 = {node: detail for _, node, kind, detail in after if kind == "ranked"}
    assert ranked1 == {
        name: f"round 1: rank {i} of {nodes - 1}" for i, name in enumerate(survivors)
    }
    closed = {node for _, node, kind, _ in after if kind == "closed"}
    assert closed == set(survivors)
    for name in survivors:  # each survivor: lost, then ranked, then closed
        kinds = [kind for _, node, kind, _ in after if node == name]
        assert kinds == ["change", "ranked", "closed"], kinds
    kill_ms = timeline[killed][0]
    text = "\n".join(lines[summary:])
    assert f"round 0 ranked all {nodes} nodes" in text
    assert f"{victim} was killed at {kill_ms} ms" in text
    assert f"the {nodes - 1} survivors saw it lost" in text
    assert "round 1 ranked them" in text
    assert "0 key(s) of it remain in the store" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "2"], "argument --nodes: must be a whole number from 3 to 8, got '2'"),
        (["--nodes", "x" * 1000], "argument --nodes: must be a whole number from 3 to 8"),
        (["--kill-after", "-1"], "argument --kill-after: must be 0 to 5 seconds, got '-1'"),
        (["--backend", "tokio"], "argument --backend: invalid choice: 'tokio'"),
    ],
)
def test_bad_input_is_a_usage_error(args: list[str], message: str) -> None:
    """argparse's usage, then one line that names the option and the value (cut)."""
    proc = run_cli("demo", *args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last.startswith(f"anyrdzv demo: error: {message}"), last
    assert len(last) < 200


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_stops_it_cleanly(backend: str) -> None:
    proc = start_cli("demo", "--backend", backend, "--kill-after", "5")
    assert proc.stdout is not None
    for _ in range(2 + 4 + 4):  # the banner, the header, 4 joins, 4 ranks
        assert proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "summary" not in out
