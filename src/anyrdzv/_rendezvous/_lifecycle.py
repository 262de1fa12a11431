"""RunEntry: one node's stay in its run, from entering to leaving.

Entering, a node takes its run's shared :class:`~._run_view.RunView` (one watch of the
control keys for the nodes of this thread on one store), reads them, claims its name
with its heartbeat's put, offers its task group to host the watch, drops the state of a
stale run that no other live node holds, and stands for the coordinator's office.
Leaving, it withdraws its task group, revokes its lease and lets go of the view; the last
node of the run deletes the run's keys if no node is left anywhere (else they expire
with the run lease, once no node is left to keep it).
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.abc

from .._core._groups import HostedTaskGroup
from .._exceptions import StoreError
from .._stores._model import Lease
from .._stores._txn import Compare, Delete
from . import _run_view
from ._rules import decode_state

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from types import TracebackType

    from .._membership._heartbeat import MemberLease
    from .._stores._protocol import LeaseStore
    from ._claim import Claim
    from ._rules import NodeKeys, RunState

logger = logging.getLogger(__name__)


@final
class RunEntry:
    """Node ``keys.node`` of run ``run_id`` in its run, for the span of an ``async with``
    block; it can be entered again once it has left.

    :param store: the store
    :param run_id: the run
    :param keys: the node's keys
    :param lease: the node's heartbeat, whose put is ``claim``
    :param claim: the put of the node's heartbeat key
    :param stand: the node's candidacy for the coordinator's office, run in its task
        group while it is in the run
    :param close_timeout: how long the last node's clean-up may take, in seconds
    """

    def __init__(
        self,
        store: LeaseStore,
        run_id: str,
        keys: NodeKeys,
        lease: MemberLease,
        claim: Claim,
        stand: Callable[[_run_view.RunView], Coroutine[Any, Any, None]],
        *,
        close_timeout: float,
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._keys = keys
        self._lease = lease
        self._claim = claim
        self._stand = stand
        self._close_timeout = close_timeout
        self._run: _run_view.RunView | None = None  # while in the run
        self._host_token: int | None = None  # this node's, as a host of the watch
        self._task_group: anyio.abc.TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self._entering = False
        self._what = f"Rendezvous of node {keys.node!r} of run {run_id!r}"

    @property
    def run(self) -> _run_view.RunView:
        """The run's shared view, while the node is in the run.

        :raises RuntimeError: if it is not
        """
        run = self._run
        if run is None:
            raise RuntimeError("use the Rendezvous in `async with` first")
        return run

    async def __aenter__(self) -> _run_view.RunView:
        if self._stack is not None or self._entering:
            raise RuntimeError(
                f"this Rendezvous of node {self._keys.node!r} of run {self._run_id!r} is "
                "already entered; make one Rendezvous per async with block"
            )
        self._entering = True
        try:
            return await self._enter()
        finally:
            self._entering = False

    async def _enter(self) -> _run_view.RunView:
        async with AsyncExitStack() as stack:
            run = _run_view.acquire(self._store, self._run_id, self._keys.run)
            # Exits run in reverse: the node's task group closes, its lease is revoked,
            # and then it lets go of the shared view, cleaning up if it was the last.
            stack.push_async_callback(self._leave, run)
            # Read before the heartbeat's grant, so as not to queue behind other nodes'.
            await run.read()
            self._claim.batcher = run.batcher
            await stack.enter_async_context(self._lease)
            task_group = await stack.enter_async_context(HostedTaskGroup(self._what))
            token = await run.attach(task_group)
            stack.callback(run.detach, token)
            self._run, self._host_token = run, token
            await self._reset_if_stale(run)
            task_group.start_soon(self._stand, run, name=f"candidacy of node {self._keys.node!r}")
            self._task_group = task_group
            self._stack = stack.pop_all()
        logger.debug("node %r entered run %r", self._keys.node, self._run_id)
        return run

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        stack, task_group = self._stack, self._task_group
        if stack is None or task_group is None:
            raise RuntimeError("Rendezvous.__aexit__ without a matching __aenter__")
        self._stack = self._task_group = None
        # Withdrawn before the cancel: a watch this node hosts moves to another node.
        if self._run is not None and self._host_token is not None:
            self._run.detach(self._host_token)
        # The task group cancels its tasks and raises what failed as itself, as does the
        # heartbeat's (see close_task_group).
        return await stack.__aexit__(exc_type, exc_value, traceback)

    async def _leave(self, run: _run_view.RunView) -> None:
        """Let go of the shared view once the lease is revoked; the last node of the run
        in this thread then deletes the run's keys if no node is left anywhere."""
        self._run = self._host_token = None
        if run.release():
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._close_timeout):
                await self._clean_up()

    async def _reset_if_stale(self, run: _run_view.RunView) -> None:
        """Drop a state that no other live node holds: its run ended without cleaning up
        (its last node was killed), and a rerun starts afresh. The adapters' subtree
        goes with it."""
        current = run.state
        if current is None or run.coordinator is not None:
            return
        try:
            if await self._store.count_prefix(self._keys.nodes) > 1:
                return
            revision = await self._drop(current)
        except StoreError as exc:
            logger.warning("run %r: could not drop a stale state: %s", self._run_id, exc)
            return
        if revision is not None:
            logger.debug("run %r: dropped the state of a run no node holds", self._run_id)
            await run.until_revision(revision)

    async def _drop(self, current: tuple[RunState | None, int]) -> int | None:
        """Delete the run's state, record and adapters' subtree if the state is still
        ``current`` (``(None, 0)``: still absent), and revoke its run lease; return the
        revision of the delete, or ``None`` if the state had changed."""
        keys = self._keys
        state, revision = current
        result = await self._store.txn(
            [Compare.mod_revision(keys.state, "==", revision)],
            [Delete(keys.state), Delete(keys.record), Delete(keys.data, prefix=True)],
        )
        if not result.succeeded:
            return None
        if state is not None and state.lease is not None:
            await self._store.revoke(Lease(state.lease, 1))
        return result.revision

    async def _clean_up(self) -> None:
        """Delete the run's keys if no node of the run is left: the rest of its keys
        live under the nodes' leases."""
        try:
            if await self._store.count_prefix(self._keys.nodes):
                return
            kv = await self._store.get(self._keys.state)
            try:
                state = None if kv is None else decode_state(kv.value)
            except ValueError:
                state = None  # another layout's, or malformed: deleted all the same
            await self._drop((state, 0 if kv is None else kv.mod_revision))
            logger.debug(
                "node %r was the last of run %r: deleted its keys", self._keys.node, self._run_id
            )
        except StoreError as exc:
            logger.warning("could not delete the state of run %r: %s", self._run_id, exc)
