"""Real torchrun agents on ``--rdzv-backend=anyrdzv-etcd``, with gloo workers on the CPU.

Each scenario starts real ``torchrun`` processes (each imports torch: seconds of CPU),
so they are few, marked slow, and run in parallel under pytest-xdist.
"""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests._support import EXAMPLES
from tests._support.torchrun_agents import FAST_CONF, Agent, run_keys, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests._support.etcd_cluster import EtcdCluster
    from tests._support.etcd_server import EtcdServer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_installed")]


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[Agent]]:
    """The agents a test starts; any still running at its end are killed."""
    started: list[Agent] = []
    yield started
    for agent in started:
        agent.close()


@pytest.fixture
def run_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


def start(agents: list[Agent], tmp_path: Path, name: str, **options: object) -> Agent:
    agent = Agent(tmp_path, name, **options)  # type: ignore[arg-type]
    agents.append(agent)
    return agent


def finished(agent: Agent, timeout: float = 90) -> None:
    code = agent.wait(timeout)
    assert code == 0, f"agent {agent.name} exited {code}:\n{agent.log()[-6000:]}"


def two_nodes_of_two(
    agents: list[Agent], tmp_path: Path, etcd: EtcdServer, run_id: str, **options: object
) -> tuple[Agent, Agent]:
    """Agents a and b, two workers each, under ``--nnodes=2``; once both have finished."""
    a, b = (
        start(
            agents,
            tmp_path,
            name,
            endpoint=etcd.endpoint,
            run_id=run_id,
            nnodes="2",
            nproc=2,
            **options,
        )
        for name in ("a", "b")
    )
    finished(a)
    finished(b)
    return a, b


@pytest.mark.timeout(150)
def test_two_nodes_two_workers_each(
    etcd_server: EtcdServer, agents: list[Agent], tmp_path: Path, run_id: str
) -> None:
    a, b = two_nodes_of_two(agents, tmp_path, etcd_server, run_id)
    lines = a.lines() + b.lines()
    assert len(lines) == 4
    assert {line["sum"] for line in lines} == {1.0 + 2.0 + 3.0 + 4.0}
    assert sorted(line["RANK"] for line in lines) == ["0", "1", "2", "3"]
    assert {line["WORLD_SIZE"] for line in lines} == {"4"}
    assert {line["GROUP_WORLD_SIZE"] for line in lines} == {"2"}
    for agent in (a, b):  # one group rank per agent, and its workers' ranks follow it
        ranks = {line["GROUP_RANK"] for line in agent.lines()}
        assert len(ranks) == 1
        group = int(ranks.pop())
        assert sorted(int(line["RANK"]) for line in agent.lines()) == [2 * group, 2 * group + 1]
    assert {line["GROUP_RANK"] for line in lines} == {"0", "1"}
    assert {(line["MASTER_ADDR"], line["MASTER_PORT"]) for line in lines} == {
        ("127.0.0.1", lines[0]["MASTER_PORT"])
    }
    assert {line["TORCHELASTIC_USE_AGENT_STORE"] for line in lines} == {"False"}
    assert {line["TORCHELASTIC_RUN_ID"] for line in lines} == {run_id}
    assert run_keys(etcd_server.endpoint, run_id) == []  # the last node left no key


#: A line of examples/torchrun_allreduce.py, found anywhere in a log: lines that other
#: processes of the agent write next to it (its own logging) cannot hide one.
ALLREDUCE_LINE = re.compile(
    r"rank (\d+) of (\d+) \(node (\d+) of (\d+), master ([^)]*)\): "
    r"all_reduce sum (\S+), expected (\d+)"
)


