"""What a run's keys say: :func:`read_run` and :func:`watch_run`, the public view of a
run behind ``anyrdzv rendezvous``.

It reads the keys a :class:`~anyrdzv.Rendezvous` writes (see :mod:`._rules`)
and the remaining TTL of each node's lease, and says who is in the round, who waits, and
for what. It only reads.
"""

from __future__ import annotations

import logging
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from .._checks import echo
from .._exceptions import RendezvousError, StoreConnectionError
from .._membership._keys import DEFAULT_PREFIX, check_name, check_prefix
from .._stores._follow import follow
from .._stores._model import StoreEvent
from .._stores._protocol import check_store
from . import _rules as rules
from ._health import HEALTH, decode_health

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from .._stores._model import KeyValue
    from .._stores._protocol import LeaseStore

logger = logging.getLogger(__name__)

# How many TTL requests are in flight at once.
_TTL_REQUESTS = 32


#: The store prefix of a round of the torchrun backend, under the run's adapters'
#: subtree: torch's own ``PrefixStore`` name for the round's store.
TORCH_ROUND_PREFIX = "torch.rendezvous.{run_id}.{round}/"

#: The key in a round's torch store where rank 0 publishes its address.
MASTER_ADDR = "MASTER_ADDR"

#: ... and its port.
MASTER_PORT = "MASTER_PORT"


class MalformedRun(RendezvousError):
    """A key of the run holds a value no node writes."""


@dataclass(frozen=True)
class NodeReport:
    """One node of a run, as its keys show it.

    :ivar node: its name
    :ivar alive: whether its heartbeat key (``nodes/<node>``) exists: its lease lives
    :ivar round: the round its join key (``join/<node>``) asks for, or ``None``
    :ivar ttl: the remaining TTL of its lease, in whole seconds; ``None`` if it has no
        key under a live lease
    :ivar rank: its rank in the round, if it is a participant of a complete round
    :ivar payload: the payload it gave (``Rendezvous(payload=...)``), as bytes: from its
        heartbeat key, or for a participant whose heartbeat is gone, from the round;
        ``None`` if neither has it
    :ivar health: whether its last health check passed (``Rendezvous(health_check=...)``):
        ``False`` while it fails (the node waits outside the rounds, checking again);
        ``None`` if it has no check, or has not reported one
    :ivar health_reason: why its health check fails, while it fails; else ``None``
    :ivar topology: its topology label (``Rendezvous(topology=...)``), from its
        heartbeat key; ``None`` if it has none, or no heartbeat key
    :ivar spare: whether it is a hot spare: it waits for the round after a complete
        one whose live participants are ``max_nodes`` already, so it joins only when a
        participant is lost
    """

    node: str
    alive: bool
    round: int | None
    ttl: int | None
    rank: int | None = None
    payload: bytes | None = None
    health: bool | None = None
    health_reason: str | None = None
    topology: str | None = None
    spare: bool = False


@dataclass(frozen=True)
class Bootstrap:
    """The torchrun backend's bootstrap of a complete round: the address its rank 0
    publishes in the round's store, as the keys show it.

    :ivar round: the round
    :ivar key: the full key where rank 0 publishes its address (torch's MASTER_ADDR)
    :ivar master_addr: its value, or ``None`` while it is missing
    :ivar master_port: the value of torch's MASTER_PORT key, or ``None``
    """

    round: int
    key: str
    master_addr: str | None
    master_port: str | None


@dataclass(frozen=True)
class RunReport:
    """A run, read at one revision of the store: what :func:`read_run` returns.

    :ivar run_id: the run
    :ivar prefix: the run's key prefix, ``<prefix>/<run_id>/``
    :ivar revision: the store revision of the read
    :ivar keys: how many keys the run has (0: the run has no state at all)
    :ivar round: the run's round, or ``None`` if the run has no state yet (nor any of
        the fields below that describe it)
    :ivar complete: whether the round is complete: it has its participants and ranks
    :ivar closed: whether the run is closed (:meth:`Rendezvous.set_closed`)
    :ivar min_nodes: the run's ``min_nodes``, or ``None`` without a state
    :ivar max_nodes: the run's ``max_nodes``, or ``None`` without a state
    :ivar previous: in an open round after the first, the live nodes of the last round
        when it opened (the nodes D6 waits for); else ``None``
    :ivar participants: the participants of the round, in rank order (a complete
        round has them; an open one has none yet)
    :ivar joined: if the round is open, the live nodes that joined it, earliest first:
        they wait for it to complete
    :ivar waiting: if the round is complete, the live nodes that are not participants and
        joined the next round, earliest first: they wait for the participants to call
        ``next_rendezvous()`` again
    :ivar num_nodes_waiting: of those, how many ``num_nodes_waiting()`` counts (none once
        the live participants reach ``max_nodes``)
    :ivar others: every other node with a key: not in the round, not waiting for the
        next (a join key of another round, or a heartbeat with no join key)
    :ivar data_keys: how many keys the run has under its adapters' subtree,
        ``<prefix>/<run_id>/store/`` (the torchrun backend's store): not the
        rendezvous's, and never malformed
    :ivar coordinator: the node that decides the run's rounds, or ``None``
    :ivar bootstrap: for a complete round, the torchrun backend's bootstrap, if the run
        has keys under its adapters' subtree or the round's rank 0 is gone; else
        ``None``
    :ivar max_rounds: the run's restart budget (``Rendezvous(max_rounds=...)``): how many
        rounds may follow the first; ``None`` for no limit
    :ivar reason: why the run is closed, if its coordinator closed it (the budget spent);
        else ``None``
    """

    run_id: str
    prefix: str
    revision: int
    keys: int
    round: int | None
    complete: bool
    closed: bool
    min_nodes: int | None
    max_nodes: int | None
    previous: tuple[str, ...] | None
    participants: tuple[NodeReport, ...]
    joined: tuple[NodeReport, ...]
    waiting: tuple[NodeReport, ...]
    num_nodes_waiting: int
    others: tuple[NodeReport, ...]
    data_keys: int = 0
    coordinator: str | None = None
    bootstrap: Bootstrap | None = None
    max_rounds: int | None = None
    reason: str | None = None


