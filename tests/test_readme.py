"""Every Python snippet of the README and of every page of the documentation
(``docs/**/*.md``) is real code: each one is type-checked with ``mypy --strict``, and run.

A snippet is a module (a program, or functions), or a fragment with top-level ``await``,
which becomes the body of ``async def snippet(...)``, whose parameters are the names the
text around it gives (``store``, ``lease``). A harness below says which, and defines, with
their types, the names a snippet uses without defining them (the agent's own work:
``train()``, ``beat()``). The code that mypy checks is the code that runs, but for one
thing: the etcd endpoints a snippet names (``etcd1:2379``, a cluster of three,
``localhost:2379``, ``https://etcd1:2379``) become a real etcd's, a test's own.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from anyrdzv import (
    EtcdStore,
    GetResult,
    HostMatch,
    MemoryStore,
    Rendezvous,
    RendezvousInfo,
    TxnResult,
)
from tests._support import README, ROOT
from tests._support.typecheck import mypy_strict

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from tests._support.etcd_server import EtcdServer

#: The documents whose snippets are code: the README and every page of the site.
DOCUMENTS = (
    README,
    *sorted(path for path in (ROOT / "docs").rglob("*.md") if "_build" not in path.parts),
)

#: The etcd endpoints that snippets name, which a test replaces with its own etcd's.
ENDPOINTS = (
    "https://etcd1:2379",
    "etcd1:2379,etcd2:2379,etcd3:2379",
    "etcd1:2379",
    "localhost:2379",
)


@dataclass(frozen=True)
class Snippet:
    """A fenced ``python`` block of a document."""

    path: Path
    line: int
    code: str


def snippets() -> list[Snippet]:
    """Every ``python`` block of :data:`DOCUMENTS`, indented ones too (in a list)."""
    found = []
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        for block in re.finditer(r"^( *)```python\n(.*?)^\1```", text, re.MULTILINE | re.DOTALL):
            line = text.count("\n", 0, block.start()) + 1
            found.append(Snippet(path, line, textwrap.dedent(block.group(2))))
    return found


@dataclass(frozen=True)
class Harness:
    """How one snippet is checked and run.

    :ivar marker: a line that only this snippet has
    :ivar prelude: the names the snippet uses and does not define, with their types
    :ivar parameters: for a fragment, the parameters of the ``async def snippet`` that
        it becomes, which returns its locals; ``None`` for a module
    """

    marker: str
    prelude: str = ""
    parameters: str | None = None


HARNESSES = {
    # The first screen's program: it runs itself, with anyio.run.
    "example": Harness("host, port = parse_rendezvous_endpoint("),
    "host": Harness('await matches_machine_hostname("192.0.2.2")', parameters=""),
    # The timers: the keep-alive and the beat are the agent's own.
    "timers": Harness(
        "async for tick in periodic(5",
        prelude=(
            "import anyio\n"
            "sent: list[str] = []\n"
            "beats: list[float] = []\n"
            "def send_keep_alive(node: str) -> None:\n"
            "    sent.append(node)\n"
            "async def beat() -> None:\n"
            "    beats.append(anyio.current_time())\n"
        ),
    ),
    # Heartbeats, with the agent's training.
    "heartbeat": Harness(
        "await train()",
        prelude="import anyio\nasync def train() -> None:\n    await anyio.sleep(0.1)\n",
        parameters="",
    ),
    # Ending on SIGTERM: a program, with the agent's work.
    "sigterm": Harness(
        "async def leave_on_signals(",
        prelude=(
            "import anyio\n"
            "from anyrdzv import LeaseStore\n"
            "async def run_agent(store: LeaseStore) -> None:\n"
            "    await anyio.sleep_forever()\n"
        ),
    ),
    "cluster": Harness('"etcd1:2379,etcd2:2379,etcd3:2379"', parameters=""),
    # A txn, on the store and lease that the text around it has.
    "txn": Harness(
        "result = await store.txn(",
        prelude="from anyrdzv import Lease, LeaseStore\n",
        parameters="store: LeaseStore, lease: Lease",
    ),
    "rendezvous": Harness(
        'async with Rendezvous(store, "job42", node="node-3"',
        prelude="from anyrdzv import LeaseStore\n",
        parameters="store: LeaseStore",
    ),
    # The errors a rendezvous block raises, caught as users catch them.
    "errors": Harness(
        'async with Rendezvous(store, "job42", node="a"',
        prelude="from anyrdzv import LeaseStore\n",
        parameters="store: LeaseStore",
    ),
    # The README's rendezvous: three nodes in one process.
    "three": Harness('print(name, "rank", info.rank, "of", info.world_size)'),
    # The tutorial: three nodes on MemoryStore, then a node process on etcd.
    "tutorial_memory": Harness("async def three_nodes() -> None:"),
    "tutorial_etcd": Harness("async def run_node(name: str) -> None:"),
    # The how-to's agent: a program, on the loop its argv names.
    "agent": Harness("async def cancel_on_sigterm("),
    "tls": Harness('ssl.create_default_context(cafile="ca.pem")', parameters=""),
    "auth": Harness('username="trainer", password=password', parameters=""),
    # The feature pages' programs: they run themselves, with anyio.run.
    "events": Harness("class Events(logging.Handler):"),
    "health": Harness("async def gpus_ok() -> None:"),
    "max_rounds": Harness("max_rounds=1, last_call_timeout=1"),
    "rank_order": Harness("async def replace_one() -> None:"),
    "spares": Harness("async def wait_as_spare() -> None:"),
    # The testing how-to's test, of a user's own agent.
    "testing": Harness("async def test_a_node_whose_renewals_fail_leaves"),
}


def find(name: str) -> Snippet:
    """The one snippet that harness ``name`` is for."""
    marker = HARNESSES[name].marker
    found = [snippet for snippet in snippets() if marker in snippet.code]
    assert len(found) == 1, f"{len(found)} snippets have {marker!r}"
    return found[0]


def module(name: str, endpoint: str | None = None) -> str:
    """The module that mypy checks and the test runs for snippet ``name``; with
    ``endpoint``, the etcd endpoints it names are that one."""
    harness = HARNESSES[name]
    code = find(name).code
    if endpoint is not None:
        for named in ENDPOINTS:
            code = code.replace(f'"{named}"', repr(endpoint))
    if harness.parameters is None:
        return harness.prelude + code
    body = textwrap.indent(f"{code}return locals()\n", "    ")
    return (
        f"{harness.prelude}\nasync def snippet({harness.parameters}) -> dict[str, object]:\n{body}"
    )


def load(name: str, endpoint: str | None = None) -> dict[str, Any]:
    """Run snippet ``name``'s module, and return its namespace."""
    snippet = find(name)
    namespace: dict[str, Any] = {"__name__": f"readme_{name}"}
    code = compile(module(name, endpoint), f"{snippet.path.name}:{snippet.line}", "exec")
    exec(code, namespace)  # noqa: S102 - the README's own code
    return namespace


