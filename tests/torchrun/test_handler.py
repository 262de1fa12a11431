"""The anyrdzv-etcd handler in-process: torch's handler API, as torchrun's agent calls it."""

from __future__ import annotations

import ast
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from anyrdzv import EtcdStore, Lease

if TYPE_CHECKING:
    from collections.abc import Iterator

    from typing_extensions import Self

    from tests._support.etcd_server import EtcdServer

pytestmark = pytest.mark.usefixtures("torch_installed")

from tests._support import PACKAGE as SRC


def test_the_core_never_imports_torch() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).parts[0] == "torchrun":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] == "torch"]
    assert offenders == []


def test_the_entry_point_is_cheap_and_torch_registers_it() -> None:
    code = """
import sys, threading
from importlib.metadata import entry_points
(ep,) = [e for e in entry_points(group="torchrun.handlers") if e.name == "anyrdzv-etcd"]
creator = ep.load()()
assert "torch" not in sys.modules, "the entry point imported torch"
assert threading.active_count() == 1, threading.enumerate()
from torch.distributed.elastic.rendezvous import registry
from torch.distributed.elastic.rendezvous.registry import handler_registry
handler_registry.register("anyrdzv-etcd", creator)  # no error: it holds creator, or none
try:
    handler_registry.register("anyrdzv-etcd", lambda params: None)
except ValueError as exc:  # it holds one, and that one is creator
    assert f"is already registered with '{creator}'" in str(exc), exc
else:
    raise AssertionError("nothing was registered as anyrdzv-etcd")
assert threading.active_count() == 1, threading.enumerate()
print("ok")
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert "Exception while registering" not in proc.stderr


def params(endpoint: str, run_id: str, conf: dict[str, Any] | None = None, **kw: Any) -> Any:
    from torch.distributed.elastic.rendezvous import RendezvousParameters

    config: dict[str, Any] = {
        "keep_alive_interval": "1",
        "keep_alive_max_attempt": "2",
        "last_call_timeout": "0.2",
        "timeout": 900,
    }
    config.update(conf or {})
    options = {"min_nodes": 1, "max_nodes": 2, "local_addr": "127.0.0.1", **kw}
    return RendezvousParameters("anyrdzv-etcd", endpoint, run_id, **options, **config)


@pytest.fixture
def handlers() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for handler in made:
        handler.shutdown()


def make(handlers: list[Any], *args: Any, **kw: Any) -> Any:
    from anyrdzv.torchrun import create_handler

    handler = create_handler(params(*args, **kw))
    handlers.append(handler)
    return handler


def test_a_round_through_the_api(etcd_server: EtcdServer, handlers: list[Any]) -> None:
    from torch._C._distributed_c10d import PrefixStore

    run_id = f"h-{uuid.uuid4().hex[:8]}"
    handler = make(handlers, etcd_server.endpoint, run_id)
    assert handler.get_backend() == "anyrdzv-etcd"
    assert handler.get_run_id() == run_id
    assert handler.use_agent_store is False
    info = handler.next_rendezvous()
    assert (info.rank, info.world_size) == (0, 1)
    assert isinstance(info.store, PrefixStore)
    assert info.bootstrap_store_info.master_addr == "127.0.0.1"
    assert 0 < info.bootstrap_store_info.master_port < 65536
    info.store.set("k", "v")
    assert info.store.get("k") == b"v"
    assert handler.num_nodes_waiting() == 0
    assert handler.is_closed() is False
    handler.set_closed()
    assert handler.is_closed() is True
    from torch.distributed.elastic.rendezvous import RendezvousClosedError

    with pytest.raises(RendezvousClosedError):
        handler.next_rendezvous()
    assert handler.shutdown() is True
    assert handler.shutdown() is True  # once is enough
    with pytest.raises(RendezvousClosedError, match="shut down"):
        handler.is_closed()


def test_a_waiting_node_is_counted_without_a_store_round_trip(
    etcd_server: EtcdServer, handlers: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from anyrdzv.torchrun._loop import LoopThread

    run_id = f"h-{uuid.uuid4().hex[:8]}"
    a = make(handlers, etcd_server.endpoint, run_id)
    first = a.next_rendezvous()
    b = make(handlers, etcd_server.endpoint, run_id)
    joined: list[Any] = []
    thread = threading.Thread(target=lambda: joined.append(b.next_rendezvous()))
    thread.start()
    deadline = time.monotonic() + 10
    while a.num_nodes_waiting() == 0:
        assert time.monotonic() < deadline, "the waiting node was never counted"
        time.sleep(0.01)
    assert a.num_nodes_waiting() == 1

    def no_loop(*args: object) -> None:
        raise AssertionError("num_nodes_waiting went to the loop")

    with monkeypatch.context() as patch:  # the count is read without a call into a loop
        patch.setattr(LoopThread, "run", no_loop)
        assert a.num_nodes_waiting() == 1
    second = a.next_rendezvous()
    thread.join(10)
    assert second.world_size == 2
    assert joined[0].world_size == 2
    assert a.num_nodes_waiting() == 0
    assert first.store is not second.store


def test_a_lost_heartbeat_is_raised_by_the_next_call(
    etcd_server: EtcdServer, handlers: list[Any]
) -> None:
    from torch.distributed.elastic.rendezvous import RendezvousConnectionError

    run_id = f"h-{uuid.uuid4().hex[:8]}"
    handler = make(handlers, etcd_server.endpoint, run_id)
    handler.next_rendezvous()
    anyio.run(revoke_the_member, etcd_server.endpoint, run_id)  # as if etcd let it expire
    deadline = time.monotonic() + 10

    def lost() -> bool:
        try:
            handler.num_nodes_waiting()
        except RendezvousConnectionError:
            return True
        return False

    while not lost():
        assert time.monotonic() < deadline, "the lost heartbeat was never raised"
        time.sleep(0.05)
    with pytest.raises(RendezvousConnectionError, match="heartbeat of this node was lost"):
        handler.num_nodes_waiting()
    with pytest.raises(RendezvousConnectionError, match="heartbeat"):
        handler.next_rendezvous()
    assert handler.shutdown() is True


async def revoke_the_member(endpoint: str, run_id: str) -> None:
    """Revoke the lease of the one node of ``run_id``: its heartbeat is lost."""
    async with EtcdStore(endpoint) as store:
        (member,), _ = await store.get_prefix_kv(f"/anyrdzv/{run_id}/nodes/")
        assert member.lease is not None
        await store.revoke(Lease(member.lease, 1))


class Interrupted(Exception):
    pass


def test_a_signal_interrupts_next_rendezvous_at_once(
    etcd_server: EtcdServer, handlers: list[Any]
) -> None:
    run_id = f"h-{uuid.uuid4().hex[:8]}"
    handler = make(handlers, etcd_server.endpoint, run_id, min_nodes=2, max_nodes=2)

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    # SIGUSR1 from a timer thread: pytest-timeout owns SIGALRM.
    previous = signal.signal(signal.SIGUSR1, interrupt)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGUSR1))
    try:
        timer.start()
        started = time.monotonic()
        with pytest.raises(Interrupted):
            handler.next_rendezvous()  # waits for a second node that never comes
        assert time.monotonic() - started < 2.5
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)
    assert handler.is_closed() is False  # the loop is free: the call's task was cancelled
    assert handler.shutdown() is True


def test_a_handler_inherited_through_fork_fails_clearly(
    etcd_server: EtcdServer, handlers: list[Any]
) -> None:
    run_id = f"h-{uuid.uuid4().hex[:8]}"
    handler = make(handlers, etcd_server.endpoint, run_id)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        message = "no error"
        try:
            handler.num_nodes_waiting()
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            message = f"{type(exc).__name__}: {exc}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert message.startswith("RendezvousConnectionError")
    assert "fork()" in message
    assert handler.num_nodes_waiting() == 0  # the parent's is unharmed


def test_bad_conf_and_an_unreachable_etcd(etcd_server: EtcdServer, handlers: list[Any]) -> None:
    from torch.distributed.elastic.rendezvous import RendezvousConnectionError

    from tests._support.etcd_server import free_port

    def loop_threads() -> list[str]:
        # The handlers' loop threads alone: anyio's idle worker threads (another test's)
        # end by themselves meanwhile.
        return [t.name for t in threading.enumerate() if t.name.startswith("anyrdzv-etcd-")]

    threads = loop_threads()
    with pytest.raises(ValueError, match="'keep_alive_interval'"):
        make(handlers, etcd_server.endpoint, "r", {"keep_alive_interval": "often"})
    with pytest.raises(ValueError, match="endpoint"):
        make(handlers, "127.0.0.1:99999", "r")
    with pytest.raises(ValueError, match="run_id"):
        make(handlers, etcd_server.endpoint, "a/b")
    started = time.monotonic()
    with pytest.raises(RendezvousConnectionError, match=r"127\.0\.0\.1"):
        make(handlers, f"127.0.0.1:{free_port()}", "r", {"store_timeout": "1"})
    assert time.monotonic() - started < 10
    time.sleep(0.2)
    assert loop_threads() == threads  # every loop thread was stopped


class Peer:
    """A node of the run that is not a torchrun agent: a plain Rendezvous in a thread of
    its own, which joins one round and then either holds it (alive, but it never
    publishes a bootstrap key) or dies (its lease revoked, as when etcd lets it expire)."""

    def __init__(self, endpoint: str, run_id: str, node: str) -> None:
        self.endpoint, self.run_id, self.node = endpoint, run_id, node
        self.joined = threading.Event()
        self.die = threading.Event()
        self.died_at: float | None = None
        self.thread = threading.Thread(target=anyio.run, args=(self._run,), daemon=True)
        self.thread.start()

    async def _run(self) -> None:
        from anyrdzv import Rendezvous

        async with (
            EtcdStore(self.endpoint) as store,
            Rendezvous(
                store,
                self.run_id,
                node=self.node,
                min_nodes=2,
                max_nodes=2,
                keep_alive_interval=1,
                keep_alive_max_attempt=2,
            ) as rendezvous,
        ):
            await rendezvous.next_rendezvous()
            self.joined.set()
            await anyio.to_thread.run_sync(self.die.wait)
        self.died_at = time.monotonic()  # leaving revoked its lease

    def kill(self) -> None:
        self.die.set()
        self.thread.join(10)
        assert self.died_at is not None


class Records(logging.Handler):
    """The records of one logger, with the time each came."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[float, logging.LogRecord]] = []
        self.logger = logging.getLogger(name)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((time.monotonic(), record))

    def __enter__(self) -> Self:
        self.logger.addHandler(self)
        self.logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(logging.NOTSET)

    def first(self, text: str) -> float | None:
        return next((at for at, r in self.records if text in r.getMessage()), None)


