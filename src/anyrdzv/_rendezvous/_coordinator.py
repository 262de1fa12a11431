"""Coordinator: the one node of a run that follows every node's keys, and decides.

The other nodes follow only the run's control keys, so a round costs each of them a few
watch events, whatever the size of the run; the coordinator alone receives the joins
and the heartbeat keys, once each, and writes what follows from them with the pure
rules of :func:`._rules.coordinate`: the state is created (under a new *run lease*,
which the state, the round's record and the adapters' keys live under), rounds open and
complete, and the state carries the signals the participants follow (a participant
lost, nodes waiting). Every write of the state is a compare-and-swap, so a coordinator
that has just lost its office (its lease gone, another elected) cannot write over a
newer decision.

Any node may become the coordinator: :func:`candidacy` runs in every node's task group,
and claims the key ``<prefix>/<run_id>/state.coordinator``, put-if-absent under the
node's own lease, whenever the watched control keys show it free. When the coordinator
dies, its lease ends, its key goes, and another node takes over within a round trip.
The coordinator keeps the run lease alive; once no node is left, it expires, and the
run's keys with it.
"""

from __future__ import annotations

import logging
import math
from contextlib import aclosing
from dataclasses import replace
from typing import TYPE_CHECKING, final

import anyio
import anyio.abc

from .._core._changed import Changed
from .._core._delay import backoff, delay
from .._core._groups import HostedTaskGroup
from .._exceptions import LeaseExpired, StoreConnectionError, StoreError
from .._stores._follow import Resynced, follow
from .._stores._model import EventType, Lease
from .._stores._txn import Compare, Get, GetResult, Put
from . import _rules as rules
from ._events import emit

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from .._membership._heartbeat import MemberLease
    from .._stores._protocol import LeaseStore
    from ._ranks import RankOrder
    from ._run_view import RunView

logger = logging.getLogger(__name__)

#: How long the coordinator lets the watched keys settle before it decides again: a
#: burst of joins is one decision, not one each.
SETTLE = 0.005
#: The shortest gap between two writes that only change how many nodes wait.
SIGNALS_GAP = 0.2


def run_lease_ttl(node_ttl: int) -> int:
    """The run lease's TTL for nodes whose leases live ``node_ttl`` seconds: long enough
    to outlive a coordinator's death and the election of the next."""
    return 2 * node_ttl + 5