def test_every_snippet_has_a_harness() -> None:
    """A new snippet needs a harness here (how to check and run it); a harness whose
    snippet is gone is a stale one."""
    for snippet in snippets():
        names = [name for name, h in HARNESSES.items() if h.marker in snippet.code]
        assert len(names) == 1, f"{snippet.path.name}:{snippet.line} matches {names}"
    for name in HARNESSES:
        find(name)


@pytest.mark.slow
@pytest.mark.timeout(300)  # a first mypy run checks anyio, httpx and trio too
def test_every_snippet_type_checks(tmp_path: Path) -> None:
    """``mypy --strict``, as on the package: a fragment's ``result.results[-1].kvs``,
    say, must first find out that the answer is a ``GetResult``."""
    sources = {f"readme_{name}.py": module(name) for name in HARNESSES}
    errors = mypy_strict(sources, tmp_path)
    assert errors == {name: [] for name in sources}


#: The async generators of anyrdzv: a loop that may stop early closes them with
#: ``contextlib.aclosing``, or trio under ``-X dev`` warns of a generator left open.
GENERATORS = {"watch_members", "watch_run", "changes", "watch_prefix"}


def test_async_generators_are_closed_with_aclosing() -> None:
    unclosed = []
    for snippet in snippets():
        for node in ast.walk(ast.parse(snippet.code)):
            if isinstance(node, ast.AsyncFor) and isinstance(node.iter, ast.Call):
                called = node.iter.func
                name = called.attr if isinstance(called, ast.Attribute) else ast.unparse(called)
                if name in GENERATORS:
                    unclosed.append(f"{snippet.path.name}:{snippet.line + node.lineno}: {name}")
    assert unclosed == []


