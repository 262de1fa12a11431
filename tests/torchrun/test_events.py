"""The torchrun backend records torch's rendezvous events (``torch.distributed.elastic.
events``) for an event handler, and ends every agent of a run whose restart budget is
spent, with the reason."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from anyrdzv import EtcdStore, Lease, read_run
from tests.torchrun.test_handler import handlers, make  # noqa: F401 - the fixture

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests._support.etcd_server import EtcdServer

pytestmark = pytest.mark.usefixtures("torch_installed")


class Events(logging.Handler):
    """An event handler for ``dynamic_rendezvous``: each event, by the thread that
    recorded it."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        from torch.distributed.elastic.events.api import RdzvEvent

        event = RdzvEvent.deserialize(record.getMessage())
        self.events.append((threading.current_thread().name, event))

    def of(self, thread: str) -> list[tuple[str, str, int | None, str]]:
        return [
            (e.name, e.node_state.name, e.rank, e.message) for t, e in self.events if t == thread
        ]


#: The logger torch records its rendezvous events on (``torch.distributed.elastic.events``,
#: destination ``dynamic_rendezvous``).
EVENTS_LOGGER = "torchelastic-events-dynamic_rendezvous"


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> Iterator[Events]:
    """Configure an event handler, as a torchrun deployment does: torch offers no public
    door for it, but records ``dynamic_rendezvous`` events only while its registry of
    destinations holds a handler other than a ``NullHandler`` for it; that handler goes on
    the events' logger when torch makes it, once per process (``addHandler`` adds it once
    if it is there already)."""
    from torch.distributed.elastic.events.handlers import _log_handlers

    found = Events()
    monkeypatch.setitem(_log_handlers, "dynamic_rendezvous", found)
    logger = logging.getLogger(EVENTS_LOGGER)
    logger.addHandler(found)
    yield found
    logger.removeHandler(found)


def in_threads(*calls: Any) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    def one(index: int) -> None:
        try:
            results[index] = calls[index]()
        except Exception as exc:  # noqa: BLE001 - returned to the test
            results[index] = exc

    threads = [threading.Thread(target=one, args=(i,), name=f"node-{i}") for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


async def revoke(endpoint: str, run_id: str, rank: int) -> None:
    """Revoke the lease of the participant of rank ``rank``, as if its process died."""
    async with EtcdStore(endpoint) as store:
        report = await read_run(store, run_id)
        node = report.participants[rank].node
        kv = await store.get(f"/anyrdzv/{run_id}/nodes/{node}")
        assert kv is not None
        assert kv.lease is not None
        await store.revoke(Lease(kv.lease, 1))


NAME = "_handler.py:EtcdRendezvousHandler."


def test_the_events_of_a_two_node_job_and_a_node_loss(
    etcd_server: EtcdServer,
    handlers: list[Any],  # noqa: F811
    events: Events,
) -> None:
    from torch.distributed.elastic.rendezvous import RendezvousConnectionError

    run_id = f"ev-{uuid.uuid4().hex[:8]}"
    a = make(handlers, etcd_server.endpoint, run_id, min_nodes=1, max_nodes=2)
    b = make(handlers, etcd_server.endpoint, run_id, min_nodes=1, max_nodes=2)
    first_a, first_b = in_threads(a.next_rendezvous, b.next_rendezvous)
    assert first_a.world_size == first_b.world_size == 2
    anyio.run(revoke, etcd_server.endpoint, run_id, first_b.rank)  # b's node dies
    deadline = time.monotonic() + 20
    while a.num_nodes_waiting() == 0:
        assert time.monotonic() < deadline, "the loss was never seen"
        time.sleep(0.02)
    (again,) = in_threads(a.next_rendezvous)
    assert again.world_size == 1

    def lost() -> bool:
        try:
            b.num_nodes_waiting()
        except RendezvousConnectionError:
            return True
        return False

    while not lost():  # b's agent asks, and hears of its loss
        assert time.monotonic() < deadline, "b's loss was never raised"
        time.sleep(0.02)
    (closed,) = in_threads(a.shutdown)
    assert closed is True

    a_events = events.of("node-0")
    assert [(name, state, rank) for name, state, rank, _ in a_events] == [
        (NAME + "next_rendezvous", "RUNNING", None),
        (NAME + "next_rendezvous", "RUNNING", first_a.rank),
        (NAME + "next_rendezvous", "RUNNING", None),
        (NAME + "next_rendezvous", "RUNNING", 0),
        (NAME + "shutdown", "SUCCEEDED", None),
    ]
    messages = [message for *_, message in a_events]
    assert "attempts to join the next round" in messages[0]
    assert (
        f"joined round 0 of run {run_id!r} as rank {first_a.rank} in a world of size 2"
        in (messages[1])
    )
    assert "as rank 0 in a world of size 1" in messages[3]
    assert "round 1" in messages[3]
    b_events = [(name, state, rank) for name, state, rank, _ in events.of("node-1")]
    assert b_events == [
        (NAME + "next_rendezvous", "RUNNING", None),
        (NAME + "next_rendezvous", "RUNNING", first_b.rank),
    ]
    everything = [(e.name, e.node_state.name) for _, e in events.events]
    assert (NAME + "num_nodes_waiting", "FAILED") in everything


def test_a_spent_budget_ends_every_agent_with_the_reason(
    etcd_server: EtcdServer,
    handlers: list[Any],  # noqa: F811
) -> None:
    from torch.distributed.elastic.rendezvous import RendezvousClosedError

    run_id = f"mr-{uuid.uuid4().hex[:8]}"
    conf = {"max_rounds": "0"}
    a = make(handlers, etcd_server.endpoint, run_id, conf, min_nodes=2, max_nodes=2)
    b = make(handlers, etcd_server.endpoint, run_id, conf, min_nodes=2, max_nodes=2)
    in_threads(a.next_rendezvous, b.next_rendezvous)
    # a's workers fail: its agent asks for a new round, which the budget refuses.
    with pytest.raises(RendezvousClosedError, match=r"max_rounds=0.*round 1"):
        a.next_rendezvous()
    # b's agent is told to restart (its workers are healthy), and learns why it ends.
    deadline = time.monotonic() + 20
    while b.num_nodes_waiting() == 0:
        assert time.monotonic() < deadline, "b's agent was never told"
        time.sleep(0.02)
    with pytest.raises(RendezvousClosedError, match=r"max_rounds=0"):
        b.next_rendezvous()
