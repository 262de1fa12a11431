"""The anyrdzv-etcd handler in-process: torch's handler API, as torchrun's agent calls it."""

from __future__ import annotations

import ast
import os
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

    threads = threading.active_count()
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
    assert threading.active_count() == threads  # every loop thread was stopped