@pytest.mark.timeout(150)
def test_the_readme_example(
    etcd_server: EtcdServer, agents: list[Agent], tmp_path: Path, run_id: str
) -> None:
    """The README's two-node job: examples/torchrun_allreduce.py, torch's default conf."""
    example = EXAMPLES / "torchrun_allreduce.py"
    a, b = two_nodes_of_two(agents, tmp_path, etcd_server, run_id, conf="", worker=[str(example)])
    printed = ALLREDUCE_LINE.findall(a.log() + b.log())
    assert printed, f"no worker printed its line:\n{a.log()[-3000:]}"
    master = printed[0][4]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", master), printed
    assert sorted(printed) == [
        (str(rank), "4", str(rank // 2), "2", master, "10", "10") for rank in range(4)
    ]
    assert run_keys(etcd_server.endpoint, run_id) == []


def test_the_example_writes_each_line_whole(tmp_path: Path) -> None:
    """The workers of an agent share its stdout (PYTHONUNBUFFERED=1, as the agents
    here run): two of them writing at once never interleave their lines, because the
    example writes a line in one write(2), where print() writes the newline apart."""
    writer = (
        "import os, sys, time\n"
        f"sys.path.insert(0, {str(EXAMPLES)!r})\n"
        "from torchrun_allreduce import say\n"
        "open(sys.argv[1] + '.ready', 'w').close()\n"
        "while not os.path.exists(sys.argv[2]):\n"
        "    time.sleep(0.001)\n"
        "for i in range(3000):\n"
        "    say(f'{sys.argv[1]} {i} ' + 'x' * 60)\n"
    )
    go = tmp_path / "go"
    names = [str(tmp_path / name) for name in ("a", "b")]
    log = tmp_path / "log"
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:  # one open file, shared, as an agent's log is
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", writer, name, str(go)], stdout=out, env=environment
            )
            for name in names
        ]
    try:
        ready = [Path(f"{name}.ready") for name in names]
        wait_for(lambda: all(path.exists() for path in ready), 60, "both writers imported")
        go.touch()
        assert [worker.wait(60) for worker in workers] == [0, 0]
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    lines = log.read_text().splitlines()
    expected = [f"{name} {i} " + "x" * 60 for name in names for i in range(3000)]
    assert sorted(lines) == sorted(expected)


@pytest.mark.timeout(150)
def test_scale_down_after_a_sigkill(
    etcd_server: EtcdServer, agents: list[Agent], tmp_path: Path, run_id: str
) -> None:
    options: dict[str, object] = {
        "endpoint": etcd_server.endpoint,
        "run_id": run_id,
        "nnodes": "1:2",
        "max_restarts": 3,
        "steps": 16,
        "pause": 0.25,
    }
    a = start(agents, tmp_path, "a", **options)
    b = start(agents, tmp_path, "b", **options)
    both = lambda: all(any(line["WORLD_SIZE"] == "2" for line in agent.lines()) for agent in (a, b))
    wait_for(both, 90, "both workers run in a world of 2", a, b)
    b.kill()
    killed = time.monotonic()
    finished(a)
    last = a.lines()[-1]
    assert last["done"]
    assert last["WORLD_SIZE"] == "1"
    assert last["sum"] == 1.0
    assert int(last["TORCHELASTIC_RESTART_COUNT"]) <= 1
    assert time.monotonic() - killed < 60
    # No key of the run is left once the leases have run out (b's, and the run's).
    wait_for(lambda: run_keys(etcd_server.endpoint, run_id) == [], 40, "no key of the run left")


@pytest.mark.timeout(150)
def test_a_lost_agent_restarts_its_peers_at_once_without_a_retry(
    etcd_server: EtcdServer, agents: list[Agent], tmp_path: Path, run_id: str
) -> None:
    """Only b's agent is SIGKILLed: its worker lives on as an orphan, so a's worker sees
    no failed collective. a restarts for the lost participant (torch's handler would
    notice nothing), without using a restart, and finishes alone."""
    options: dict[str, object] = {
        "endpoint": etcd_server.endpoint,
        "run_id": run_id,
        "nnodes": "1:2",
        "max_restarts": 0,
        "steps": 12,
        "pause": 0.2,
        "until_world": 1,  # in a world of 2 it steps on (up to 1,000 steps)
    }
    a = start(agents, tmp_path, "a", **options)
    b = start(agents, tmp_path, "b", **options)
    both = lambda: all(any(line["WORLD_SIZE"] == "2" for line in agent.lines()) for agent in (a, b))
    wait_for(both, 90, "both workers run in a world of 2", a, b)
    b.process.kill()  # the agent alone
    b.process.wait(10)
    finished(a, 60)
    last = a.lines()[-1]
    assert last["done"]
    assert last["WORLD_SIZE"] == "1"
    assert last["TORCHELASTIC_RESTART_COUNT"] == "0"


