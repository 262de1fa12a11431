"""RunView: one watch of a run's control keys, and their decoded values, shared by the
nodes of that run that one thread holds on one store.

Every node follows only the run's control keys, ``<prefix>/<run_id>/state*``: the state,
the coordinator's key and the last round's record, a few changes per round, whatever the
size of the run. The nodes of a run on one store object in one thread share one such
watch, and one read of the round's payloads when they are wanted. The watch is
:func:`~anyrdzv._stores._follow.follow`: a broken one resumes from the revision after
the last event, and a compacted history is read afresh.

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
from .._core._changed import Changed
from .._exceptions import StoreConnectionError, StoreError
from .._stores._follow import Resynced, follow
from .._stores._model import EventType
from . import _rules as rules
from ._write_batch import WriteBatcher

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

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
    """The watched control keys of one run, shared by the nodes of one thread on one
    store.

    Do not make one: :func:`acquire` it.

    :ivar state: the run's state and its ``mod_revision``, or ``None``
    :ivar record: the last completed round's record, or ``None``
    :ivar coordinator: the coordinator's node name, or ``None``
    :ivar errors: for each key whose value is malformed, why
    :ivar revision: the store revision the view is at
    :ivar held: how many nodes hold this view
    :ivar claiming: whether a node of this view is claiming the coordinator's key: the
        others wait for the outcome instead of sending the same claim
    """

    def __init__(
        self, store: LeaseStore, run_id: str, run_prefix: str, key: tuple[int, int, str]
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._prefix = run_prefix
        self._control = run_prefix + rules.STATE
        self._key = key
        self.state: tuple[rules.RunState, int] | None = None
        self.record: rules.Record | None = None
        self.coordinator: str | None = None
        self.errors: dict[str, str] = {}
        self.revision = 0
        self.held = 0
        self.claiming = False
        #: the first round this view has not seen
        self.next_round = 0
        #: the puts of the nodes' keys go through it
        self.batcher = WriteBatcher(store)
        self._changes = Changed()
        self._at_revision: list[tuple[int, int, anyio.Event]] = []  # a heap
        self._hosts: dict[int, anyio.abc.TaskGroup] = {}  # the entered nodes' task groups
        self._watcher: int | None = None  # the host whose task group runs the watch
        self._ready = anyio.Event()  # set once the first read of the run is in
        self._reading: anyio.Event | None = None  # set when a read in flight ends
        self._infos: tuple[rules.Record, Mapping[str, int], Mapping[str, bytes]] | None = None
        self._payloads: dict[int, anyio.Event | Mapping[str, bytes]] = {}

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

    @property
    def version(self) -> int:
        """Bumped whenever a control key changes."""
        return self._changes.version

    async def until_changed(self, version: int, until: float | None = None) -> None:
        """Wait until :attr:`version` is past ``version``, or the local time ``until``."""
        await self._changes.wait_past(version, until)

    async def until_revision(self, revision: int) -> None:
        """Wait until the view is at ``revision`` or later."""
        if self.revision >= revision:
            return
        event = anyio.Event()
        heapq.heappush(self._at_revision, (revision, next(_tokens), event))
        await event.wait()

    def ranks_of(self, record: rules.Record) -> Mapping[str, int]:
        """The ranks of ``record``'s participants, made once for all the nodes that
        hold the round."""
        if self._infos is None or self._infos[0] is not record:
            ranks = {name: rank for rank, name in enumerate(record.participants)}
            self._infos = (record, ranks, MappingProxyType({}))
        return self._infos[1]

    async def payloads_of(self, record: rules.Record, nodes_prefix: str) -> Mapping[str, bytes]:
        """The read-only payloads of ``record``'s participants: empty ones with no read,
        else one read of the nodes' keys for all the nodes of this view that hold the
        round. A participant whose lease ended before the read has an empty payload.

        :raises StoreError: if the read fails
        """
        if not record.payloads:
            return MappingProxyType(dict.fromkeys(record.participants, b""))
        while True:
            known = self._payloads.get(record.round)
            if known is None:
                break
            if isinstance(known, anyio.Event):
                await known.wait()
                continue
            return known
        reading = self._payloads[record.round] = anyio.Event()
        try:
            kvs, _ = await self._store.get_prefix_kv(nodes_prefix)
        except BaseException:
            del self._payloads[record.round]
            reading.set()
            raise
        found: dict[str, bytes] = dict.fromkeys(record.participants, b"")
        for kv in kvs:
            name = kv.key[len(nodes_prefix) :]
            if name in found:
                try:
                    found[name] = rules.decode_member(kv.value).payload
                except ValueError as exc:
                    logger.warning("run %r: node %r's key: %s", self._run_id, name, exc)
        payloads = self._payloads[record.round] = MappingProxyType(found)
        for old in [round for round in self._payloads if round < record.round]:
            del self._payloads[old]
        reading.set()
        return payloads

    # -- the watch ---------------------------------------------------------------------

    def _apply(self, key: str, value: bytes | None, revision: int) -> None:
        """Apply a put (``value``) or a delete (``None``) of control key ``key``, at
        ``revision``."""
        name = key[len(self._prefix) :]
        self.errors.pop(key, None)
        try:
            if name == rules.STATE:
                self.state = None if value is None else (rules.decode_state(value), revision)
            elif name == rules.RECORD:
                self.record = None if value is None else rules.decode_record(value)
            elif name == rules.COORDINATOR:
                self.coordinator = None if value is None else rules.decode_coordinator(value)
            else:
                logger.warning(
                    "run %r: skipping key %s, which no node writes", self._run_id, echo(key)
                )
                return
        except ValueError as exc:
            logger.warning(
                "run %r: key %s holds a malformed value: %s", self._run_id, echo(key), exc
            )
            if isinstance(exc, rules.OtherLayout):
                self.errors[key] = str(exc)
            else:
                self.errors[key] = f"key {echo(key)} holds a malformed value ({exc}): {echo(value)}"

    def poke(self) -> None:
        """Wake every node that waits for a change, as if the control keys had changed."""
        self._changed()

    def _changed(self) -> None:
        state = self.state
        if state is not None:
            self.next_round = max(self.next_round, state[0].round + 1)
        self._changes.bump()
        self._release()

    def _release(self) -> None:
        """Wake the nodes that wait for a revision the view has reached."""
        waiters = self._at_revision
        while waiters and waiters[0][0] <= self.revision:
            heapq.heappop(waiters)[2].set()

    async def _snapshot(self) -> int:
        kvs, revision = await self._store.get_prefix_kv(self._control)
        self.state = self.record = self.coordinator = None
        self.errors.clear()
        for kv in kvs:
            self._apply(kv.key, kv.value, kv.mod_revision)
        self.revision = revision
        self._changed()  # anything may have changed while no watch ran
        return revision

    async def _watch(
        self, token: int, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await self.read()
            started = False

            def opened() -> None:
                # The watch is confirmed: a node enters only then, so that a store that
                # refuses the watch fails the entry, not the block after it.
                nonlocal started
                if not started:
                    started = True
                    task_status.started()

            await self._follow(opened)
        finally:
            if self._watcher == token:
                self._watcher = None
            # The node's task group is closing (or failed): it hosts nothing more.
            self._hosts.pop(token, None)
            self._hand_over()

    async def _follow(self, opened: Callable[[], None]) -> None:
        changes = follow(
            self._store,
            self._control,
            start_revision=self.revision + 1,
            what=f"run {self._run_id!r}",
            resync=self._resync,
            log=logger,
            on_open=opened,
        )
        async with aclosing(changes) as events:
            async for event in events:
                if isinstance(event, Resynced):
                    continue  # the view is the read's, and every waiting node looks again
                self.revision = max(self.revision, event.revision)
                value = event.value if event.type is EventType.PUT else None
                self._apply(event.key, value, event.revision)
                self._changed()

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