def quick_start_blocks() -> list[str]:
    """The fenced command blocks of the README's Quick start, as ``.ci/run`` reads them."""
    text = README.read_text(encoding="utf-8")
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```bash\n(.*?)^```", quick_start, re.MULTILINE | re.DOTALL)


def test_quick_start_has_exactly_two_command_blocks() -> None:
    first, second = quick_start_blocks()
    assert first.rstrip().endswith(".venv/bin/anyrdzv demo")
    assert second.rstrip().endswith(".venv/bin/pytest -n auto")


def test_the_quick_starts_demo_runs() -> None:
    """The first block's last command, run from this checkout: the demo of a rendezvous,
    whose own tests (tests/cli/test_demo.py) check its timeline."""
    command = quick_start_blocks()[0].rstrip().rsplit("&& ", 1)[1].split()
    assert command[0] == ".venv/bin/anyrdzv"
    proc = subprocess.run(
        [sys.executable, "-m", "anyrdzv", *command[1:]],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-3].startswith("summary: ")


def test_the_readme_is_short() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 200


# -- each snippet, run ------------------------------------------------------------------


def test_the_example_runs(tmp_path: Path) -> None:
    assert len(find("example").code.strip().splitlines()) <= 12  # the first screen's
    program = tmp_path / "example.py"
    program.write_text(module("example"), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(program)], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("fe80::1%eth0 29400 {'join_timeout': '60'")


def run_page_program(name: str, tmp_path: Path) -> str:
    """Run snippet ``name``, a program, in a fresh process; its output (its log records,
    WARNINGs on stderr, are part of what the page shows)."""
    program = tmp_path / f"{name}.py"
    program.write_text(module(name), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(program)], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_events_page_runs(tmp_path: Path) -> None:
    lines = run_page_program("events", tmp_path).splitlines()
    assert {"round_complete a 0 None 1", "joined a 0 0 1"} <= set(lines), lines


def test_the_health_page_runs(tmp_path: Path) -> None:
    assert run_page_program("health", tmp_path).splitlines()[0].startswith("a False ")


def test_the_max_rounds_page_runs(tmp_path: Path) -> None:
    out = run_page_program("max_rounds", tmp_path)
    assert out.count("max_rounds=1") == 2, out


def test_the_rank_order_page_runs(tmp_path: Path) -> None:
    """The page's program prints what the page shows it prints."""
    page = (ROOT / "docs" / "features" / "rank-order.md").read_text(encoding="utf-8")
    shown = page.split("It prints:\n\n```text\n", 1)[1].split("```", 1)[0]
    assert run_page_program("rank_order", tmp_path) == shown


def test_the_spares_page_runs(tmp_path: Path) -> None:
    lines = run_page_program("spares", tmp_path).splitlines()
    assert lines == [
        "('a', 'b')",
        "counted as waiting: 0",
        "spare: 1 ('a', 'spare')",
        "a: 0 ('a', 'spare')",
        "no last call: True",
    ]


@pytest.mark.anyio
async def test_the_host_check_runs() -> None:
    found = await load("host")["snippet"]()
    assert isinstance(found["m"], HostMatch)
    assert found["m"].rule in ("resolves-to-local", "no-match", "unresolvable", "timeout")


