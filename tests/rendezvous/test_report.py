"""read_run() and watch_run(): what a run's keys say, for an operator (the report behind
``anyrdzv rendezvous``, whose output is tested in ``tests/cli/test_rendezvous.py``): a
report now, and again after every change, across a broken watch, a failed read and a
compacted history."""

from __future__ import annotations

import logging
import uuid
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from anyrdzv import (
    EtcdStore,
    LeaseStore,
    MemoryStore,
    Rendezvous,
    RendezvousClosed,
    RendezvousError,
    RunReport,
    read_run,
    watch_run,
)
from anyrdzv._rendezvous import _rules as rules
from anyrdzv.testing import FaultyStore

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

pytestmark = pytest.mark.anyio

LOGGER = "anyrdzv._rendezvous._report"


@pytest.fixture
def run_id() -> str:
    """A run id no other test uses: the etcd store is shared."""
    return f"run-{uuid.uuid4().hex[:12]}"


async def test_the_adapters_keys_are_counted_not_malformed(etcd_server: Any, run_id: str) -> None:
    """read_run raises MalformedRun for a bad key of the rendezvous, not for these."""
    async with (
        EtcdStore(etcd_server.endpoint) as store,
        Rendezvous(
            store,
            run_id,
            node="a",
            min_nodes=2,
            max_nodes=3,
            last_call_timeout=0.3,
            keep_alive_interval=1,
            keep_alive_max_attempt=3,
            join_timeout=20,
            close_timeout=5,
        ) as a,
    ):
        await store.put(a.data_prefix + "k", b"\x80 not json")
        await store.put(a.data_prefix + "members/x", b"not a member")
        report = await read_run(store, run_id)
        assert report.data_keys == 2
        assert [n.node for n in report.others] == ["a"]  # a heartbeat, and no "x"


async def wait_until_closed(rdzv: Rendezvous) -> None:
    with pytest.raises(RendezvousClosed):
        await rdzv.next_rendezvous()


async def test_the_round_its_ranks_waiting_nodes_payloads_and_leases(
    store: LeaseStore, run_id: str
) -> None:
    """What a program sees of a run: the round, complete or not, closed or not; the
    participants in rank order, with their payloads and lease TTLs; the node that waits."""
    options: dict[str, Any] = {
        "min_nodes": 2,
        "max_nodes": 3,
        "last_call_timeout": 0.2,
        "keep_alive_interval": 1,
        "keep_alive_max_attempt": 5,
        "join_timeout": 30,
    }
    async with (
        Rendezvous(store, run_id, node="b", payload=b"B", **options) as b,
        Rendezvous(store, run_id, node="a", payload=b"A", **options) as a,
        Rendezvous(store, run_id, node="c", payload=b"C", **options) as c,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(a.next_rendezvous)
        await b.next_rendezvous()
        tg.start_soon(wait_until_closed, c)  # after the round completed: it waits
        with anyio.fail_after(10):
            while (report := await read_run(store, run_id)).num_nodes_waiting < 1:  # noqa: ASYNC110 - polls the store
                await anyio.sleep(0.02)
        assert (report.round, report.complete, report.closed) == (0, True, False)
        assert (report.min_nodes, report.max_nodes) == (2, 3)
        assert [(n.rank, n.node, n.payload, n.alive) for n in report.participants] == [
            (0, "a", b"A", True),
            (1, "b", b"B", True),
        ]
        assert [(n.rank, n.node, n.payload, n.round) for n in report.waiting] == [
            (None, "c", b"C", 1)
        ]
        ttls = [n.ttl for n in (*report.participants, *report.waiting)]
        assert all(ttl is not None and 0 < ttl <= 5 for ttl in ttls), ttls
        assert (report.joined, report.others) == ((), ())
        await a.set_closed()
        report = await read_run(store, run_id)
        assert report.closed
    assert (await read_run(store, run_id)).keys == 0


async def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="store must be a LeaseStore"):
        await read_run(object(), "r")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="run_id must be non-empty and contain no '/'"):
        await read_run(MemoryStore(), "a/b")
    with pytest.raises(TypeError, match="prefix must be a str"):
        await read_run(MemoryStore(), "r", prefix=None)  # type: ignore[arg-type]


