"""Rounds: what an entered node does in its run's rounds, on the run's control keys.

It joins the next round and waits until the coordinator completes it with this node,
deciding with the pure rules of :func:`._rules.node_step` from what the shared watch of
the control keys shows; it closes the run (a compare-and-swap of the state); and it
follows the reasons to leave a round it holds, which the state carries.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, final

from .._core._delay import backoff, delay
from .._exceptions import LeaseExpired, RendezvousClosed, RendezvousError, StoreConnectionError
from .._stores._model import Lease
from .._stores._txn import Compare, Delete, Get, GetResult, Put
from . import _rules as rules

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterator, Mapping

    from .._membership._heartbeat import MemberLease
    from .._stores._protocol import LeaseStore
    from ._lifecycle import RunEntry
    from ._ranks import RankOrder

logger = logging.getLogger(__name__)


@final
class Rounds:
    """The rounds of node ``keys.node`` of run ``run_id``, for one entry of the node.

    :param store: the store
    :param entry: the node's entry into its run, whose shared view it decides on
    :param lease: the node's heartbeat, whose lease its join key is put under
    :param run_id: the run
    :param keys: the node's keys
    :param min_nodes: the fewest nodes of a round
    :param max_nodes: the most nodes of a round
    :param rank_order: the node's rank order, which the run's must be
    """

    def __init__(
        self,
        store: LeaseStore,
        entry: RunEntry,
        lease: MemberLease,
        run_id: str,
        keys: rules.NodeKeys,
        *,
        min_nodes: int,
        max_nodes: int,
        rank_order: RankOrder = "natural",
    ) -> None:
        self._store = store
        self._entry = entry
        self._lease = lease
        self._run_id = run_id
        self._keys = keys
        self._node = keys.node
        self._min_nodes = min_nodes
        self._max_nodes = max_nodes
        self._rank_order: RankOrder = rank_order
        #: the last round :meth:`next` returned
        self.handed_out: int | None = None
        #: the round this node's join key asks for, once it is put
        self.joined: int | None = None
        # A call ended without a round and withdrew its join: the next call deletes the
        # join key again first, since a put of the withdrawn call may have landed after
        # the delete (a batch in flight), or the delete failed.
        self._withdrawn = False

    def _check_errors(self) -> None:
        loss = self._lease.loss
        if loss is not None:  # the candidacy heard of it, putting the coordinator's key
            raise loss
        errors = self._entry.run.errors
        if errors:
            raise RendezvousError(f"run {self._run_id!r}: " + "; ".join(errors.values()))

    def data_lease(self) -> int | None:
        """The run's lease, from the watched state; ``None`` before the state exists."""
        state = self._entry.run.state
        return None if state is None else state[0].lease

    def ranks_of(self, record: rules.Record) -> Mapping[str, int]:
        """The ranks of ``record``'s participants."""
        return self._entry.run.ranks_of(record)

    async def payloads_of(self, record: rules.Record) -> Mapping[str, bytes]:
        """The read-only payloads of ``record``'s participants (one read, if any is not
        empty).

        :raises StoreError: if the read fails
        """
        return await self._entry.run.payloads_of(record, self._keys.nodes)

    def waiting(self) -> int:
        """How many nodes wait for the next round, from the watched state."""
        state = self._entry.run.state
        return 0 if state is None or not state[0].complete else state[0].waiting

    def wanted(self) -> int | None:
        """The round this node would ask for now, from the watched state, for the log;
        ``None`` before the state exists."""
        state = self._entry.run.state
        if state is None:
            return None
        current = state[0]
        if current.complete and (self.handed_out == current.round or self.joined == current.round):
            return current.round + 1
        return current.round

    def closed(self) -> bool:
        """Whether the run is closed, from the watched state."""
        state = self._entry.run.state
        return state is not None and state[0].closed

    def closed_reason(self) -> str | None:
        """Why the coordinator closed the run (its budget spent), from the watched state;
        ``None`` if it is open, or a node closed it."""
        state = self._entry.run.state
        return None if state is None or not state[0].closed else state[0].reason

    async def next(self) -> tuple[rules.RunState, rules.Record]:
        """Join the next round, and wait until it completes with this node in it.

        :raises RendezvousClosed: if the run is closed, or is closed meanwhile
        :raises RendezvousError: if the run's state is malformed, or its nodes disagree
            on ``min_nodes``, ``max_nodes`` or ``rank_order``
        :raises HeartbeatLost: if this node's lease is gone
        :return: the round's state and record
        """
        retry: Iterator[float] | None = None
        run = self._entry.run
        while True:
            self._check_errors()
            version = run.version
            state = run.state
            try:
                action = rules.node_step(
                    None if state is None else state[0],
                    run.record,
                    self._node,
                    joined=self.joined,
                    handed_out=self.handed_out,
                    min_nodes=self._min_nodes,
                    max_nodes=self._max_nodes,
                    rank_order=self._rank_order,
                )
            except ValueError as exc:
                raise RendezvousError(f"run {self._run_id!r}: {exc}") from None
            if isinstance(action, rules.Done):
                self.handed_out = action.state.round
                return action.state, action.record
            if isinstance(action, rules.Closed):
                because = "" if action.reason is None else f": {action.reason}"
                raise RendezvousClosed(f"run {self._run_id!r} is closed{because}")
            if isinstance(action, rules.Wait):
                await run.until_changed(version, action.until)
                continue
            try:
                if self._withdrawn:
                    await self._delete_withdrawn_join()
                    continue  # decide again, on the view as of the delete
                await self._join(action.round)
            except StoreConnectionError as exc:
                retry = retry or backoff(0.05, 2.0)
                pause = next(retry)
                logger.warning(
                    "node %r of run %r: the store failed (%s); retrying in %.2f s",
                    self._node,
                    self._run_id,
                    exc,
                    pause,
                )
                await delay(pause)
                continue
            except LeaseExpired as exc:
                # The heartbeat's renewals hear of it too: both raise this one error.
                loss = self._lease._lost(f"the store said its lease is gone: {exc}", exc)
                break
            retry = None
        raise loss

    async def _delete_withdrawn_join(self) -> None:
        """Delete the join key that a withdrawn call may have left, and wait until the
        view shows the run's state as of that delete.

        A round may have completed with that stale join before this node's view heard
        of it. Decided on the view before the delete, the call would join that round
        afresh and be handed it; decided on the view after it, the round is complete
        without this call, which asks for the next one.
        """
        result = await self._store.txn([], [Delete(self._keys.join), Get(self._keys.state)])
        self._withdrawn = False
        read = result.results[-1]
        if isinstance(read, GetResult) and read.kvs:
            # The coordinator puts the state before the record, in one txn: once the view
            # is at the state's revision, it shows that state.
            await self._entry.run.until_revision(read.kvs[0].mod_revision)

    async def _join(self, round: int) -> None:
        """Put this node's join key for ``round``."""
        run = self._entry.run
        key, value, lease = self._keys.join, rules.encode_join(round), self._lease.lease
        joined = await run.batcher.put(Put(key, value, lease=lease))
        if joined is None:
            await self._store.put(key, value, lease=lease)
        self.joined = round
        logger.debug("node %r joins round %d of run %r", self._node, round, self._run_id)

    async def withdraw(self) -> None:
        """Delete this node's join key: a call of :meth:`next` ended without a round
        (a timeout, a cancellation), so no round may count this node, and the next call
        joins afresh.

        :raises StoreError: if the store fails; the next call then deletes the key
        """
        self.joined = None
        self._withdrawn = True
        await self._store.txn([], [Delete(self._keys.join)])

    async def close(self) -> None:
        """Close the run, and wait until the watch shows it closed.

        :raises RendezvousError: if the run's state is malformed
        """
        run = self._entry.run
        while True:
            self._check_errors()
            version = run.version
            action = rules.closing(run.state, min_nodes=self._min_nodes, max_nodes=self._max_nodes)
            if action is None:
                return
            expected = action.expected if isinstance(action, rules.Swap) else 0
            lease = None if action.state.lease is None else Lease(action.state.lease, 1)
            result = await self._store.txn(
                [Compare.mod_revision(self._keys.state, "==", expected)],
                [Put(self._keys.state, rules.encode_state(action.state), lease=lease)],
            )
            if result.succeeded:
                logger.debug("node %r closed run %r", self._node, self._run_id)
                await run.until_revision(result.revision)
                return
            await run.until_changed(version)

    async def changes(self) -> AsyncGenerator[rules.Change, None]:
        """Yield, once each, the reasons to leave the round this node holds (see
        :func:`._rules.changes`), afresh for each round :meth:`next` returns."""
        run = self._entry.run
        seen: set[str] = set()
        held: int | None = None
        while True:
            version = run.version
            if held != self.handed_out:
                held, seen = self.handed_out, set()
            state = run.state
            for change in rules.changes(None if state is None else state[0], held):
                if change not in seen:
                    seen.add(change)
                    yield change
            await run.until_changed(version)