@pytest.mark.timeout(150)
def test_scale_up_when_a_second_node_comes(
    etcd_server: EtcdServer, agents: list[Agent], tmp_path: Path, run_id: str
) -> None:
    options: dict[str, object] = {
        "endpoint": etcd_server.endpoint,
        "run_id": run_id,
        "nnodes": "1:2",
        "max_restarts": 0,  # a membership change uses no restart
        "steps": 8,
        "pause": 0.1,
        "until_world": 2,
    }
    a = start(agents, tmp_path, "a", **options)
    alone = lambda: any(line["WORLD_SIZE"] == "1" for line in a.lines())
    wait_for(alone, 90, "the first node's worker runs alone", a)
    b = start(agents, tmp_path, "b", **options)
    finished(a)
    finished(b)
    for agent in (a, b):
        last = agent.lines()[-1]
        assert last["done"]
        assert last["WORLD_SIZE"] == "2"
        assert last["sum"] == 3.0
        assert last["TORCHELASTIC_RESTART_COUNT"] == "0"
    assert a.lines()[-1]["MASTER_PORT"] == b.lines()[-1]["MASTER_PORT"]
    assert a.lines()[0]["MASTER_PORT"] != a.lines()[-1]["MASTER_PORT"]  # a fresh round store


@pytest.mark.timeout(150)
def test_an_etcd_restart_mid_job_changes_nothing(
    own_etcd_server: EtcdServer, agents: list[Agent], tmp_path: Path, run_id: str
) -> None:
    options: dict[str, object] = {
        "endpoint": own_etcd_server.endpoint,
        "run_id": run_id,
        "nnodes": "2",
        "conf": "",  # torch's defaults
        "steps": 30,
        "pause": 0.2,
    }
    a = start(agents, tmp_path, "a", **options)
    b = start(agents, tmp_path, "b", **options)
    running = lambda: all(agent.lines() for agent in (a, b))
    wait_for(running, 90, "both workers run", a, b)
    own_etcd_server.kill()
    time.sleep(0.5)
    own_etcd_server.start()
    finished(a)
    finished(b)
    lines = a.lines() + b.lines()
    assert len(lines) == 60  # every step once: no restart, no second round
    assert {line["TORCHELASTIC_RESTART_COUNT"] for line in lines} == {"0"}
    assert len({line["MASTER_PORT"] for line in lines}) == 1
    assert run_keys(own_etcd_server.endpoint, run_id) == []


@pytest.mark.timeout(150)
def test_a_cluster_leader_killed_during_the_rendezvous(
    etcd_cluster: EtcdCluster, agents: list[Agent], tmp_path: Path, run_id: str
) -> None:
    options: dict[str, object] = {
        "endpoint": etcd_cluster.endpoint_list,
        "run_id": run_id,
        "nnodes": "2",
        "conf": "keep_alive_interval=1,keep_alive_max_attempt=3",
    }
    a = start(agents, tmp_path, "a", **options)
    joined = lambda: any("/nodes/" in key for key in run_keys(etcd_cluster.endpoint_list, run_id))
    wait_for(joined, 90, "the first node joined", a)
    leader = etcd_cluster.leader_index()
    etcd_cluster.kill(leader)
    b = start(agents, tmp_path, "b", **options)
    finished(a)
    finished(b)
    assert {line["sum"] for line in a.lines() + b.lines()} == {3.0}


def _auth_tls_server(tmp_path: Path) -> tuple[EtcdServer, Path]:
    trustme = pytest.importorskip("trustme")
    from tests._support.etcd_server import EtcdServer

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = tmp_path / "tls"
    files.mkdir()
    cert.private_key_and_cert_chain_pem.write_to_path(str(files / "server.pem"))
    cert.private_key_pem.write_to_path(str(files / "server.key"))
    ca.cert_pem.write_to_path(str(files / "ca.pem"))
    server = EtcdServer(
        tmp_path / "etcd",
        cert=files / "server.pem",
        key=files / "server.key",
        ca_file=files / "ca.pem",
    )
    (tmp_path / "etcd").mkdir()
    server.start()
    try:
        verify = ssl.create_default_context(cafile=str(files / "ca.pem"))
        with httpx.Client(base_url=server.url, verify=verify, timeout=5) as client:
            for path, body in (
                ("/v3/auth/user/add", {"name": "root", "password": "s3cret"}),
                ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
                ("/v3/auth/enable", {}),
            ):
                assert client.post(path, json=body).status_code == 200
    except BaseException:
        server.stop()
        raise
    return server, files / "ca.pem"


