"""The core's moments as log records, each with the one stable ``extra`` schema."""

from __future__ import annotations

import logging

import pytest

from anyrdzv import MemoryStore, RendezvousClosed
from tests._support.rendezvous import all_next, make

pytestmark = pytest.mark.anyio

SCHEMA = ("anyrdzv_event", "run_id", "node", "round", "rank", "world_size", "reason")


def moments(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if hasattr(r, "anyrdzv_event")]


async def test_a_round_and_a_spent_budget_as_log_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="anyrdzv")
    store = MemoryStore()
    a = make(store, "events", "a", min_nodes=2, max_nodes=2, max_rounds=0)
    b = make(store, "events", "b", min_nodes=2, max_nodes=2, max_rounds=0)
    async with a, b:
        await all_next(a, b)
        with pytest.raises(RendezvousClosed):
            await a.next_rendezvous()
    records = moments(caplog)
    for record in records:
        assert all(hasattr(record, name) for name in SCHEMA), record.__dict__
        assert record.run_id == "events"  # type: ignore[attr-defined]
    seen = [(r.anyrdzv_event, r.node, r.levelno) for r in records]  # type: ignore[attr-defined]
    for node in ("a", "b"):
        assert ("join_attempt", node, logging.DEBUG) in seen
        assert ("joined", node, logging.INFO) in seen
    (complete,) = [r for r in records if r.anyrdzv_event == "round_complete"]  # type: ignore[attr-defined]
    assert (complete.round, complete.world_size, complete.levelno) == (0, 2, logging.INFO)  # type: ignore[attr-defined]
    joined = {r.node: r for r in records if r.anyrdzv_event == "joined"}  # type: ignore[attr-defined]
    assert {(r.round, r.rank, r.world_size) for r in joined.values()} == {(0, 0, 2), (0, 1, 2)}  # type: ignore[attr-defined]
    (spent,) = [r for r in records if r.anyrdzv_event == "budget_spent"]  # type: ignore[attr-defined]
    assert spent.levelno == logging.WARNING
    assert "max_rounds=0" in spent.reason  # type: ignore[attr-defined]
    (failed,) = [r for r in records if r.anyrdzv_event == "join_failed"]  # type: ignore[attr-defined]
    assert failed.node == "a"  # type: ignore[attr-defined]
    assert failed.reason.startswith("RendezvousClosed: ")  # type: ignore[attr-defined]
    # The order of a node's moments: it attempts, then joins.
    order = [r.anyrdzv_event for r in records if r.node == "b"]  # type: ignore[attr-defined]
    assert order.index("join_attempt") < order.index("joined")
