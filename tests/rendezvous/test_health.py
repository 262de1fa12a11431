"""The health gate: a node whose check fails (raises, or takes too long) does not join,
waits outside retrying with backoff and logging a WARNING, and the run's report shows
why; the conf key imports the check, and bad input is a clear error."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

from anyrdzv import LeaseStore, MemoryStore, Rendezvous, RendezvousTimeout, read_run
from anyrdzv._rendezvous._health import load_health_check
from anyrdzv.torchrun._conf import read_conf
from tests._support import health
from tests._support.cli import run_cli
from tests._support.rendezvous import PREFIX, check_agreement, eventually, joins, make

if TYPE_CHECKING:
    from tests._support.etcd_server import EtcdServer

pytestmark = pytest.mark.anyio


class Flaky:
    """A check that fails with a reason until it is told to pass, counting its calls."""

    def __init__(self) -> None:
        self.healthy = False
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        await anyio.lowlevel.checkpoint()
        if not self.healthy:
            raise RuntimeError("GPU 3 does not answer")
        return "its value is ignored"


def failures(caplog: pytest.LogCaptureFixture, node: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if getattr(r, "anyrdzv_event", None) == "health_failed" and getattr(r, "node", "") == node
    ]


async def test_a_failing_node_waits_outside_until_its_check_passes(
    store: LeaseStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="anyrdzv")
    check = Flaky()
    a = make(store, "health", "a", min_nodes=2, max_nodes=2, health_check=health.passing)
    b = make(store, "health", "b", min_nodes=2, max_nodes=2, health_check=check)
    infos = {}

    async def next_of(rdzv: Rendezvous) -> None:
        infos[rdzv.node] = await rdzv.next_rendezvous()

    async with a, b, anyio.create_task_group() as tg:
        tg.start_soon(next_of, a)
        tg.start_soon(next_of, b)
        await eventually(lambda: check.calls >= 2 and len(failures(caplog, "b")) >= 2)

        async def a_joined() -> bool:  # a's check passed: its join lands, b's failures or not
            return "a" in await joins(store, "health")

        await eventually(a_joined)
        # b retried, and has not joined; the report says why.
        assert "b" not in await joins(store, "health")
        report = await read_run(store, "health", prefix=PREFIX)
        (shown,) = [n for n in report.others if n.node == "b"]
        assert (shown.health, shown.health_reason) == (False, "RuntimeError: GPU 3 does not answer")
        assert [n.node for n in report.joined] == ["a"]
        assert [n.health for n in report.joined] == [True]
        record = failures(caplog, "b")[0]
        assert record.levelno == logging.WARNING
        assert "GPU 3 does not answer" in record.getMessage()
        assert record.reason == "RuntimeError: GPU 3 does not answer"  # type: ignore[attr-defined]
        check.healthy = True
    assert check_agreement(infos).participants == ("a", "b")


async def test_a_check_that_takes_too_long_fails(store: LeaseStore) -> None:
    async def hangs() -> None:
        await anyio.sleep_forever()

    node = make(
        store,
        "slow-check",
        "a",
        min_nodes=1,
        max_nodes=1,
        health_check=hangs,
        health_check_timeout=0.2,
        join_timeout=1.5,
    )
    async with node:
        with pytest.raises(RendezvousTimeout, match=r"health check fails: it did not finish "):
            await node.next_rendezvous()
        report = await read_run(store, "slow-check", prefix=PREFIX)
        assert report.round == 0
        assert not report.complete
        assert report.joined == ()
        (shown,) = report.others
        assert shown.health is False
        assert "health_check_timeout=0.2 s" in (shown.health_reason or "")


@pytest.mark.parametrize(
    ("check", "reason"),
    [
        (lambda: 42, "health_check returned 42, not an awaitable"),
        (lambda: 1 / 0, "ZeroDivisionError: division by zero"),
    ],
)
async def test_a_check_that_is_not_async_or_raises_at_once_fails(check: Any, reason: str) -> None:
    node = make(
        MemoryStore(),
        "bad-check",
        "a",
        min_nodes=1,
        max_nodes=1,
        health_check=check,
        join_timeout=0.7,
    )
    async with node:
        with pytest.raises(RendezvousTimeout, match=reason):
            await node.next_rendezvous()


async def test_a_cancelled_check_cancels_the_call() -> None:
    started = anyio.Event()

    async def hangs() -> None:
        started.set()
        await anyio.sleep_forever()

    node = make(MemoryStore(), "cancel", "a", min_nodes=1, max_nodes=1, health_check=hangs)
    async with node:
        with anyio.move_on_after(5) as outer:
            async with anyio.create_task_group() as tg:
                tg.start_soon(node.next_rendezvous)
                await started.wait()
                tg.cancel_scope.cancel()
        assert not outer.cancelled_caught
        # The next call runs the check again, and a passing one lets it in.
        node2 = make(MemoryStore(), "cancel", "b", min_nodes=1, max_nodes=1)
        async with node2:
            assert (await node2.next_rendezvous()).world_size == 1


def test_bad_arguments_name_the_parameter() -> None:
    with pytest.raises(TypeError, match="health_check"):
        Rendezvous(MemoryStore(), "r", min_nodes=1, max_nodes=1, health_check=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="health_check_timeout"):
        Rendezvous(MemoryStore(), "r", min_nodes=1, max_nodes=1, health_check_timeout=0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tests._support.health", "must be package.module:function"),
        ("tests._support.nowhere:check", "does not import: ModuleNotFoundError"),
        ("tests._support.health:absent", "does not import: AttributeError"),
        ("tests._support.health:NOT_CALLABLE", "is not callable"),
    ],
)
def test_a_conf_value_that_does_not_import_names_the_key(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=rf"'health_check'.*{message}"):
        load_health_check(text)
    # In torchrun, before any I/O: the conf is read before the store is made.
    with pytest.raises(ValueError, match="'health_check'"):
        read_conf("localhost:1", {"health_check": text}, {})
    with pytest.raises(ValueError, match="'health_check'"):
        Rendezvous.from_conf(MemoryStore(), "r", {"health_check": text}, min_nodes=1, max_nodes=1)


async def test_the_conf_key_imports_the_check() -> None:
    assert load_health_check("tests._support.health:passing") is health.passing
    conf = read_conf("localhost:1", {"health_check": "tests._support.health:failing"}, {})
    node = Rendezvous.from_conf(
        MemoryStore(),
        "conf",
        {**conf.rendezvous, "join_timeout": "0.7", "health_check_timeout": "5"},
        min_nodes=1,
        max_nodes=1,
    )
    assert node.health_check_timeout == 5
    async with node:
        with pytest.raises(RendezvousTimeout, match="GPU 3 does not answer"):
            await node.next_rendezvous()


@pytest.mark.slow
async def test_the_command_shows_the_health_of_each_node(etcd_server: EtcdServer) -> None:
    from anyrdzv import EtcdStore

    async with EtcdStore(etcd_server.endpoint) as store:
        check = Flaky()
        # The command takes seconds to start on a loaded machine, and b's pauses grow.
        options: dict[str, Any] = {"min_nodes": 2, "max_nodes": 2, "join_timeout": 120}
        a = make(store, "health-cli", "a", health_check=health.passing, **options)
        b = make(store, "health-cli", "b", health_check=check, **options)
        async with a, b, anyio.create_task_group() as tg:
            tg.start_soon(a.next_rendezvous)
            tg.start_soon(b.next_rendezvous)
            await eventually(lambda: check.calls >= 1)
            await eventually(
                lambda: _failing(store, "health-cli"),
            )
            args = ("rendezvous", "--etcd", etcd_server.endpoint, "--run-id", "health-cli")
            text = await anyio.to_thread.run_sync(lambda: run_cli(*args))
            assert text.returncode == 0, text.stderr
            assert "b  no join key  lease TTL" in text.stdout
            assert "health check FAILING: RuntimeError: GPU 3 does not answer" in text.stdout
            assert "health check passing" in text.stdout
            shown = await anyio.to_thread.run_sync(lambda: run_cli(*args, "--json"))
            record = json.loads(shown.stdout)
            (other,) = record["others"]
            assert (other["health"], other["health_reason"]) == (
                False,
                "RuntimeError: GPU 3 does not answer",
            )
            check.healthy = True


async def _failing(store: LeaseStore, run_id: str) -> bool:
    report = await read_run(store, run_id, prefix=PREFIX)
    return any(node.health is False for node in report.others)