def test_the_timers_run() -> None:
    """On trio's MockClock: the snippet's intervals are seconds long, and its periodic()
    loop never ends; a minute of virtual time passes at once."""
    from trio.testing import MockClock

    namespace = load("timers")

    async def main() -> None:
        with anyio.move_on_after(60):
            await namespace["main"]()

    anyio.run(main, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)})
    assert namespace["sent"] == []  # each timer stops before its first interval is up
    assert 10 <= len(namespace["beats"]) <= 12  # fixed-rate, every 5 s


async def printing(call: Callable[[], Awaitable[object]], until: str, limit: float) -> str:
    """What ``call()`` prints, until it has printed ``until``; then it is cancelled."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), anyio.fail_after(limit):
        async with anyio.create_task_group() as tg:

            async def stop_once_printed() -> None:
                while until not in out.getvalue():  # noqa: ASYNC110 - polls a StringIO
                    await anyio.sleep(0.01)
                tg.cancel_scope.cancel()

            tg.start_soon(stop_once_printed)
            await call()
    return out.getvalue()


@pytest.mark.anyio
async def test_the_heartbeat_snippet_runs(etcd_server: EtcdServer) -> None:
    """On a real etcd: the heartbeat, then a watch of the group, from inside the store's
    block; it watches for ever, so it is cancelled once its snapshot is printed."""
    snippet = load("heartbeat", etcd_server.endpoint)["snippet"]
    printed = await printing(snippet, "MembersSnapshot(", limit=30)
    assert printed.startswith("MembersSnapshot(members={}, revision=")  # node-0 has left


@pytest.mark.slow
def test_the_sigterm_snippet_leaves_at_once(etcd_server: EtcdServer, tmp_path: Path) -> None:
    """The program, on a real etcd, sent SIGTERM once its member is in: it exits 0, and
    its key is gone at once, not after its lease's TTL (15 s)."""
    program = tmp_path / "sigterm.py"
    program.write_text(module("sigterm", etcd_server.endpoint), encoding="utf-8")
    key = "/anyrdzv/job42/members/node-0"

    def present() -> bool:
        async def get() -> bool:
            async with EtcdStore(etcd_server.endpoint) as store:
                return await store.get(key) is not None

        return anyio.run(get)

    with subprocess.Popen([sys.executable, str(program)], stderr=subprocess.PIPE) as proc:
        deadline = time.monotonic() + 30
        while not present():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the member never joined"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        _, err = proc.communicate(timeout=20)
        gone = not present()
        took = time.monotonic() - signalled
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
    assert gone
    assert took < 10


@pytest.mark.anyio
async def test_the_cluster_snippet_runs(etcd_server: EtcdServer) -> None:
    """Its three members are one real etcd's endpoint."""
    found = await load("cluster", etcd_server.endpoint)["snippet"]()
    assert isinstance(found["store"], EtcdStore)


@pytest.mark.anyio
async def test_the_txn_snippet_runs() -> None:
    store = MemoryStore()
    lease = await store.grant(10)
    snippet = load("txn")["snippet"]
    found = await snippet(store, lease)
    result, holder = found["result"], found["holder"]
    assert isinstance(result, TxnResult)
    assert result.succeeded
    assert isinstance(result.results[-1], GetResult)
    assert (holder.value, holder.lease) == (b"me", lease.id)
    found = await snippet(store, lease)  # again: /lock is taken
    assert not found["result"].succeeded
    assert found["holder"].value == b"me"


def test_the_rendezvous_snippet_runs() -> None:
    """Node ``node-3`` of the snippet, and a peer that closes the run once both hold
    round 0: the snippet's loop over ``changes()`` ends on ``"closed"``. On trio's
    MockClock, since the snippet keeps torch's 30-s last call."""
    from trio.testing import MockClock

    snippet = load("rendezvous")["snippet"]
    found: dict[str, Any] = {}

    async def main() -> RendezvousInfo:
        store = MemoryStore()
        peer = Rendezvous(store, "job42", node="node-4", min_nodes=2, max_nodes=4)

        async def node_3() -> None:
            found.update(await snippet(store))

        async with anyio.create_task_group() as tg, peer:
            tg.start_soon(node_3)
            info = await peer.next_rendezvous()
            await peer.set_closed()
        return info

    info = anyio.run(
        main, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)}
    )
    assert found["change"] == "closed"
    assert found["info"] == RendezvousInfo(
        "job42", 0, 0, 2, ("node-3", "node-4"), {"node-3": b"10.0.0.3", "node-4": b""}
    )
    assert info.rank == 1


