"""RunView: one watch and one decoded view of a run, shared by the nodes of that run
that one thread holds on one store.

A thousand :class:`~anyrdzv.Rendezvous` nodes in one process, each with its own watch,
would decode every write a thousand times, and each write would wake every node to
decide again: a cost that grows as the square of the nodes. The nodes of a run on one
store object share a :class:`RunView` instead: one watch, one decoded
:class:`~._rules.View`, and a wake-up only when something a waiting node decides on has
changed. The watch is :func:`~anyrdzv._stores._follow.follow`: a broken one resumes from
the revision after the last event, and a compacted history is read afresh.

Lifetimes stay structured. The watch is a task in the task group of one entered node,
its *host*; when that node leaves (its task group cancels the watch), the watch goes on,
from the next revision, as a task in the task group of another entered node. No task
outlives the node whose task group holds it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from contextlib import aclosing
from types import MappingProxyType
from typing import TYPE_CHECKING, final

import anyio
import anyio.abc

from .._checks import echo
from .._exceptions import StoreConnectionError, StoreError
from .._stores._follow import Resynced, follow
from .._stores._model import EventType
from . import _rules as rules
from ._write_batch import WriteBatcher

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .._stores._protocol import LeaseStore

logger = logging.getLogger(__name__)

#: The shared views in use: by thread (a store belongs to one event loop, and a loop to
#: one thread), store object and run prefix. An entry lives while a node holds it.
_views: dict[tuple[int, int, str], RunView] = {}
_tokens = itertools.count()


def acquire(store: LeaseStore, run_id: str, run_prefix: str) -> RunView:
    """The shared view of the run at ``run_prefix`` on ``store`` in this thread, made if
    none is held; the caller holds it until :meth:`RunView.release`.

    :param store: the store
    :param run_id: the run, for log messages
    :param run_prefix: the run's key prefix, ``<prefix>/<run_id>/``
    """
    key = (threading.get_ident(), id(store), run_prefix)
    view = _views.get(key)
    if view is None:
        view = _views[key] = RunView(store, run_id, run_prefix, key)
    view.held += 1
    return view


@final
class RunView:
    """The watched keys of one run, shared by the nodes of one thread on one store.

    Do not make one: :func:`acquire` it.

    :ivar view: the run's keys, decoded
    :ivar errors: for each key whose value is malformed, why
    :ivar revision: the store revision the view is at
    :ivar version: bumped whenever a change could alter what a waiting node does
    :ivar min_reached: the open round, and when (local time) its live joins were
        first seen to reach its ``min_nodes``; or ``None``
    :ivar held: how many nodes hold this view
    :ivar swaps: the compare-and-swaps of the state that a node sends, by the
        ``mod_revision`` they expect, each with an event set once the view shows its
        outcome: another node that would send the same waits for it instead
    """

    def __init__(
        self, store: LeaseStore, run_id: str, run_prefix: str, key: tuple[int, int, str]
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._prefix = run_prefix
        self._data_prefix = run_prefix + rules.DATA
        self._key = key
        self.view = rules.View(None, {}, {})
        self.errors: dict[str, str] = {}
        self.revision = 0
        self.version = 0
        self.min_reached: tuple[int, float] | None = None
        self.held = 0
        self.swaps: dict[int, anyio.Event] = {}
        #: the puts of the nodes' keys go through it
        self.batcher = WriteBatcher(store)
        self._wake = anyio.Event()
        self._signature: tuple[object, ...] = ()
        self._lost = 0  # bumped when a participant of the state's round comes or goes
        self._errors_seen = 0  # bumped when a malformed key comes or goes
        self._participants: frozenset[str] = frozenset()
        self._participants_of: rules.RunState | None = None
        self._at_revision: list[tuple[int, int, anyio.Event]] = []  # a heap
        self._hosts: dict[int, anyio.abc.TaskGroup] = {}  # the entered nodes' task groups
        self._watcher: int | None = None  # the host whose task group runs the watch
        self._ready = anyio.Event()  # set once the first read of the run is in
        self._reading: anyio.Event | None = None  # set when a read in flight ends
        self._infos: tuple[rules.RunState, Mapping[str, int], Mapping[str, bytes]] | None = None

    # -- the nodes ---------------------------------------------------------------------

    async def read(self) -> None:
        """Read the run, unless a node of this view has: one read, however many nodes
        enter at once.

        :raises StoreError: if this node's read fails
        """
        while not self._ready.is_set():
            reading = self._reading
            if reading is not None:
                await reading.wait()  # if that read failed, this node reads
                continue
            reading = self._reading = anyio.Event()
            try:
                await self._snapshot()
                self._ready.set()
            finally:
                self._reading = None
                reading.set()

    async def attach(self, task_group: anyio.abc.TaskGroup) -> int:
        """Offer ``task_group`` (an entered node's) to host the watch, which starts in
        it if none runs; return the node's token for :meth:`detach`.

        :raises StoreError: if the run was never read (:meth:`read`), and reading fails
        """
        token = next(_tokens)
        self._hosts[token] = task_group
        try:
            if self._watcher is None:
                self._watcher = token
                await task_group.start(self._watch, token)
            else:
                await self.read()
        except BaseException:
            self.detach(token)
            raise
        return token

    def detach(self, token: int) -> None:
        """Withdraw a node's task group, before it closes: if it runs the watch, the
        watch moves to another node's task group as the task ends."""
        self._hosts.pop(token, None)

    def release(self) -> bool:
        """Let go of the view (after :meth:`detach`); return whether no node of this
        thread holds it any more."""
        self.held -= 1
        if self.held > 0:
            return False
        if _views.get(self._key) is self:
            del _views[self._key]
        return True

    def _hand_over(self) -> None:
        if self._watcher is not None or not self._hosts:
            return
        token, task_group = next(iter(self._hosts.items()))
        self._watcher = token
        logger.debug("run %r: the watch moves to another node's task group", self._run_id)
        task_group.start_soon(self._watch, token, name=f"watch of run {self._run_id!r}")

    # -- waiting -----------------------------------------------------------------------

    async def until_changed(self, version: int, until: float | None = None) -> None:
        """Wait until :attr:`version` is past ``version``, or the local time ``until``."""
        while self.version <= version:
            wake = self._wake
            if until is None:
                await wake.wait()
            else:
                with anyio.move_on_after(until - anyio.current_time()):
                    await wake.wait()
                return

    async def until_revision(self, revision: int) -> None:
        """Wait until the view is at ``revision`` or later."""
        if self.revision >= revision:
            return
        event = anyio.Event()
        heapq.heappush(self._at_revision, (revision, next(_tokens), event))
        await event.wait()

    def info_of(self, state: rules.RunState) -> tuple[Mapping[str, int], Mapping[str, bytes]]:
        """The ranks and the read-only payloads of ``state``'s participants, made once
        for all the nodes that hold the round."""
        if self._infos is None or self._infos[0] is not state:
            ranks = {name: rank for rank, name in enumerate(state.participants)}
            self._infos = (state, ranks, MappingProxyType(dict(state.payloads)))
        return self._infos[1], self._infos[2]

    # -- the watch ---------------------------------------------------------------------

    def _apply(self, key: str, value: bytes | None, revision: int) -> None:
        """Apply a put (``value``) or a delete (``None``) of ``key`` to the view."""
        name = key[len(self._prefix) :]
        view = self.view
        if self.errors.pop(key, None) is not None:
            self._errors_seen += 1
        # The view's dicts change in place: decide() reads it between two events only.
        try:
            if name == rules.STATE:
                view.state = None if value is None else (rules.decode_state(value), revision)
            elif name.startswith(rules.MEMBERS) and "/" not in name[len(rules.MEMBERS) :]:
                node = name[len(rules.MEMBERS) :]
                view.set_member(node, None if value is None else rules.decode_member(value))
                if node in self._participants:
                    self._lost += 1
            elif name.startswith(rules.JOIN) and "/" not in name[len(rules.JOIN) :]:
                join = None if value is None else (rules.decode_join(value), revision)
                view.set_join(name[len(rules.JOIN) :], join)
            else:
                logger.warning(
                    "run %r: skipping key %s, which no node writes", self._run_id, echo(key)
                )
        except ValueError as exc:
            logger.warning(
                "run %r: key %s holds a malformed value: %s", self._run_id, echo(key), exc
            )
            self.errors[key] = f"key {echo(key)} holds a malformed value ({exc}): {echo(value)}"
            self._errors_seen += 1

    def _after_change(self) -> None:
        view = self.view
        signature: tuple[object, ...]
        if view.state is None:
            self.min_reached = None
            self._participants, self._participants_of = frozenset(), None
            signature = (None, self._errors_seen)
        else:
            state, state_revision = view.state
            if self._participants_of is not state:
                self._participants = frozenset(state.participants)
                self._participants_of = state
            if state.complete:
                self.min_reached = None
                # What changes() and a late node look at: the state, a participant
                # gone, and whether nodes wait.
                signature = (state_revision, self._lost, view.waiting() > 0, self._errors_seen)
            else:
                count = view.count_joined(state.round)
                reached = count >= state.min_nodes
                if not reached:
                    self.min_reached = None
                elif self.min_reached is None or self.min_reached[0] != state.round:
                    self.min_reached = (state.round, anyio.current_time())
                # What decide() looks at in an open round, for a node that has joined it.
                signature = (
                    state_revision,
                    self.min_reached,
                    count >= state.max_nodes,
                    reached and rules.previous_back(view, state),
                    self._errors_seen,
                )
        if signature != self._signature:
            self._signature = signature
            self.version += 1
            self._wake.set()
            self._wake = anyio.Event()
        self._release()

    def _release(self) -> None:
        """Wake the nodes that wait for a revision the view has reached."""
        waiters = self._at_revision
        while waiters and waiters[0][0] <= self.revision:
            heapq.heappop(waiters)[2].set()

    async def _snapshot(self) -> int:
        kvs, revision = await self._store.get_prefix_kv(self._prefix)
        self.view = rules.View(None, {}, {})
        self._errors_seen += bool(self.errors)
        self.errors.clear()
        data = self._data_prefix
        for kv in kvs:
            if not kv.key.startswith(data):
                self._apply(kv.key, kv.value, kv.mod_revision)
        self.revision = revision
        # Anything may have changed while no watch ran: every waiting node looks again.
        self._signature = ()
        self._after_change()
        return revision

    async def _watch(
        self, token: int, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await self.read()
            task_status.started()
            await self._follow()
        finally:
            if self._watcher == token:
                self._watcher = None
            # The node's task group is closing (or failed): it hosts nothing more.
            self._hosts.pop(token, None)
            self._hand_over()

    async def _follow(self) -> None:
        data = self._data_prefix
        changes = follow(
            self._store,
            self._prefix,
            start_revision=self.revision + 1,
            what=f"run {self._run_id!r}",
            resync=self._resync,
            log=logger,
        )
        async with aclosing(changes) as events:
            async for event in events:
                if isinstance(event, Resynced):
                    continue  # the view is the read's, and every waiting node looks again
                self.revision = max(self.revision, event.revision)
                if event.key.startswith(data):
                    self._release()  # an adapter's key: no node decides on it
                    continue
                value = event.value if event.type is EventType.PUT else None
                self._apply(event.key, value, event.revision)
                self._after_change()

    async def _resync(self) -> int:
        """Read the run afresh after a compaction: the view's snapshot read.

        :raises StoreConnectionError: if the read fails in any way, so that
            :func:`follow` logs it, backs off and reads again
        """
        try:
            return await self._snapshot()
        except StoreConnectionError:
            raise
        except StoreError as exc:
            raise StoreConnectionError(f"reading the run failed: {exc}") from exc