@pytest.mark.timeout(150)
def test_tls_and_auth_through_the_conf_and_the_environment(
    agents: list[Agent], tmp_path: Path, run_id: str
) -> None:
    server, ca = _auth_tls_server(tmp_path)
    try:
        common: dict[str, object] = {"endpoint": server.endpoint, "nnodes": "1"}
        ok = start(
            agents,
            tmp_path,
            "ok",
            run_id=run_id,
            conf=f"{FAST_CONF},cacert={ca},user=root",
            env={"ANYRDZV_ETCD_PASSWORD": "s3cret"},
            **common,
        )
        no_ca = start(
            agents,
            tmp_path,
            "no_ca",
            run_id=run_id + "-2",
            conf="user=root",
            env={"ANYRDZV_ETCD_PASSWORD": "s3cret"},
            **common,
        )
        no_password = start(
            agents,
            tmp_path,
            "no_password",
            run_id=run_id + "-3",
            conf=f"cacert={ca},user=root",
            env={"ANYRDZV_ETCD_PASSWORD": ""},
            **common,
        )
        wrong_password = start(
            agents,
            tmp_path,
            "wrong_password",
            run_id=run_id + "-4",
            conf=f"cacert={ca},user=root,store_timeout=2",
            env={"ANYRDZV_ETCD_PASSWORD": "wrong"},
            **common,
        )
        finished(ok)
        assert ok.lines()[-1]["done"]
        for agent, expected in (
            (no_ca, "RendezvousConnectionError"),
            (no_password, "ANYRDZV_ETCD_PASSWORD is not set"),
            (wrong_password, "RendezvousConnectionError"),
        ):
            assert agent.wait(60) != 0, agent.log()
            assert expected in agent.log(), agent.log()[-4000:]
        assert "TLS" in no_ca.log() or "certificate" in no_ca.log()
        assert "password" in wrong_password.log().lower()
        assert "s3cret" not in no_ca.log() + wrong_password.log()
    finally:
        server.stop()


@pytest.mark.timeout(150)
def test_bad_input_and_an_unreachable_endpoint_exit_non_zero_in_bounded_time(
    agents: list[Agent], tmp_path: Path, run_id: str
) -> None:
    from tests._support.etcd_server import free_port

    port = free_port()
    cases = {
        "unreachable": (f"127.0.0.1:{port}", "store_timeout=1", "RendezvousConnectionError"),
        "bad_conf": (f"127.0.0.1:{port}", "join_timeout=soon", "'join_timeout'"),
        "bad_endpoint": ("127.0.0.1:notaport", "", "ValueError"),
    }
    started = {
        name: start(agents, tmp_path, name, endpoint=endpoint, run_id=run_id, nnodes="1", conf=conf)
        for name, (endpoint, conf, _) in cases.items()
    }
    for name, agent in started.items():
        assert agent.wait(90) != 0, agent.log()
        assert cases[name][2] in agent.log(), agent.log()[-4000:]
        assert not agent.lines()  # no worker started
    assert f"127.0.0.1:{port}" in started["unreachable"].log()


@pytest.mark.timeout(150)
def test_on_etcds_default_flags_torchs_etcd_v2_fails_where_ours_works(
    etcd_server: EtcdServer, agents: list[Agent], tmp_path: Path, run_id: str
) -> None:
    torchs = start(
        agents,
        tmp_path,
        "etcd_v2",
        endpoint=etcd_server.endpoint,
        run_id=run_id + "-v2",
        nnodes="1",
        backend="etcd-v2",
        conf="read_timeout=5",
    )
    ours = start(
        agents,
        tmp_path,
        "ours",
        endpoint=etcd_server.endpoint,
        run_id=run_id,
        nnodes="1",
    )
    finished(ours)
    assert ours.lines()[-1]["done"]
    assert torchs.wait(90) != 0
    assert not torchs.lines()
    assert httpx.get(f"{etcd_server.url}/v2/keys/").status_code == 404  # v2 is off