def call_in_thread(func: Any) -> tuple[threading.Thread, list[Any]]:
    """Run ``func()`` in a thread; its result or error lands in the list."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(func())
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["asyncio", "uvloop", "trio"])
@pytest.mark.parametrize("dead", ["0-dead", "~dead"], ids=["dead-rank-0", "dead-rank-1"])
def test_a_participant_dead_before_the_bootstrap_does_not_hang_its_peers(
    etcd_server: EtcdServer, handlers: list[Any], backend: str, dead: str
) -> None:
    """A node joins round 0 and dies before the round's bootstrap: whether it was rank 0
    (it never publishes MASTER_ADDR) or rank 1 (it never says it is ready), the other
    participant's wait ends as soon as its lease is gone, and the handler takes the
    next round, with the node that comes later."""
    run_id = f"h-{uuid.uuid4().hex[:8]}"
    conf = {"async_backend": backend}
    peer = Peer(etcd_server.endpoint, run_id, dead)
    with Records("anyrdzv.torchrun._handler") as records:
        y = make(handlers, etcd_server.endpoint, run_id, conf, min_nodes=2, max_nodes=2)
        thread, outcome = call_in_thread(y.next_rendezvous)
        assert peer.joined.wait(20), "round 0 never completed"
        time.sleep(0.5)  # y waits in round 0's bootstrap
        assert not outcome
        peer.kill()
        while records.first("joining the next round") is None:
            assert time.monotonic() - peer.died_at < 2, "y still waits in round 0"  # type: ignore[operator]
            time.sleep(0.01)
        assert "lost its lease" in "".join(r.getMessage() for _, r in records.records)
        z = make(handlers, etcd_server.endpoint, run_id, conf, min_nodes=2, max_nodes=2)
        z_info = z.next_rendezvous()
        thread.join(20)
    (y_info,) = outcome
    assert not isinstance(y_info, BaseException), y_info
    assert y_info.world_size == z_info.world_size == 2
    assert {y_info.rank, z_info.rank} == {0, 1}
    assert y_info.bootstrap_store_info == z_info.bootstrap_store_info
    assert y_info.store.get("MASTER_ADDR") == b"127.0.0.1"


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_silent_participant_ends_the_bootstrap_after_join_timeout(
    etcd_server: EtcdServer, handlers: list[Any]
) -> None:
    """A participant that holds its lease but never publishes: the wait is bounded by
    join_timeout (the store's timeout), and ends in a RendezvousTimeoutError, the kind of
    error torchrun's agent handles."""
    from torch.distributed.elastic.rendezvous import RendezvousTimeoutError

    run_id = f"h-{uuid.uuid4().hex[:8]}"
    peer = Peer(etcd_server.endpoint, run_id, "0-silent")
    y = make(
        handlers, etcd_server.endpoint, run_id, {"join_timeout": "3"}, min_nodes=2, max_nodes=2
    )
    started = time.monotonic()
    with pytest.raises(RendezvousTimeoutError, match="join_timeout") as raised:
        y.next_rendezvous()
    assert 3 <= time.monotonic() - started < 3 + 10
    assert "MASTER_ADDR" in str(raised.value)
    peer.kill()


def test_the_store_timeout_is_join_timeout(etcd_server: EtcdServer, handlers: list[Any]) -> None:
    from datetime import timedelta

    run_id = f"h-{uuid.uuid4().hex[:8]}"
    handler = make(handlers, etcd_server.endpoint, run_id, {"join_timeout": "42"})
    info = handler.next_rendezvous()
    assert info.store.timeout == timedelta(seconds=42)


def test_a_node_never_admitted_leaves_the_run_open(
    etcd_server: EtcdServer, handlers: list[Any]
) -> None:
    """A node whose min/max disagree with the run's is refused; its shutdown() (and
    set_closed()) leave the run as it is, and the run's nodes go on."""
    from torch.distributed.elastic.rendezvous import RendezvousStateError

    run_id = f"h-{uuid.uuid4().hex[:8]}"
    a = make(handlers, etcd_server.endpoint, run_id, max_nodes=1)
    a.next_rendezvous()
    refused = make(handlers, etcd_server.endpoint, run_id, min_nodes=3, max_nodes=3)
    with pytest.raises(RendezvousStateError, match="max_nodes=3"):
        refused.next_rendezvous()
    refused.set_closed()
    assert refused.shutdown() is True
    assert a.is_closed() is False
    info = a.next_rendezvous()  # a restart: a new round
    assert (info.rank, info.world_size) == (0, 1)
    # A node that never completed a join: the same.
    waiting = make(handlers, etcd_server.endpoint, run_id, {"join_timeout": "0.5"}, max_nodes=1)
    from torch.distributed.elastic.rendezvous import RendezvousTimeoutError

    with pytest.raises(RendezvousTimeoutError):
        waiting.next_rendezvous()  # the round is full
    assert waiting.shutdown() is True
    assert a.is_closed() is False
    assert a.shutdown() is True


def test_a_process_that_exits_without_shutdown_leaves_the_run_open(
    etcd_server: EtcdServer,
) -> None:
    """torchrun skips shutdown() when a signal ends the agent: the node leaves at exit
    all the same (its lease revoked at once, so its peers see it gone), and the run
    stays open."""
    run_id = f"h-{uuid.uuid4().hex[:8]}"
    code = f"""
from torch.distributed.elastic.rendezvous import RendezvousParameters
from anyrdzv.torchrun import create_handler
params = RendezvousParameters("anyrdzv-etcd", {etcd_server.endpoint!r}, {run_id!r}, 1, 2,
    local_addr="127.0.0.1", keep_alive_interval="5", last_call_timeout="0.2")
handler = create_handler(params)
print(handler.next_rendezvous().world_size, flush=True)
raise SystemExit(3)  # no shutdown()
"""

    async def members() -> list[str]:
        async with EtcdStore(etcd_server.endpoint) as store:
            kvs, _ = await store.get_prefix_kv(f"/anyrdzv/{run_id}/")
            return [kv.key for kv in kvs]

    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.strip() == "1"
    # Its lease (TTL 15 s) was revoked at exit, and it was the last node: no key is left,
    # and in particular no closed state.
    assert anyio.run(members) == []


def test_sigterm_before_the_workers_start_leaves_the_run(etcd_server: EtcdServer) -> None:
    """Before torchrun's agent starts its first workers, SIGTERM has its default action:
    the handler turns it into torchrun's SignalException, so that the node leaves the
    run at exit (its lease revoked at once) with the run left open."""
    run_id = f"h-{uuid.uuid4().hex[:8]}"
    code = f"""
import signal
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.rendezvous import RendezvousParameters
from anyrdzv.torchrun import create_handler
params = RendezvousParameters("anyrdzv-etcd", {etcd_server.endpoint!r}, {run_id!r}, 2, 2,
    local_addr="127.0.0.1", keep_alive_interval="5")
handler = create_handler(params)
print("waiting", flush=True)
try:
    handler.next_rendezvous()  # waits for a second node
except SignalException as exc:
    print("signal", exc.sigval.name, flush=True)
    raise
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "waiting"

    async def keys() -> list[str]:
        async with EtcdStore(etcd_server.endpoint) as store:
            kvs, _ = await store.get_prefix_kv(f"/anyrdzv/{run_id}/")
            return [kv.key for kv in kvs]

    deadline = time.monotonic() + 20
    while not any("/nodes/" in key for key in anyio.run(keys)):
        assert time.monotonic() < deadline, "the node never joined"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert out.strip() == "signal SIGTERM", err
    assert anyio.run(keys) == []  # its lease revoked (TTL 15 s), the run never closed


def readme_block(after: str) -> str:
    """The first fenced block of the torchrun guide (``docs/howto/torchrun.md``, once the
    README's section) after the line that holds ``after``."""
    from tests._support import ROOT

    guide = ROOT / "docs" / "howto" / "torchrun.md"
    lines = guide.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    fences = [i for i in range(start, len(lines)) if lines[i].strip().startswith("```")]
    return "\n".join(line.strip() for line in lines[fences[0] + 1 : fences[1]])


def test_a_scoped_etcd_user_as_the_readme_makes_it(
    own_etcd_server: EtcdServer, handlers: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The torchrun guide's etcdctl commands make a user whose role grants /anyrdzv/ only (and
    one whose role grants one run only): a whole round works for each, and a request
    outside the grant is refused with a message that names the key and the user."""
    from torch.distributed.elastic.rendezvous import RendezvousConnectionError

    etcdctl = shutil.which("etcdctl")
    if etcdctl is None:
        message = "etcdctl is not installed (apt-get install etcd-client)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}: CI must run the scoped-user test")
        pytest.skip(message)
    run_id = f"h-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "ETCDCTL_ENDPOINTS": own_etcd_server.url}
    commands = readme_block("A scoped etcd user").replace("ROOT_PASSWORD", "rootpw")
    commands = commands.replace("TRAINER_PASSWORD", "trainerpw")
    root = ["--user", "root:rootpw"]
    commands_of_one_run = [
        ["role", "add", "one-run", *root],
        ["role", "grant-permission", "one-run", "--prefix=true", "readwrite", f"/anyrdzv/{run_id}/"]
        + root,
        ["user", "add", "solo:solopw", *root],
        ["user", "grant-role", "solo", "one-run", *root],
    ]
    for command in [shlex.split(line) for line in commands.splitlines()] + [
        ["etcdctl", *args] for args in commands_of_one_run
    ]:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, (command, done.stderr)
    for user, password in (("trainer", "trainerpw"), ("solo", "solopw")):
        monkeypatch.setenv("ANYRDZV_ETCD_PASSWORD", password)
        handler = make(handlers, own_etcd_server.endpoint, run_id, {"user": user})
        info = handler.next_rendezvous()
        assert info.world_size == 1
        info.store.set("k", user)
        assert info.store.get("k") == user.encode()
        assert handler.shutdown() is True
    other = f"{run_id}-other"
    with pytest.raises(RendezvousConnectionError) as refused:
        make(handlers, own_etcd_server.endpoint, other, {"user": "solo"})
    assert f"(key '/anyrdzv/{other}/') for user 'solo'" in str(refused.value)
    assert "permission denied" in str(refused.value)


def test_unknown_conf_keys_are_one_warning(
    etcd_server: EtcdServer, handlers: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    run_id = f"h-{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.WARNING, logger="anyrdzv.torchrun"):
        make(handlers, etcd_server.endpoint, run_id, {"join_timout": "5", "is_host": "1"})
    (record,) = [r for r in caplog.records if "--rdzv-conf" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "'join_timout' (did you mean 'join_timeout'?)" in record.getMessage()
    assert "'is_host'" in record.getMessage()
    assert "'timeout'" not in record.getMessage().split("ignored")[0]  # torchrun's own


def test_store_errors_name_the_torchrun_levers(
    own_etcd_server: EtcdServer, handlers: list[Any]
) -> None:
    """https:// to a plain etcd names --rdzv-conf cacert=, and auth with no user names
    user= and ANYRDZV_ETCD_PASSWORD; neither names the Python API's ssl= or username."""
    from torch.distributed.elastic.rendezvous import RendezvousConnectionError

    port = own_etcd_server.endpoint.rsplit(":", 1)[1]
    conf = {"store_timeout": "2"}
    with pytest.raises(RendezvousConnectionError) as tls:
        make(handlers, f"https://127.0.0.1:{port}", "r", conf)
    assert "--rdzv-conf cacert=" in str(tls.value)
    assert "http:// endpoint" in str(tls.value)
    assert "ssl=" not in str(tls.value)
    own_etcd_server.enable_auth("s3cret")
    with pytest.raises(RendezvousConnectionError) as auth:
        make(handlers, own_etcd_server.endpoint, "r", conf)
    assert "set --rdzv-conf user=<etcd user>" in str(auth.value)
    assert "ANYRDZV_ETCD_PASSWORD" in str(auth.value)
    assert "username" not in str(auth.value)


async def read_health(endpoint: str, run_id: str) -> dict[str, tuple[bool | None, str | None]]:
    """Each node of ``run_id``'s health, as ``anyrdzv rendezvous`` shows it."""
    from anyrdzv import read_run

    async with EtcdStore(endpoint) as store:
        report = await read_run(store, run_id)
    nodes = (*report.participants, *report.joined, *report.waiting, *report.others)
    return {n.node: (n.health, n.health_reason) for n in nodes}


def test_a_health_check_named_in_the_conf_gates_the_join(
    etcd_server: EtcdServer,
    handlers: list[Any],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``health_check=package.module:function``: b's check fails, so b stays out (a
    WARNING with the reason; the run's report shows it) and a's round completes
    without it; once the check passes, b joins, and a's next round has both."""
    from tests._support import health

    caplog.set_level(logging.WARNING, logger="anyrdzv")
    run_id = f"h-{uuid.uuid4().hex[:8]}"
    a = make(handlers, etcd_server.endpoint, run_id, {"health_check": f"{health.__name__}:passing"})
    b = make(handlers, etcd_server.endpoint, run_id, {"health_check": f"{health.__name__}:toggled"})
    thread, joined = call_in_thread(b.next_rendezvous)

    def failed() -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "anyrdzv_event", None) == "health_failed"]

    deadline = time.monotonic() + 30
    while not failed():
        assert time.monotonic() < deadline, "b's check never failed"
        time.sleep(0.02)
    record = failed()[0]
    assert record.levelno == logging.WARNING
    assert "RuntimeError: GPU 3 does not answer" in record.getMessage()
    assert record.run_id == run_id  # type: ignore[attr-defined]
    b_node: str = record.node  # type: ignore[attr-defined]
    first = a.next_rendezvous()
    assert first.world_size == 1  # b is kept out
    shown = anyio.run(read_health, etcd_server.endpoint, run_id)
    assert shown[b_node] == (False, "RuntimeError: GPU 3 does not answer")
    assert [health for node, health in shown.items() if node != b_node] == [(True, None)]
    assert not joined
    monkeypatch.setattr(health, "toggled_passes", True)
    while a.num_nodes_waiting() == 0:
        assert time.monotonic() < deadline + 30, "b never joined once its check passed"
        time.sleep(0.02)
    second = a.next_rendezvous()
    thread.join(30)
    assert second.world_size == 2
    assert joined[0].world_size == 2
    assert anyio.run(read_health, etcd_server.endpoint, run_id)[b_node] == (True, None)