def run_program(name: str, *args: str, endpoint: str | None = None) -> str:
    """Run snippet ``name``, a program, in a fresh process; return what it printed."""
    with tempfile.TemporaryDirectory() as workdir:
        program = Path(workdir) / f"{name}.py"
        program.write_text(module(name, endpoint), encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, str(program), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def test_the_readmes_rendezvous_runs() -> None:
    printed = run_program("three")
    assert sorted(printed.splitlines()) == ["a rank 0 of 3", "b rank 1 of 3", "c rank 2 of 3"]


def test_the_tutorials_three_nodes_run() -> None:
    printed = run_program("tutorial_memory")
    assert sorted(printed.splitlines()) == [
        f"node-{name}: round 0, rank {rank} of 3" for rank, name in enumerate("abc")
    ]


def test_the_errors_snippet_runs() -> None:
    """Node ``a`` of the snippet is alone in a run of 2 to 3: its ``join_timeout`` (600 s)
    runs out, on trio's MockClock at once, and the snippet's ``except RendezvousTimeout:``
    catches it."""
    from trio.testing import MockClock

    snippet = load("errors")["snippet"]

    async def main() -> dict[str, object]:
        found: dict[str, object] = await snippet(MemoryStore())
        return found

    found = anyio.run(
        main, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)}
    )
    assert "info" not in found  # no round: the RendezvousTimeout branch ran
    assert isinstance(found["rdzv"], Rendezvous)


def test_the_testing_snippet_passes() -> None:
    """The how-to's test of a user's agent, run as pytest would, on trio's MockClock:
    it passes, so its HeartbeatLost came."""
    from trio.testing import MockClock

    test = load("testing")["test_a_node_whose_renewals_fail_leaves_with_heartbeat_lost"]
    anyio.run(test, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)})


def start_program(name: str, workdir: Path, endpoint: str, *args: str) -> subprocess.Popen[str]:
    """Start snippet ``name``, a program, with its stdout and stderr in files of
    ``workdir`` (``<args>.out``, ``.err``): several of them never block on a pipe."""
    program = workdir / f"{name}.py"
    code = module(name, endpoint)
    if not program.exists() or program.read_text(encoding="utf-8") != code:
        # Written whole, then renamed into place: a process started from it a moment
        # ago may still be reading it (a truncated file once ran as an empty program).
        written = workdir / f".{name}-{os.getpid()}.py"
        written.write_text(code, encoding="utf-8")
        os.replace(written, program)
    tag = "-".join(args)
    with open(workdir / f"{tag}.out", "w") as out, open(workdir / f"{tag}.err", "w") as err:
        return subprocess.Popen(
            [sys.executable, str(program), *args], stdout=out, stderr=err, text=True
        )