def test_sigterm_during_the_first_rendezvous_ends_the_agent_at_once(
    etcd_server: EtcdServer, agents: list[Agent], tmp_path: Path, run_id: str
) -> None:
    agent = start(
        agents,
        tmp_path,
        "waiting",
        endpoint=etcd_server.endpoint,
        run_id=run_id,
        nnodes="2",  # waits for a second node that never comes
    )
    joined = lambda: any("/nodes/" in key for key in run_keys(etcd_server.endpoint, run_id))
    wait_for(joined, 60, "the node joined", agent)
    time.sleep(0.3)
    agent.process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    assert agent.wait(20) != 0
    assert time.monotonic() - sent < 10


def logged(agent: Agent, text: str) -> bool:
    return text in agent.log()


@pytest.mark.timeout(150)
def test_a_participant_killed_after_joining_does_not_hang_its_peers(
    etcd_server: EtcdServer, agents: list[Agent], tmp_path: Path, run_id: str
) -> None:
    """The issue's repro: x joins round 0 and is SIGKILLed, y starts at once, z comes
    10 s later. x, the first node, coordinated the run, and its office died with it: no
    round completes with the dead x (a round that completed with a dead participant
    before it died is the in-process test of test_handler.py, where y's wait in the
    bootstrap ends within 2 s of the death). y starts no worker until z comes, and y and
    z form a world of 2, with no restart used. y and z have imported torch before the
    kill (held), so that y joins before x's lease (TTL 6 s) expires."""
    options: dict[str, object] = {
        "endpoint": etcd_server.endpoint,
        "run_id": run_id,
        "nnodes": "2",
        "max_restarts": 3,
        "conf": "keep_alive_interval=2,keep_alive_max_attempt=3",
    }
    ttl = 6
    go_y, go_z = tmp_path / "go_y", tmp_path / "go_z"
    x = start(agents, tmp_path, "x", **options)
    y = start(agents, tmp_path, "y", hold=go_y, **options)
    z = start(agents, tmp_path, "z", hold=go_z, **options)
    joined = lambda: any("/join/" in key for key in run_keys(etcd_server.endpoint, run_id))
    wait_for(joined, 90, "x joined round 0", x)
    y.until_held()
    z.until_held()
    x.kill()
    killed = time.monotonic()
    go_y.touch()
    time.sleep(max(0.0, killed + ttl + 4 - time.monotonic()))  # x's lease ran out
    assert not y.lines()  # y started no worker in a world with the dead x
    go_z.touch()
    finished(y)
    finished(z)
    for agent in (y, z):
        (line,) = agent.lines()
        assert line["done"]
        assert line["WORLD_SIZE"] == "2"
        assert line["sum"] == 3.0
        assert line["TORCHELASTIC_RESTART_COUNT"] == "0"


@pytest.mark.timeout(200)
def test_a_refused_node_does_not_close_the_run(
    etcd_server: EtcdServer, agents: list[Agent], tmp_path: Path, run_id: str
) -> None:
    """a and b run under --nnodes=2; c comes with --nnodes=3 and is refused, and its
    torchrun's shutdown() leaves the run open: at a's next worker failure a and b both
    restart and go on."""
    until, fail = tmp_path / "until", tmp_path / "fail"
    options: dict[str, object] = {
        "endpoint": etcd_server.endpoint,
        "run_id": run_id,
        "nnodes": "2",
        "max_restarts": 3,
        "pause": 0.2,
        "until_file": until,
    }
    a = start(agents, tmp_path, "a", fail_file=fail, **options)
    b = start(agents, tmp_path, "b", **options)
    wait_for(lambda: a.lines() and b.lines(), 90, "both workers run", a, b)
    c = start(agents, tmp_path, "c", **{**options, "nnodes": "3"})
    assert c.wait(90) != 0
    assert "RendezvousStateError" in c.log(), c.log()[-4000:]
    assert "max_nodes=3" in c.log()
    fail.touch()  # a's worker fails at its next step
    # b restarts too: for a's new round, or (using a restart) for its failed collective.
    restarted = lambda: all(len({line["pid"] for line in agent.lines()}) == 2 for agent in (a, b))
    wait_for(restarted, 90, "a and b restarted", a, b)
    until.touch()
    finished(a)
    finished(b)
    for agent in (a, b):
        last = agent.lines()[-1]
        assert last["done"]
        assert last["WORLD_SIZE"] == "2"
        assert "RendezvousClosedError" not in agent.log()
    assert a.lines()[-1]["TORCHELASTIC_RESTART_COUNT"] == "1"


