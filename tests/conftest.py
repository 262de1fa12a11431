from __future__ import annotations

import inspect
import os
import signal
import sys
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

from anyrdzv import EtcdStore, LeaseStore, MemoryStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from tests._support.etcd_cluster import EtcdCluster
    from tests._support.etcd_server import EtcdServer

_BACKENDS: list[Any] = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(
        ("asyncio", {"use_uvloop": True}),
        id="asyncio+uvloop",
        marks=pytest.mark.skipif(sys.platform == "win32", reason="uvloop does not run on Windows"),
    ),
    pytest.param(("trio", {}), id="trio"),
]


@pytest.fixture(params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Run every ``@pytest.mark.anyio`` test on asyncio, asyncio+uvloop and trio."""
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


@pytest.fixture
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves a task running after it has returned.

    An autouse fixture below requests it for every async anyio test.
    """
    before = {task.id for task in anyio.get_running_tasks()}
    yield
    await anyio.lowlevel.checkpoint()
    me = anyio.get_current_task().id  # the plugin may tear fixtures down in a new task
    leaked = [
        f"{task.name} ({task.coro!r:.120})"
        for task in anyio.get_running_tasks()
        if task.id not in before
        and task.id != me
        and not getattr(task.coro, "__qualname__", "").startswith("TestRunner.")  # anyio's own
    ]
    assert not leaked, f"tasks outlived the test: {leaked}"


@pytest.fixture(autouse=True)
def _every_async_test_leaks_no_task(request: pytest.FixtureRequest) -> None:
    function = getattr(request.node, "function", None)
    if request.node.get_closest_marker("anyio") and inspect.iscoroutinefunction(function):
        request.getfixturevalue("no_leaked_tasks")


# -- scheduling under pytest-xdist ---------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    """Under ``-n``, hand tests to the workers one at a time (``--maxschedchunk 1``,
    unless the command line says otherwise): xdist's load scheduler otherwise gives each
    worker a quarter of its share up front, in collection order, and one worker can be
    left running that chunk's scenario tests while the other idles."""
    if getattr(config.option, "maxschedchunk", "") is None:  # xdist's option, not given
        config.option.maxschedchunk = 1


# The tests press Ctrl-C in child processes, as a user does at a terminal, where SIGINT
# is never ignored. A test run started in the background by a non-interactive shell (or
# under nohup) inherits SIGINT ignored, and so would every process it starts: those
# tests would then time out, testing nothing. Handled here, the children start with the
# default instead.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests marked ``slow`` (seconds each: clusters, SIGKILLs, lease expiry)
    first, in their collected order, so that under ``-n`` the quick tests fill in behind
    them and no worker finishes with a long one alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# -- etcd ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def need_etcd() -> None:
    """Request this to skip a test without etcd; but under CI=true, where .ci/run
    installs it, the test fails instead."""
    from tests._support.etcd_server import etcd_binary

    if etcd_binary() is None:
        message = "etcd is not installed (apt-get install etcd-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}: CI must run the etcd tests")
        pytest.skip(message)


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory, need_etcd: None) -> Iterator[EtcdServer]:
    """A plain-HTTP etcd shared by the tests that only read and write their own keys."""
    from tests._support.etcd_server import EtcdServer

    server = EtcdServer(tmp_path_factory.mktemp("etcd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_etcd_server(tmp_path: Path, need_etcd: None) -> Iterator[EtcdServer]:
    """An etcd for one test alone, which it may kill and restart."""
    from tests._support.etcd_server import EtcdServer

    server = EtcdServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def etcd_cluster(tmp_path: Path, need_etcd: None) -> Iterator[EtcdCluster]:
    """A 3-member etcd cluster on loopback for one test, which it may break."""
    from tests._support.etcd_cluster import EtcdCluster

    with EtcdCluster(tmp_path / "cluster") as cluster:
        cluster.start()
        yield cluster


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses, so tests can share one etcd."""
    return f"/test-{uuid.uuid4().hex}"


@pytest.fixture(params=["memory", "etcd"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LeaseStore]:
    """Each LeaseStore implementation in turn: the contract suite runs over both."""
    if request.param == "memory":
        yield MemoryStore()
        return
    server: EtcdServer = request.getfixturevalue("etcd_server")
    async with EtcdStore(server.endpoint) as etcd:
        yield etcd


# -- torch --------------------------------------------------------------------------------


_torch_error: BaseException | None = None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Import torch once, here, if a collected test needs it, and not inside a test: an
    import that fails part-way (a timeout under load; a warning made an error, as torch
    without numpy warns) leaves torch half-imported for every later test of the process.
    """
    global _torch_error  # the one import's outcome, for need_torch
    if any("torch_installed" in getattr(item, "fixturenames", ()) for item in session.items):
        try:
            import torch.distributed  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - need_torch reports it, in the test
            _torch_error = exc


def need_torch() -> None:
    """Skip without torch; but under CI=true, where .ci/run installs it, fail instead."""
    try:
        if _torch_error is not None:
            raise _torch_error
        import torch.distributed  # noqa: F401
    except ImportError as exc:
        message = f"torch is not installed (pip install torch==2.13.0): {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}: CI must run the torchrun tests")
        pytest.skip(message)
    except Exception as exc:  # noqa: BLE001 - a broken torch is a failure, not a skip
        pytest.fail(f"importing torch failed: {exc!r}")


@pytest.fixture
def torch_installed() -> None:
    """Request this to skip a test without torch (fail under CI=true)."""
    need_torch()