def wait_for(path: Path, text: str, limit: float) -> None:
    """Wait until file ``path`` holds ``text``."""
    deadline = time.monotonic() + limit
    while text not in path.read_text(encoding="utf-8"):
        if time.monotonic() >= deadline:
            printed = {
                other.name: other.read_text(encoding="utf-8")
                for pattern in ("*.out", "*.err")
                for other in sorted(path.parent.glob(pattern))
            }
            raise AssertionError(f"no {text!r} in {path.name} after {limit} s; printed: {printed}")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_tutorials_node_killed_on_etcd(own_etcd_server: EtcdServer, tmp_path: Path) -> None:
    """The tutorial's steps 2 and 3: three node processes on a real etcd ranked in round
    0; node b SIGKILLed; a and c see it lost and are ranked in round 1, of 2."""
    nodes = {
        name: start_program("tutorial_etcd", tmp_path, own_etcd_server.endpoint, name)
        for name in "abc"
    }
    try:
        for rank, name in enumerate("abc"):
            wait_for(tmp_path / f"{name}.out", f"{name}: round 0, rank {rank} of 3", 30)
        nodes["b"].kill()
        for rank, name in enumerate("ac"):
            wait_for(tmp_path / f"{name}.out", f"{name}: lost", 30)
            wait_for(tmp_path / f"{name}.out", f"{name}: round 1, rank {rank} of 2", 30)
    finally:
        for proc in nodes.values():
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_agent_leaves_cleanly_on_sigterm(
    own_etcd_server: EtcdServer, tmp_path: Path, backend: str
) -> None:
    """The how-to's agent, on asyncio and on trio, on a real etcd: ranked in round 0 (it
    is alone: after the last call), then SIGTERMed, it leaves the run: exit status 0,
    and no key of the run is left, at once, not after its lease's TTL (15 s)."""
    proc = start_program("agent", tmp_path, own_etcd_server.endpoint, "node-1", backend)
    try:
        wait_for(tmp_path / f"node-1-{backend}.out", "node-1: round 0, rank 0 of 1", 30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, (tmp_path / f"node-1-{backend}.err").read_text()
    finally:
        proc.kill()
        proc.wait()
    printed = (tmp_path / f"node-1-{backend}.out").read_text(encoding="utf-8")
    assert printed.endswith("node-1: left the run\n")
    assert "Traceback" not in (tmp_path / f"node-1-{backend}.err").read_text(encoding="utf-8")

    async def keys() -> dict[str, bytes]:
        async with EtcdStore(own_etcd_server.endpoint) as store:
            found, _ = await store.get_prefix("/anyrdzv/job42/")
        return found

    assert anyio.run(keys) == {}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_tls_snippet_runs(
    tmp_path: Path, need_etcd: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an etcd that serves HTTPS with a certificate of its own CA, and wants a client
    certificate signed by it: the snippet's files, by their names, in its folder."""
    from tests._support.cli import MutualTlsEtcdServer, make_pki, mutual_tls_variables

    pki = make_pki(tmp_path)
    server = MutualTlsEtcdServer(tmp_path / "etcd", pki)
    (tmp_path / "etcd").mkdir()
    with monkeypatch.context() as patch:
        for name, value in mutual_tls_variables(pki).items():
            patch.setenv(name, value)
        server.start()
    try:
        monkeypatch.chdir(tmp_path)
        snippet = load("tls", server.url)["snippet"]
        found = anyio.run(snippet)
    finally:
        server.stop()
    assert found["status"].quorum is True


@pytest.mark.slow
def test_the_auth_snippet_runs(
    own_etcd_server: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an etcd with auth on, and a user ``trainer`` whose password is in the
    environment, as the snippet reads it."""
    import httpx

    with httpx.Client(base_url=own_etcd_server.url, timeout=5) as client:
        for path, body in (
            ("/v3/auth/user/add", {"name": "trainer", "password": "trainer-pw"}),
            ("/v3/auth/role/add", {"name": "writer"}),
            (
                "/v3/auth/role/grant",
                {
                    "name": "writer",
                    "perm": {
                        "permType": "READWRITE",
                        "key": "L2FueXJkenYv",
                        "range_end": "L2FueXJkenYw",
                    },
                },
            ),
            ("/v3/auth/user/grant", {"user": "trainer", "role": "writer"}),
        ):
            assert client.post(path, json=body).status_code == 200, path
    own_etcd_server.enable_auth("root-pw")
    monkeypatch.setenv("ANYRDZV_ETCD_PASSWORD", "trainer-pw")
    anyio.run(load("auth", own_etcd_server.endpoint)["snippet"])

    async def written() -> bytes | None:
        async with EtcdStore(own_etcd_server.endpoint, username="root", password="root-pw") as s:
            kv = await s.get("/anyrdzv/hello")
        return None if kv is None else kv.value

    assert anyio.run(written) == b"world"