def handed(agent: Agent) -> list[str]:
    """The rounds ``agent``'s handler was handed, a line each (the rendezvous logs each
    round too, a moment before the handler, so counting both would count it twice)."""
    return [
        line
        for line in agent.log().splitlines()
        if "anyrdzv.torchrun._handler" in line and " holds rank " in line
    ]


@pytest.mark.timeout(150)
def test_sigterm_is_a_graceful_scale_down(
    etcd_server: EtcdServer, agents: list[Agent], tmp_path: Path, run_id: str
) -> None:
    """b's agent is SIGTERMed (torchrun skips shutdown()): it revokes its lease as it
    exits, leaving the run open, and a holds the next round, alone, within 2 s of the
    signal, where b's lease (TTL 15 s) would have taken 15. The workers all_reduce
    every second."""
    until = tmp_path / "until"
    options: dict[str, object] = {
        "endpoint": etcd_server.endpoint,
        "run_id": run_id,
        "nnodes": "1:2",
        "max_restarts": 3,
        "conf": "last_call_timeout=1",  # torch's keep-alive: a lease of 15 s
        "pause": 1.0,
        "until_file": until,
    }
    a = start(agents, tmp_path, "a", **options)
    b = start(agents, tmp_path, "b", **options)
    both = lambda: all(any(line["WORLD_SIZE"] == "2" for line in agent.lines()) for agent in (a, b))
    wait_for(both, 90, "both workers run in a world of 2", a, b)
    rounds = handed(a)
    alone = sum("holds rank 0 of 1" in line for line in rounds)
    b.process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    held = lambda: sum("holds rank 0 of 1" in line for line in handed(a)) > alone
    wait_for(held, 10, "a holds a round alone", a, b)
    took = time.monotonic() - sent
    assert took < 2, f"a held the next round {took:.2f} s after the SIGTERM"
    assert len(handed(a)) == len(rounds) + 1
    assert b.wait(30) != 0
    assert "left run" in b.log()
    until.touch()
    finished(a)
    last = a.lines()[-1]
    assert last["done"]
    assert last["WORLD_SIZE"] == "1"


@pytest.mark.timeout(150)
@pytest.mark.parametrize("max_restarts", [0, 1])
def test_a_lost_peer_uses_one_restart_of_each_survivor(
    etcd_server: EtcdServer, agents: list[Agent], tmp_path: Path, run_id: str, max_restarts: int
) -> None:
    """What the README says of restarts: b's agent and worker are SIGKILLed while the
    workers all_reduce every second; a's worker fails its next collective long before
    b's lease (torch's 15 s) expires, and a uses a restart, then waits out the lease in
    next_rendezvous. With --max-restarts=0 the survivor dies; with 1 it goes on, alone,
    with exactly one restart used."""
    until = tmp_path / "until"
    options: dict[str, object] = {
        "endpoint": etcd_server.endpoint,
        "run_id": run_id,
        "nnodes": "1:2",
        "conf": "last_call_timeout=5",  # torch's keep-alive: a lease of 15 s
        "max_restarts": max_restarts,
        "pause": 1.0,
        "until_file": until,
    }
    a = start(agents, tmp_path, "a", **options)
    b = start(agents, tmp_path, "b", **options)
    both = lambda: all(any(line["WORLD_SIZE"] == "2" for line in agent.lines()) for agent in (a, b))
    wait_for(both, 90, "both workers run in a world of 2", a, b)
    b.kill()
    if max_restarts == 0:
        assert a.wait(60) != 0
        assert "ChildFailedError" in a.log(), a.log()[-4000:]
        return
    alone = lambda: any(line["WORLD_SIZE"] == "1" for line in a.lines())
    wait_for(alone, 60, "a goes on alone", a)
    until.touch()
    finished(a)
    last = a.lines()[-1]
    assert last["done"]
    assert last["WORLD_SIZE"] == "1"
    assert last["TORCHELASTIC_RESTART_COUNT"] == "1"