def run_prefix(run_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The key prefix of run ``run_id``: ``<prefix>/<run_id>/``.

    :raises TypeError: if an argument is not a ``str``
    :raises ValueError: if ``run_id`` is empty or has a ``/``
    """
    return f"{check_prefix(prefix)}/{check_name('run_id', run_id)}/"


def _view(kvs: list[KeyValue], start: str) -> tuple[rules.View, dict[str, int], str | None]:
    """The run's keys as a :class:`rules.View`, each node's lease id, and the coordinator.

    :raises MalformedRun: naming the key, if one holds a malformed value
    """
    view = rules.View(None, None, {}, {})
    leases: dict[str, int] = {}
    coordinator: str | None = None
    for kv in kvs:
        name = kv.key[len(start) :]
        if name == rules.COORDINATOR:
            try:
                coordinator = rules.decode_coordinator(kv.value)
            except ValueError:
                coordinator = None
            continue
        try:
            if name == rules.STATE:
                view.state = (rules.decode_state(kv.value), kv.mod_revision)
                continue
            if name == rules.RECORD:
                view.record = rules.decode_record(kv.value)
                continue
            for kind in (rules.NODES, rules.JOIN):
                node = name[len(kind) :]
                if name.startswith(kind) and node and "/" not in node:
                    break
            else:
                continue  # no node writes it: not the report's business
            if kind == rules.NODES:
                view.set_member(node, rules.decode_member(kv.value))
            else:
                view.set_join(node, (rules.decode_join(kv.value), kv.mod_revision))
        except rules.OtherLayout as exc:
            raise MalformedRun(f"key {echo(kv.key)}: {exc}") from None
        except ValueError as exc:
            raise MalformedRun(
                f"key {echo(kv.key)} holds a malformed value ({exc}): {echo(kv.value)}"
            ) from None
        # The heartbeat and the join key share the node's lease; the heartbeat's wins.
        if kv.lease is not None and (kind == rules.NODES or node not in leases):
            leases[node] = kv.lease
    return view, leases, coordinator


def _health(kvs: list[KeyValue], start: str) -> dict[str, tuple[bool, str | None]]:
    """Each node's health key: whether its check passes, and why it fails.

    :raises MalformedRun: naming the key, if one holds a malformed value
    """
    found: dict[str, tuple[bool, str | None]] = {}
    for kv in kvs:
        node = kv.key[len(start) :]
        if not kv.key.startswith(start) or not node or "/" in node:
            continue
        try:
            found[node] = decode_health(kv.value)
        except ValueError as exc:
            raise MalformedRun(
                f"key {echo(kv.key)} holds a malformed value ({exc}): {echo(kv.value)}"
            ) from None
    return found


async def read_run(store: LeaseStore, run_id: str, *, prefix: str = DEFAULT_PREFIX) -> RunReport:
    """Read run ``run_id`` of :class:`Rendezvous` nodes: its round, whether it is
    complete or closed, its participants with their ranks, the nodes that wait, and the
    TTL of each node's lease. It only reads: one read of the run's keys, then the TTL of
    each node's lease.

    ::

        report = await read_run(store, "job42")
        for node in report.participants:
            print(node.rank, node.node, node.ttl, node.payload)

    :param store: the store
    :param run_id: the run
    :param prefix: the key prefix of all runs, as the nodes were given it
    :return: the run as its keys say at one revision
    :raises TypeError: if an argument has the wrong type
    :raises ValueError: if ``run_id`` is empty or has a ``/``
    :raises RendezvousError: if a key of the run holds a value no node writes
    :raises StoreError: if the store fails
    """
    check_store(store)
    start = run_prefix(run_id, prefix)
    kvs, revision = await store.get_prefix_kv(start)
    data = start + rules.DATA
    data_keys = sum(1 for kv in kvs if kv.key.startswith(data))
    health = _health(kvs, start + HEALTH)
    view, leases, coordinator = _view([kv for kv in kvs if not kv.key.startswith(data)], start)
    ttls: dict[str, int | None] = {}
    limiter = anyio.CapacityLimiter(_TTL_REQUESTS)

    async def ttl(name: str, lease: int) -> None:
        async with limiter:
            ttls[name] = await store.time_to_live(lease)

    async with anyio.create_task_group() as tg:
        for name, lease in leases.items():
            tg.start_soon(ttl, name, lease)

    participants: list[str] = []
    joined: list[str] = []
    waiting: list[str] = []
    counted = 0
    previous: tuple[str, ...] | None = None
    full = False
    state = None if view.state is None else view.state[0]
    if state is not None:
        if state.complete:
            participants = list(view.participants_of(state.round) or ())
            waiting = [n for n in view.joined(state.round + 1) if n not in participants]
            counted = view.waiting()
            full = sum(1 for n in participants if n in view.members) >= state.max_nodes
        else:
            joined = view.joined(state.round)
            last = view.participants_of(state.round - 1)
            if last is not None:
                previous = tuple(name for name in last if name in view.members)
    ranks = {name: rank for rank, name in enumerate(participants)}
    spares = set(waiting)

    def report(name: str) -> NodeReport:
        join = view.joins.get(name)
        member = view.members.get(name)
        passed, reason = health.get(name, (None, None))
        return NodeReport(
            name,
            member is not None,
            None if join is None else join[0],
            ttls.get(name),
            ranks.get(name),
            None if member is None else member.payload,
            health=passed,
            health_reason=reason,
            topology=None if member is None else member.topology,
            spare=full and name in spares,
        )

    bootstrap = None
    if state is not None and state.complete and participants:
        round_prefix = data + TORCH_ROUND_PREFIX.format(run_id=run_id, round=state.round)
        values = {kv.key: kv.value for kv in kvs if kv.key.startswith(round_prefix)}
        if data_keys or participants[0] not in view.members:

            def text(name: str) -> str | None:
                value = values.get(round_prefix + name)
                return None if value is None else value.decode("utf-8", "replace")

            bootstrap = Bootstrap(
                state.round, round_prefix + MASTER_ADDR, text(MASTER_ADDR), text(MASTER_PORT)
            )
    shown = {*participants, *joined, *waiting}
    others = sorted((set(view.members) | set(view.joins) | set(health)) - shown)
    return RunReport(
        run_id=run_id,
        prefix=start,
        revision=revision,
        keys=len(kvs),
        round=None if state is None else state.round,
        complete=state is not None and state.complete,
        closed=state is not None and state.closed,
        min_nodes=None if state is None else state.min_nodes,
        max_nodes=None if state is None else state.max_nodes,
        previous=previous,
        participants=tuple(report(n) for n in participants),
        joined=tuple(report(n) for n in joined),
        waiting=tuple(report(n) for n in waiting),
        num_nodes_waiting=counted,
        others=tuple(report(n) for n in others),
        data_keys=data_keys,
        coordinator=coordinator,
        bootstrap=bootstrap,
        max_rounds=None if state is None else state.max_rounds,
        reason=None if state is None else state.reason,
    )


async def watch_run(
    store: LeaseStore, run_id: str, *, prefix: str = DEFAULT_PREFIX
) -> AsyncGenerator[RunReport, None]:
    """Yield a report of run ``run_id`` now, as :func:`read_run` gives it, then again
    after every change of its keys.

    One watch on the run's prefix; changes that come together give one report. If the
    watch breaks, or a read after a change fails on a passing fault, it backs off,
    logging a warning, and watches again from where it was, so that no change is missed;
    if the store compacted that history meanwhile, it reads the run afresh. (A lease's
    TTL running down is not a change.) Close it with ``contextlib.aclosing``::

        async with aclosing(watch_run(store, "job42")) as reports:
            async for report in reports:
                ...

    :param store: the store
    :param run_id: the run
    :param prefix: the key prefix of all runs, as the nodes were given it
    :raises TypeError: if an argument has the wrong type
    :raises ValueError: if ``run_id`` is empty or has a ``/``
    :raises RendezvousError: if a key of the run holds a value no node writes
    :raises StoreError: if the first read of the run fails, or the store fails in a way
        that does not pass (a refused permission, say)
    """
    report = await read_run(store, run_id, prefix=prefix)
    yield report
    fresh = report

    async def reread() -> int:
        nonlocal fresh
        fresh = await read_run(store, run_id, prefix=prefix)
        return fresh.revision

    changes = follow(
        store,
        report.prefix,
        start_revision=report.revision + 1,
        what=f"run {run_id!r}",
        resync=reread,
        log=logger,
    )
    async with aclosing(changes):
        change = await anext(changes)
        while True:
            if isinstance(change, StoreEvent) and change.revision > report.revision:
                try:
                    await reread()
                except StoreConnectionError as exc:
                    change = await changes.athrow(exc)  # the change comes again, later
                    continue
            if fresh.revision != report.revision:
                report = fresh
                yield report
            change = await anext(changes)
