"""One node's rendezvous, held open in an event loop for torch's synchronous handler.

A :class:`Session` is a long-lived task in the handler's loop. It enters the store and
the :class:`~anyrdzv.Rendezvous` (whose heartbeat runs as a task beside it), and keeps
both open until :meth:`Session.close`. The handler's calls run as other tasks of the
same loop; if the heartbeat is lost, the rendezvous ends, pending calls are cancelled,
and every later call raises :class:`SessionLost` with the cause. The store stays open
until the close, for torch's Store.

For torchrun's monitor loop, which asks ``num_nodes_waiting()`` ten times a second, a
task follows :meth:`Rendezvous.changes` during each round and keeps a plain count that
any thread may read: nodes waiting, and also a lost participant or one that asked for a
new round, so that the agent restarts its workers at once. The same task ends every
wait for keys in the round's store (:meth:`Session.guard`) once the round cannot go on: a
participant's lease is gone, or it asked for a new round. This module imports no torch.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager, aclosing, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.abc

from .._exceptions import HeartbeatLost

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from .._rendezvous._rendezvous import Rendezvous, RendezvousInfo
    from .._stores._protocol import LeaseStore

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class SessionLost(Exception):
    """The node's rendezvous ended before the handler was shut down: its heartbeat was
    lost. ``__cause__`` is why."""


class SessionClosed(Exception):
    """The handler was shut down: no call can be served any more."""


@dataclass(eq=False)
class HeldRound:
    """The round this node holds, as the waits in its store see it.

    :ivar number: the round
    :ivar participants: its nodes, in rank order
    :ivar reason: why it cannot go on, once it cannot; ``None`` until then
    """

    number: int
    participants: tuple[str, ...]
    reason: str | None = None
    _scopes: set[anyio.CancelScope] = field(default_factory=set)

    def end(self, reason: str) -> None:
        """Mark the round as one that cannot go on, and end every wait in its store."""
        if self.reason is None:
            self.reason = reason
        for scope in list(self._scopes):
            scope.cancel()


class _NoRound:
    reason: str | None = None


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc``, or the first exception of type ``kind`` in its exception group tree."""
    if isinstance(exc, kind):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _find(inner, kind)
        if found is not None:
            return found
    return None