@pytest.mark.timeout(180)
def test_max_rounds_1_survives_one_loss_and_the_second_ends_both_agents(
    etcd_server: EtcdServer, agents: list[Agent], tmp_path: Path, run_id: str
) -> None:
    """``max_rounds=1``: a's worker fails, and round 1 brings both nodes back; then b's
    worker fails, and round 2 is refused. The budget is run-wide: each agent used one of
    its 5 restarts only, yet the run is closed, and each agent exits non-zero with the
    budget's message, with no worker of a third round started."""
    fail_a, fail_b = tmp_path / "fail_a", tmp_path / "fail_b"
    options: dict[str, object] = {
        "endpoint": etcd_server.endpoint,
        "run_id": run_id,
        "nnodes": "2",
        "max_restarts": 5,
        "conf": f"{FAST_CONF},max_rounds=1",
        "pause": 0.2,
        "until_file": tmp_path / "never",  # the workers step on until they fail
    }
    a = start(agents, tmp_path, "a", fail_file=fail_a, **options)
    b = start(agents, tmp_path, "b", fail_file=fail_b, **options)

    def ports(agent: Agent) -> list[str]:
        return list(dict.fromkeys(line["MASTER_PORT"] for line in agent.lines()))

    both = lambda: len(ports(a)) == len(ports(b)) == 1
    wait_for(both, 90, "both workers run round 0", a, b)
    fail_a.touch()  # the first loss
    again = lambda: len(ports(a)) == 2 and ports(b)[-1:] == ports(a)[-1:]
    wait_for(again, 90, "both workers run round 1", a, b)
    assert {line["WORLD_SIZE"] for line in a.lines() + b.lines()} == {"2"}
    assert a.lines()[-1]["TORCHELASTIC_RESTART_COUNT"] == "1"
    fail_b.touch()  # the second loss
    failed = time.monotonic()
    budget = "the run's restart budget is spent: max_rounds=1"
    for agent in (a, b):
        code = agent.wait(90)
        assert code != 0, agent.log()[-6000:]
        assert budget in agent.log(), agent.log()[-6000:]
        assert "round 2 was asked for" in agent.log()
        assert len(ports(agent)) == 2  # no worker ran a third round
    assert time.monotonic() - failed < 60


@pytest.mark.timeout(180)
def test_a_spare_agent_takes_the_place_of_a_killed_participant(
    etcd_server: EtcdServer, agents: list[Agent], tmp_path: Path, run_id: str
) -> None:
    """``--nnodes=2:2`` and a third agent, a hot spare (its label from
    ANYRDZV_TOPOLOGY); one participant's agent and workers are SIGKILLed: the spare's
    workers start with WORLD_SIZE 2, and with ``rank_order=stable`` the lost node's
    GROUP_RANK, while the survivor keeps its own."""
    options: dict[str, object] = {
        "endpoint": etcd_server.endpoint,
        "run_id": run_id,
        "nnodes": "2:2",
        "conf": FAST_CONF + ",rank_order=stable",
        "max_restarts": 3,
        "pause": 0.25,
        "until_file": tmp_path / "stop",  # the workers step on until it exists
    }
    a = start(agents, tmp_path, "a", **options, env={"ANYRDZV_TOPOLOGY": "rack1"})
    b = start(agents, tmp_path, "b", **options, env={"ANYRDZV_TOPOLOGY": "rack1"})
    both = lambda: all(any(line["WORLD_SIZE"] == "2" for line in agent.lines()) for agent in (a, b))
    wait_for(both, 90, "both workers run in a world of 2", a, b)
    c = start(agents, tmp_path, "c", **options, env={"ANYRDZV_TOPOLOGY": "rack2"})
    time.sleep(3)  # the spare is in and waits: the round is full
    assert c.lines() == []
    lost_rank = b.lines()[-1]["GROUP_RANK"]
    kept_rank = a.lines()[-1]["GROUP_RANK"]
    b.kill()
    wait_for(lambda: c.lines(), 60, "the spare's workers run", a, c)
    (tmp_path / "stop").touch()
    finished(a)
    finished(c)
    spare_lines = c.lines()
    assert spare_lines
    assert {line["WORLD_SIZE"] for line in spare_lines} == {"2"}
    assert spare_lines[-1]["done"]
    assert spare_lines[-1]["sum"] == 3.0
    assert spare_lines[0]["GROUP_RANK"] == lost_rank
    assert a.lines()[-1]["GROUP_RANK"] == kept_rank
    assert a.lines()[-1]["WORLD_SIZE"] == "2"