async def test_a_malformed_key_is_a_rendezvous_error() -> None:
    store = MemoryStore()
    await store.put("/anyrdzv/r/state", b"\x80 not JSON")
    with pytest.raises(RendezvousError, match="key '/anyrdzv/r/state' holds a malformed value"):
        await read_run(store, "r")


def state(round_: int) -> bytes:
    return rules.encode_state(rules.RunState(round_, True, False, 1, 2, size=1))


async def next_report(reports: AsyncGenerator[RunReport, None]) -> RunReport:
    with anyio.fail_after(10):
        return await reports.__anext__()


async def test_a_report_now_and_after_every_change() -> None:
    store = MemoryStore()
    async with aclosing(watch_run(store, "r")) as reports:
        first = await next_report(reports)
        assert (first.keys, first.round) == (0, None)
        await store.put("/anyrdzv/r/state", state(1))
        second = await next_report(reports)
        assert second.round == 1
        assert second.revision > first.revision
        await store.put("/anyrdzv/r/join/y", rules.encode_join(2))
        third = await next_report(reports)
    assert [n.node for n in third.others] == ["y"]


async def test_a_broken_watch_and_a_failed_read_miss_no_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    store = MemoryStore()
    faulty = FaultyStore(store)
    async with aclosing(watch_run(faulty, "r")) as reports:
        await next_report(reports)
        await store.put("/anyrdzv/r/state", state(1))
        await next_report(reports)  # the watch is open now
        faulty.break_watches()
        await store.put("/anyrdzv/r/state", state(2))  # while the watch is down
        report = await next_report(reports)
        assert report.round == 2
        faulty.fail("get_prefix_kv", times=2)  # the reads after the next change
        await store.put("/anyrdzv/r/state", state(3))
        report = await next_report(reports)
    assert report.round == 3
    assert faulty.calls["get_prefix_kv"] == 6  # the first, one per change, two failed
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("watch on run 'r' failed" in m and "was cut" in m for m in messages)
    assert any("watch on run 'r' failed (connection refused (a fault))" in m for m in messages)


async def test_a_compacted_history_is_read_afresh(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    store = MemoryStore(history_limit=1)
    async with aclosing(watch_run(store, "r")) as reports:
        await next_report(reports)  # the watch opens at the next __anext__
        for round_ in range(1, 4):  # more than the history keeps
            await store.put("/anyrdzv/r/state", state(round_))
        report = await next_report(reports)
        assert report.round == 3
        await store.put("/anyrdzv/r/join/y", rules.encode_join(4))
        report = await next_report(reports)
    assert [n.node for n in report.others] == ["y"]
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("has been compacted" in m and "reading afresh" in m for m in messages)


async def test_topology_labels_and_spares(store: LeaseStore, run_id: str) -> None:
    """A node's label, and whether a waiting node is a spare (the round is full) or
    counted by num_nodes_waiting (it is not)."""
    options: dict[str, Any] = {
        "min_nodes": 1,
        "max_nodes": 2,
        "last_call_timeout": 0.2,
        "keep_alive_interval": 1,
        "join_timeout": 30,
    }
    async with (
        Rendezvous(store, run_id, node="a", topology="rack1/sw2", **options) as a,
        Rendezvous(store, run_id, node="b", **options) as b,
        Rendezvous(store, run_id, node="c", topology="rack2", **options) as c,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(a.next_rendezvous)
        await b.next_rendezvous()
        tg.start_soon(wait_until_closed, c)
        with anyio.fail_after(10):
            while not (report := await read_run(store, run_id)).waiting:  # noqa: ASYNC110 - polls the store
                await anyio.sleep(0.02)
        # No label ranks first.
        assert [(n.node, n.topology, n.spare) for n in report.participants] == [
            ("b", None, False),
            ("a", "rack1/sw2", False),
        ]
        assert [(n.node, n.topology, n.spare) for n in report.waiting] == [("c", "rack2", True)]
        assert report.num_nodes_waiting == 0
        await a.set_closed()