@final
class Coordinator:
    """The coordinator's office, held by node ``keys.node`` for as long as :meth:`run`
    runs.

    :param store: the store
    :param run_id: the run
    :param keys: the node's keys
    :param lease: the node's heartbeat, whose lease the coordinator's key lives under
    :param min_nodes: the fewest nodes of a round, for a state it creates
    :param max_nodes: the most, likewise
    :param last_call_timeout: how long a round waits for more nodes once it has
        ``min_nodes``, in seconds
    :param run_ttl: the TTL of a run lease it grants
    :param floor: the first round this node has not seen, for a state it creates
    :param max_rounds: the restart budget, for a state it creates (``None``: no limit)
    :param rank_order: how rounds rank their participants, for a state it creates
    """

    def __init__(
        self,
        store: LeaseStore,
        run_id: str,
        keys: rules.NodeKeys,
        lease: MemberLease,
        *,
        min_nodes: int,
        max_nodes: int,
        last_call_timeout: float,
        run_ttl: int,
        floor: Callable[[], int] = lambda: 0,
        max_rounds: int | None = None,
        rank_order: RankOrder = "natural",
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._keys = keys
        self._lease = lease
        self._min_nodes = min_nodes
        self._max_nodes = max_nodes
        self._last_call_timeout = last_call_timeout
        self._run_ttl = run_ttl
        self._floor = floor
        self._max_rounds = max_rounds
        self._rank_order: RankOrder = rank_order
        self._view = rules.View(None, None, {}, {})
        self._revision = 0
        self._changes = Changed()
        self._deposed = anyio.Event()
        self._min_reached: tuple[int, float] | None = None
        self._signals_at = -math.inf

    async def run(self) -> None:
        """Hold the office: read the run, follow it, and decide, until the coordinator's
        key is gone or another node's.

        :raises StoreError: if the store fails in a way a retry cannot mend
        """
        await self._read()
        # Closed as the context managers close theirs, so that an error of its tasks
        # (Ctrl-C, on trio, in any of them) leaves as itself, not in a group.
        async with HostedTaskGroup(f"coordinator of run {self._run_id!r}") as tg:
            tg.start_soon(self._follow, name=f"coordinator watch of run {self._run_id!r}")
            tg.start_soon(self._keep_run_lease, name=f"run lease of {self._run_id!r}")
            tg.start_soon(self._decide, name=f"coordinator of run {self._run_id!r}")
            await self._deposed.wait()
            tg.cancel_scope.cancel()
        logger.info("node %r is no longer the coordinator of run %r", self._keys.node, self._run_id)

    # -- the view --------------------------------------------------------------------

    async def _read(self) -> int:
        keys = self._keys
        result = await self._store.txn(
            [],
            [
                Get(keys.control, prefix=True),
                Get(keys.nodes, prefix=True),
                Get(keys.joins, prefix=True),
            ],
        )
        self._view = rules.View(None, None, {}, {})
        for answer in result.results:
            assert isinstance(answer, GetResult)
            for kv in answer.kvs:
                self._apply(kv.key, kv.value, kv.mod_revision)
        self._revision = result.revision
        self._changed()
        return result.revision

    def _apply(self, key: str, value: bytes | None, revision: int) -> None:
        keys, view = self._keys, self._view
        name = key[len(keys.run) :]
        try:
            if name.startswith(rules.NODES):
                node = name[len(rules.NODES) :]
                view.set_member(node, None if value is None else rules.decode_member(value))
            elif name.startswith(rules.JOIN):
                join = None if value is None else (rules.decode_join(value), revision)
                view.set_join(name[len(rules.JOIN) :], join)
            elif name == rules.STATE:
                view.state = None if value is None else (rules.decode_state(value), revision)
            elif name == rules.RECORD:
                view.record = None if value is None else rules.decode_record(value)
            elif name == rules.COORDINATOR and (
                value is None or rules.decode_coordinator(value) != keys.node
            ):
                self._deposed.set()
        except ValueError as exc:
            # The nodes see the control keys' errors themselves; a node key no node of
            # this layout wrote is no member.
            logger.warning(
                "coordinator of run %r: skipping key %r: %s", self._run_id, key[:200], exc
            )

    def _changed(self) -> None:
        view = self._view
        if view.state is not None and not view.state[0].complete:
            state = view.state[0]
            if view.count_joined(state.round) < state.min_nodes:
                self._min_reached = None
            elif self._min_reached is None or self._min_reached[0] != state.round:
                self._min_reached = (state.round, anyio.current_time())
        self._changes.bump()

    async def _follow(self) -> None:
        data = self._keys.data
        changes = follow(
            self._store,
            self._keys.run,
            start_revision=self._revision + 1,
            what=f"run {self._run_id!r} (coordinator)",
            resync=self._read,
            log=logger,
        )
        async with aclosing(changes) as events:
            async for event in events:
                if isinstance(event, Resynced) or event.key.startswith(data):
                    continue
                self._revision = max(self._revision, event.revision)
                value = event.value if event.type is EventType.PUT else None
                self._apply(event.key, value, event.revision)
                self._changed()

    # -- deciding ----------------------------------------------------------------------

    async def _decide(self) -> None:
        retry: Iterator[float] | None = None
        while True:
            await anyio.sleep(SETTLE)
            version = self._changes.version
            min_reached = self._min_reached
            state = self._view.state
            action = rules.coordinate(
                self._view,
                min_nodes=self._min_nodes,
                max_nodes=self._max_nodes,
                min_reached_at=None
                if min_reached is None or state is None or min_reached[0] != state[0].round
                else min_reached[1],
                last_call_timeout=self._last_call_timeout,
                now=anyio.current_time(),
                max_rounds=self._max_rounds,
                rank_order=self._rank_order,
            )
            if isinstance(action, rules.Wait):
                await self._changes.wait_past(version, action.until)
                continue
            if isinstance(action, rules.Swap) and action.record is None and state is not None:
                # Only the signals: a change of how many wait may wait a little, so that
                # a stream of arrivals is a few writes, not one each.
                quiet_until = self._signals_at + SIGNALS_GAP
                same_kind = (state[0].lost, bool(state[0].waiting)) == (
                    action.state.lost,
                    bool(action.state.waiting),
                )
                if (
                    same_kind
                    and action.state.round == state[0].round
                    and quiet_until > anyio.current_time()
                ):
                    await self._changes.wait_past(version, quiet_until)
                    continue
            try:
                revision = await self._write(action)
            except StoreConnectionError as exc:
                retry = retry or backoff(0.05, 2.0)
                pause = next(retry)
                logger.warning(
                    "coordinator of run %r: the store failed (%s); deciding again in %.2f s",
                    self._run_id,
                    exc,
                    pause,
                )
                await delay(pause)
                continue
            retry = None
            if revision is None:
                await self._changes.wait_past(version)
            else:
                while self._revision < revision:
                    await self._changes.wait_past(self._changes.version)

    async def _write(self, action: rules.Create | rules.Swap) -> int | None:
        """Carry out ``action``; return the revision it wrote at, or ``None`` if the state
        had changed."""
        keys = self._keys
        if isinstance(action, rules.Create):
            run_lease = await self._store.grant(self._run_ttl)
            # A run whose state vanished under live nodes (its run lease ran out, with no
            # coordinator to keep it) goes on from a round none of them has seen.
            state = replace(action.state, round=self._floor(), lease=run_lease.id)
            result = await self._store.txn(
                [Compare.absent(keys.state)],
                [Put(keys.state, rules.encode_state(state), lease=run_lease)],
            )
            if not result.succeeded:
                await self._store.revoke(run_lease)
                return None
            logger.info(
                "run %r starts (round 0, min_nodes %d, max_nodes %d)",
                self._run_id,
                state.min_nodes,
                state.max_nodes,
            )
            return result.revision
        lease = None if action.state.lease is None else Lease(action.state.lease, self._run_ttl)
        puts = [Put(keys.state, rules.encode_state(action.state), lease=lease)]
        if action.record is not None:
            puts.append(Put(keys.record, rules.encode_record(action.record), lease=lease))
        try:
            result = await self._store.txn(
                [Compare.mod_revision(keys.state, "==", action.expected)], puts
            )
        except LeaseExpired:
            logger.warning("run %r: its run lease is gone; the state goes with it", self._run_id)
            return None
        if not result.succeeded:
            return None
        if action.state.reason is not None and action.state.closed:
            emit(
                logger,
                "budget_spent",
                "run %r is closed: %s",
                self._run_id,
                action.state.reason,
                run_id=self._run_id,
                node=self._keys.node,
                round=action.state.round,
                reason=action.state.reason,
            )
        if action.record is not None:
            emit(
                logger,
                "round_complete",
                "run %r: %s",
                self._run_id,
                action.why,
                run_id=self._run_id,
                node=self._keys.node,
                round=action.record.round,
                world_size=len(action.record.participants),
                reason=action.why,
            )
        if action.record is None:
            self._signals_at = anyio.current_time()
        logger.debug("run %r: %s", self._run_id, action.why)
        return result.revision

    async def _keep_run_lease(self) -> None:
        """Renew the run lease while in office."""
        interval = max(self._run_ttl / 3, 0.5)
        while True:
            state = self._view.state
            if state is not None and state[0].lease is not None:
                try:
                    await self._store.keep_alive(Lease(state[0].lease, self._run_ttl))
                except LeaseExpired:
                    pass  # the state went with it: the view shows it, and the run starts anew
                except StoreError as exc:
                    logger.warning("run %r: renewing its run lease failed: %s", self._run_id, exc)
                    await delay(min(1.0, interval))
                    continue
            await anyio.sleep(interval)


async def candidacy(
    store: LeaseStore,
    run: RunView,
    make: Callable[[], Coordinator],
    keys: rules.NodeKeys,
    lease: MemberLease,
) -> None:
    """Stand for the coordinator's office for as long as the node is in the run: claim
    its key whenever the control keys show it free (one node of this view at a time),
    and hold the office while the key is this node's.

    :param make: makes the coordinator, for each term in office
    """
    retry: Iterator[float] | None = None
    while True:
        version = run.version
        holder = run.coordinator
        try:
            if holder == keys.node:
                await make().run()
                retry = None
                await run.until_changed(version)  # until the control keys show the change
                continue
            if holder is None and not run.claiming and lease.lease is not None:
                run.claiming = True
                try:
                    won = await _claim(store, keys, lease.lease)
                finally:
                    run.claiming = False
                    run.poke()  # the node's peers in this view may claim, if it failed
                retry = None
                if won is not None:
                    logger.info("node %r is the coordinator of run %r", keys.node, keys.run)
                    await run.until_revision(won)
                continue
        except LeaseExpired as exc:
            # The node's lease is gone: its next_rendezvous() raises the heartbeat's one
            # error, and the heartbeat ends the block with it.
            lease._lost(f"the store said its lease is gone: {exc}", exc)
            run.poke()
            return
        except StoreError as exc:
            retry = retry or backoff(0.05, 2.0)
            pause = next(retry)
            logger.warning(
                "node %r: the coordinator's office failed (%s); again in %.2f s",
                keys.node,
                exc,
                pause,
            )
            await delay(pause)
            continue
        await run.until_changed(version)


async def _claim(store: LeaseStore, keys: rules.NodeKeys, lease: Lease) -> int | None:
    """Put the coordinator's key under ``lease`` if it is absent; the revision, or
    ``None`` if another node holds it."""
    result = await store.txn(
        [Compare.absent(keys.coordinator)],
        [Put(keys.coordinator, rules.encode_coordinator(keys.node), lease=lease)],
    )
    return result.revision if result.succeeded else None