class Session:
    """One node's open rendezvous, for a synchronous caller in another thread.

    :param open_store: makes the store's async context manager (called in the loop)
    :param make_rendezvous: makes the node's :class:`Rendezvous` on the entered store
    :param probe: checks that the store answers, before the rendezvous is entered
    """

    def __init__(
        self,
        open_store: Callable[[], AbstractAsyncContextManager[LeaseStore]],
        make_rendezvous: Callable[[LeaseStore], Rendezvous],
        probe: Callable[[LeaseStore], Awaitable[object]],
    ) -> None:
        self._open_store = open_store
        self._make_rendezvous = make_rendezvous
        self._probe = probe
        self._store: LeaseStore | None = None
        self._rendezvous: Rendezvous | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._stop: anyio.Event | None = None
        self._done: anyio.Event | None = None
        self._failure: BaseException | None = None
        self._ending = False  # the rendezvous is leaving, or has left
        self._closed = False
        self._calls: set[anyio.CancelScope] = set()
        self._follower: anyio.CancelScope | None = None
        self._held: HeldRound | None = None
        self._admitted = False  # a round was handed to this node: it is in the run
        #: What ``num_nodes_waiting()`` answers; written by the loop, read by any thread.
        self.nodes_waiting = 0

    @property
    def store(self) -> LeaseStore:
        """The entered store, for torch's Store (open until :meth:`close`)."""
        assert self._store is not None, "the session has not started"
        return self._store

    @property
    def rendezvous(self) -> Rendezvous:
        """The entered rendezvous."""
        assert self._rendezvous is not None, "the session has not started"
        return self._rendezvous

    async def run(self, *, task_status: anyio.abc.TaskStatus[Session]) -> None:
        """Open the store and enter the rendezvous; report ``self`` once entered; hold
        both until :meth:`close`. An error before that is raised to the starter."""
        self._stop, self._done = anyio.Event(), anyio.Event()
        try:
            async with self._open_store() as store:
                self._store = store
                rendezvous = self._make_rendezvous(store)
                await self._probe(store)
                entered = False
                try:
                    async with rendezvous, anyio.create_task_group() as task_group:
                        self._rendezvous, self._task_group = rendezvous, task_group
                        entered = True
                        task_status.started(self)
                        try:
                            await self._stop.wait()
                        finally:
                            # Stopped, or the rendezvous failed and is leaving, which
                            # can take the store's timeout against a dead store: from
                            # here on no call can be served by it.
                            self._ending = True
                            for scope in list(self._calls):
                                scope.cancel()
                            if self._held is not None:
                                self._held.end("the rendezvous of this node ended")
                        task_group.cancel_scope.cancel()
                except Exception as exc:
                    if not entered:
                        raise
                    self._lose(exc)
                    await self._stop.wait()  # torch's Store still uses the store
        finally:
            self._task_group = None
            self._done.set()

    def _lose(self, exc: BaseException) -> None:
        lost = _find(exc, HeartbeatLost)
        self._failure = lost or exc
        logger.warning("the rendezvous of this node ended: %r", self._failure)

    def _check(self) -> None:
        if self._closed:
            raise SessionClosed("the rendezvous handler has been shut down")
        if self._failure is not None:
            raise SessionLost(f"{self._failure}") from self._failure
        if self._ending:
            raise SessionLost(
                "the rendezvous of this node is ending: its heartbeat or its store failed"
            )

    async def _call(self, func: Callable[[Rendezvous], Awaitable[_T]]) -> _T:
        self._check()
        rendezvous = self.rendezvous
        with anyio.CancelScope() as scope:
            self._calls.add(scope)
            try:
                return await func(rendezvous)
            except HeartbeatLost as exc:  # heard by the call: the rendezvous ends with it
                raise SessionLost(str(exc)) from exc
            finally:
                self._calls.discard(scope)
        self._check()  # cancelled by a lost heartbeat
        raise SessionLost("the rendezvous ended")  # pragma: no cover - _check raised

    async def next_rendezvous(self) -> RendezvousInfo:
        """Join the next round; follow its changes once it completes."""
        if self._follower is not None:
            self._follower.cancel()
            self._follower = None
        self.nodes_waiting = 0
        self._held = None
        info = await self._call(lambda rendezvous: rendezvous.next_rendezvous())
        self._admitted = True
        self._held = HeldRound(info.round, info.participants)
        assert self._task_group is not None
        self._follower = await self._task_group.start(self._follow, self._held)
        return info

    @property
    def admitted(self) -> bool:
        """Whether a round was ever handed to this node: only then may it close the run."""
        return self._admitted

    def ended(self, round: int) -> str | None:
        """Why round ``round``, which this node holds, cannot go on; ``None`` while it can
        (or if the node does not hold it). A cheap call from any thread."""
        held = self._held
        return held.reason if held is not None and held.number == round else None

    @contextmanager
    def guard(self) -> Iterator[HeldRound | _NoRound]:
        """Around a wait for keys in the store of the round this node holds: leave the
        block quietly, cancelling the wait, as soon as the round cannot go on (at once if
        it already cannot); the yielded object's ``reason`` then says why. Outside a
        round the block is left alone."""
        held = self._held
        if held is None:
            yield _NoRound()
            return
        with anyio.CancelScope() as scope:
            held._scopes.add(scope)
            try:
                if held.reason is not None:
                    scope.cancel()
                yield held
            finally:
                held._scopes.discard(scope)

    async def _follow(
        self, held: HeldRound, *, task_status: anyio.abc.TaskStatus[anyio.CancelScope]
    ) -> None:
        rendezvous = self.rendezvous
        round = held.number
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            async with aclosing(rendezvous.changes()) as changes:
                async for change in changes:
                    if change == "closed":
                        # torch's agents restart for nodes, not for a close; but a run
                        # closed because its restart budget is spent must end every
                        # agent: each restarts, and its next rendezvous raises the reason.
                        spent = await rendezvous.closed_reason()
                        if spent is None:
                            continue
                        held.end(f"the run is closed: {spent}")
                        self.nodes_waiting = max(self.nodes_waiting, 1)
                        logger.warning(
                            "node %r, round %d of run %r: the run is closed: %s",
                            rendezvous.node,
                            round,
                            rendezvous.run_id,
                            spent,
                        )
                        continue
                    if change == "lost":
                        held.end(
                            f"a participant of round {round} ({', '.join(held.participants)}) "
                            "lost its lease"
                        )
                    elif change == "new_round":
                        held.end(f"a participant of round {round} asked for a new round")
                    waiting = await rendezvous.num_nodes_waiting()
                    self.nodes_waiting = max(self.nodes_waiting, waiting, 1)
                    logger.info(
                        "node %r, round %d of run %r: %s; the agent should restart its workers",
                        rendezvous.node,
                        round,
                        rendezvous.run_id,
                        {
                            "waiting": f"{waiting} node(s) wait to join",
                            "lost": "a participant's lease is gone",
                            "new_round": "a participant asked for a new round",
                        }[change],
                    )

    def check(self) -> None:
        """Raise :class:`SessionLost` if the heartbeat was lost, or
        :class:`SessionClosed` after :meth:`close`; a cheap call from any thread."""
        self._check()

    async def set_closed(self) -> None:
        """Close the run, if this node was ever admitted to it; a node that never was
        (refused, or it never completed a join) leaves the run as it is, with a warning
        logged."""
        if not self._admitted:
            self._check()
            logger.warning(
                "node %r was never admitted to run %r: it leaves the run open",
                self.rendezvous.node,
                self.rendezvous.run_id,
            )
            return
        await self._call(lambda rendezvous: rendezvous.set_closed())

    async def is_closed(self) -> bool:
        """Whether the run is closed, from the watched state."""
        return await self._call(lambda rendezvous: rendezvous.is_closed())

    async def close(self, *, close_run: bool) -> None:
        """Close the run if ``close_run`` (and the heartbeat is alive, and this node was
        ever admitted to the run), leave it (revoke the lease; the last node deletes the
        run's keys), and close the store.

        :raises anyrdzv.RendezvousError: if the run could not be closed; the node has
            left all the same
        """
        if self._closed:
            return
        try:
            if close_run and self._admitted and not self._ending:  # ending: before a failure
                await self.set_closed()
        finally:
            self._closed = True
            assert self._stop is not None
            assert self._done is not None
            self._stop.set()
            await self._done.wait()
