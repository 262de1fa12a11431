"""Rounds: what an entered node does in its run's rounds, on the run's shared view.

It joins the next round and waits until the round completes with it, deciding with the
pure rules of :mod:`._rules` from what the watch shows and carrying out their answer; it
closes the run; and it follows the reasons to leave a round it holds. Every write of the
run's state is a compare-and-swap.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, final

import anyio

from .._core._delay import backoff, delay
from .._exceptions import LeaseExpired, RendezvousClosed, RendezvousError, StoreConnectionError
from .._stores._txn import Delete, Put
from . import _rules as rules

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterator, Mapping

    from .._membership._heartbeat import MemberLease
    from .._stores._protocol import LeaseStore
    from ._lifecycle import RunEntry

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
    :param last_call_timeout: how long a round waits for more nodes once it has
        ``min_nodes``, in seconds
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
        last_call_timeout: float,
    ) -> None:
        self._store = store
        self._entry = entry
        self._lease = lease
        self._run_id = run_id
        self._keys = keys
        self._node = keys.node
        self._min_nodes = min_nodes
        self._max_nodes = max_nodes
        self._last_call_timeout = last_call_timeout
        #: the last round :meth:`next` returned
        self.handed_out: int | None = None
        # The revision at which a call that ended without a round withdrew its join, or
        # 0 if it could not: the next call must not find that join in the view.
        self._withdrawn: int | None = None

    def _check_errors(self) -> None:
        errors = self._entry.run.errors
        if errors:
            raise RendezvousError(f"run {self._run_id!r}: " + "; ".join(errors.values()))

    def info_of(self, state: rules.RunState) -> tuple[Mapping[str, int], Mapping[str, bytes]]:
        """The ranks and the read-only payloads of ``state``'s participants."""
        return self._entry.run.info_of(state)

    def waiting(self) -> int:
        """How many nodes wait for the next round, from the watched state."""
        return self._entry.run.view.waiting()

    def closed(self) -> bool:
        """Whether the run is closed, from the watched state."""
        state = self._entry.run.view.state
        return state is not None and state[0].closed

    async def next(self) -> rules.RunState:
        """Join the next round, and wait until it completes with this node in it.

        :raises RendezvousClosed: if the run is closed, or is closed meanwhile
        :raises RendezvousError: if the run's state is malformed, or its nodes disagree
            on ``min_nodes`` or ``max_nodes``
        :raises HeartbeatLost: if this node's lease is gone
        :return: the round's state
        """
        retry: Iterator[float] | None = None
        while True:
            try:
                if self._withdrawn is not None:
                    await self._drop_withdrawn_join()
                done = await self._step()
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
            if done is not None:
                self.handed_out = done.round
                return done
        raise loss

    async def _step(self) -> rules.RunState | None:
        """Decide from the view, and carry it out; return the round's state once it is
        done."""
        self._check_errors()
        run = self._entry.run
        version = run.version
        min_reached = run.min_reached
        view = run.view
        if view.state is not None and not view.state[0].complete:
            # Another node of this process swaps the open round (it completes it, most
            # likely): every node would decide the same, at a cost that grows with the
            # round; wait for the outcome instead. Not in a complete round: a
            # participant may still be owed it.
            pending = run.swaps.get(view.state[1])
            if pending is not None:
                await pending.wait()
                return None
        try:
            action = rules.decide(
                view,
                self._node,
                min_nodes=self._min_nodes,
                max_nodes=self._max_nodes,
                handed_out=self.handed_out,
                min_reached_at=None
                if min_reached is None
                or view.state is None
                or min_reached[0] != view.state[0].round
                else min_reached[1],
                last_call_timeout=self._last_call_timeout,
                now=anyio.current_time(),
            )
        except ValueError as exc:
            raise RendezvousError(f"run {self._run_id!r}: {exc}") from None
        return await self._act(action, version)

    async def withdraw(self) -> None:
        """Delete this node's join key: a call of :meth:`next` ended without a round
        (a timeout, a cancellation), so no round may count this node, and the next call
        joins afresh.

        :raises StoreError: if the store fails; the next call then deletes the key
        """
        self._withdrawn = 0
        result = await self._store.txn([], [Delete(self._keys.join)])
        self._withdrawn = result.revision

    async def _drop_withdrawn_join(self) -> None:
        """Once the view shows the withdrawal, make sure that it holds no join of this
        node: a put of the withdrawn call may have landed after it (a batch in flight),
        or the withdrawal failed. A round completed with this node meanwhile is then no
        longer this node's to return: as one of its participants, it asks for a new one.
        """
        run = self._entry.run
        assert self._withdrawn is not None
        await run.until_revision(self._withdrawn)
        if self._node in run.view.joins:
            result = await self._store.txn([], [Delete(self._keys.join)])
            await run.until_revision(result.revision)
        self._withdrawn = None

    async def _act(self, action: rules.Action, version: int) -> rules.RunState | None:
        """Carry out ``action``; return the round's state, once it is done."""
        if isinstance(action, rules.Done):
            return action.state
        if isinstance(action, rules.Closed):
            raise RendezvousClosed(f"run {self._run_id!r} is closed")
        run = self._entry.run
        if isinstance(action, rules.Wait):
            await run.until_changed(version, action.until)
            return None
        if isinstance(action, rules.Join):
            key, value, lease = self._keys.join, rules.encode_join(action.round), self._lease.lease
            joined = await run.batcher.put(Put(key, value, lease=lease))
            revision = await self._store.put(key, value, lease=lease) if joined is None else joined
            logger.debug("node %r joins round %d of run %r", self._node, action.round, self._run_id)
            await run.until_revision(revision)
            return None
        if isinstance(action, rules.Create):
            new, expected, why = action.state, 0, "the run starts"
        else:
            new, expected, why = action.state, action.expected, action.why
        # The nodes of this process decide alike from one view: one of them swaps, and
        # the others wait for the view to show the outcome, rather than all swapping
        # and all but one failing.
        pending = run.swaps.get(expected)
        if pending is not None:
            await pending.wait()
            return None
        done = run.swaps[expected] = anyio.Event()
        try:
            result = await self._store.compare_and_swap(
                self._keys.state, rules.encode_state(new), expected_mod_revision=expected
            )
            if result.succeeded:
                assert result.kv is not None
                logger.debug("run %r: %s", self._run_id, why)
                await run.until_revision(result.kv.mod_revision)
            elif result.kv is not None:
                await run.until_revision(result.kv.mod_revision)
            else:
                await run.until_changed(version)
        finally:
            if run.swaps.get(expected) is done:
                del run.swaps[expected]
            done.set()
        return None

    async def close(self) -> None:
        """Close the run, and wait until the watch shows it closed.

        :raises RendezvousError: if the run's state is malformed
        """
        run = self._entry.run
        while True:
            self._check_errors()
            version = run.version
            action = rules.closing(run.view, min_nodes=self._min_nodes, max_nodes=self._max_nodes)
            if action is None:
                return
            expected = action.expected if isinstance(action, rules.Swap) else 0
            result = await self._store.compare_and_swap(
                self._keys.state, rules.encode_state(action.state), expected_mod_revision=expected
            )
            if result.succeeded:
                assert result.kv is not None
                logger.debug("node %r closed run %r", self._node, self._run_id)
                await run.until_revision(result.kv.mod_revision)
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
            for change in rules.changes(run.view, held):
                if change not in seen:
                    seen.add(change)
                    yield change
            await run.until_changed(version)
