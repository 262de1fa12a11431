"""Rendezvous: torchrun's elastic rendezvous, event-driven, on a LeaseStore."""

from __future__ import annotations

import itertools
import logging
import math
import os
import socket
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, final

import anyio
import anyio.abc
import anyio.lowlevel

from .._checks import check_int, check_seconds, echo, type_name
from .._core._config import parse_rendezvous_config
from .._core._delay import backoff, delay
from .._exceptions import (
    LeaseExpired,
    RendezvousClosed,
    RendezvousError,
    RendezvousTimeout,
    StoreConnectionError,
    StoreError,
)
from .._membership._heartbeat import MIN_INTERVAL, Heartbeat
from .._membership._keys import DEFAULT_PREFIX, check_name, check_prefix
from .._stores._protocol import LeaseStore, check_store
from .._stores._txn import Compare, Delete, Get, GetResult, Put
from . import _rules as rules
from . import _run_view

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
    from types import TracebackType

    from .._stores._model import CasResult, KeyValue, Lease
    from .._stores._protocol import WatchStream
    from .._stores._txn import TxnOp, TxnResult
    from ._write_batch import WriteBatcher

logger = logging.getLogger(__name__)

#: What :meth:`Rendezvous.changes` yields.
Change = Literal["waiting", "lost", "new_round", "closed"]

_local_ids = itertools.count()

#: torch's defaults for the keys of ``--rdzv-conf`` that :meth:`Rendezvous.from_conf` reads.
_CONF_DEFAULTS: dict[str, float] = {
    "join_timeout": 600.0,
    "last_call_timeout": 30.0,
    "close_timeout": 30.0,
    "keep_alive_interval": 5.0,
    "keep_alive_max_attempt": 3,
}


@dataclass(frozen=True)
class RendezvousInfo:
    """One node's place in a completed round.

    :ivar run_id: the run
    :ivar round: the round, from 0
    :ivar rank: this node's rank, ``0 … world_size - 1``, in sorted order of node name
    :ivar world_size: how many nodes are in the round
    :ivar participants: the node names, in rank order
    :ivar payloads: each participant's payload, read-only
    """

    run_id: str
    round: int
    rank: int
    world_size: int
    participants: tuple[str, ...]
    payloads: Mapping[str, bytes]


def _default_node() -> str:
    host = socket.gethostname().replace("/", "_") or "localhost"
    return f"{host}_{os.getpid()}_{next(_local_ids)}"


#: How many times a node tries to claim its name when the store fails mid-request.
_CLAIM_TRIES = 3


@final
class _ClaimingStore:
    """The store as a node's :class:`Heartbeat` sees it: the heartbeat's put of the
    node's key is a put-if-absent, so that a second live node with the same name is
    refused, and the first one's key and lease are left alone.

    Everything else goes to the store as it is.
    """

    def __init__(self, store: LeaseStore, key: str, run_id: str, node: str) -> None:
        self._store = store
        self._key = key
        self._run_id = run_id
        self._node = node
        #: the revision at which the node's key was put, once it is
        self.revision = 0
        #: the batcher the put goes through, if any
        self.batcher: WriteBatcher | None = None

    def _taken(self, holder: int | None) -> RendezvousError:
        lease = "no lease" if holder is None else f"lease {holder}"
        return RendezvousError(
            f"node {self._node!r} of run {self._run_id!r} is taken: a live node holds "
            f"its key {self._key!r} ({lease}); node names must be unique per run"
        )

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        if key != self._key or lease is None:
            return await self._store.put(key, value, lease=lease)
        if self.batcher is not None:
            revision = await self.batcher.put(Put(key, value, lease=lease), absent=True)
            if revision is not None:
                self.revision = revision
                return revision
        for attempt in range(1, _CLAIM_TRIES + 1):
            try:
                result = await self._store.txn(
                    [Compare.create_revision(key, "==", 0)],
                    [Put(key, value, lease=lease)],
                    [Get(key)],
                )
            except StoreConnectionError:
                # The txn is not retried by the store: see whether it went through.
                if attempt == _CLAIM_TRIES:
                    raise
                kv = await self._store.get(key)
                if kv is None:
                    continue
                if kv.lease != lease.id:
                    raise self._taken(kv.lease) from None
                self.revision = kv.mod_revision
                return kv.mod_revision
            if result.succeeded:
                self.revision = result.revision
                return result.revision
            found = result.results[0]
            kv = found.kvs[0] if isinstance(found, GetResult) and found.kvs else None
            if kv is not None and kv.lease == lease.id:
                # A batch with this put went through, though its sender was cancelled.
                self.revision = kv.mod_revision
                return kv.mod_revision
            raise self._taken(None if kv is None else kv.lease)
        raise AssertionError("unreachable")  # pragma: no cover

    async def grant(self, ttl: int) -> Lease:
        return await self._store.grant(ttl)

    async def keep_alive(self, lease: Lease) -> int:
        return await self._store.keep_alive(lease)

    async def revoke(self, lease: Lease) -> None:
        await self._store.revoke(lease)

    async def get_prefix(self, prefix: str) -> tuple[dict[str, bytes], int]:
        return await self._store.get_prefix(prefix)

    def watch_prefix(
        self,
        prefix: str,
        *,
        start_revision: int,
        on_open: Callable[[], object] | None = None,
    ) -> WatchStream:
        return self._store.watch_prefix(prefix, start_revision=start_revision, on_open=on_open)

    async def get(self, key: str) -> KeyValue | None:
        return await self._store.get(key)

    async def get_prefix_kv(self, prefix: str) -> tuple[list[KeyValue], int]:
        return await self._store.get_prefix_kv(prefix)

    async def delete(self, key: str) -> bool:
        return await self._store.delete(key)

    async def delete_prefix(self, prefix: str) -> int:
        return await self._store.delete_prefix(prefix)

    async def compare_and_swap(
        self,
        key: str,
        value: bytes,
        *,
        expected_mod_revision: int,
        lease: Lease | None = None,
    ) -> CasResult:
        return await self._store.compare_and_swap(
            key, value, expected_mod_revision=expected_mod_revision, lease=lease
        )

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        return await self._store.txn(compare, success, failure)


@final
class Rendezvous:
    """An elastic rendezvous of the nodes of a run, with torchrun's semantics.

    ::

        async with Rendezvous(store, "job42", min_nodes=2, max_nodes=4) as rdzv:
            info = await rdzv.next_rendezvous()

    A round completes when ``max_nodes`` have joined, or when at least ``min_nodes``
    have and ``last_call_timeout`` has passed since they reached ``min_nodes``; in a
    round after the first, also as soon as every live node of the last round and every
    waiting node have joined, if they are at least ``min_nodes`` (D6). Ranks follow the
    sorted node names. A node that comes after its round completed waits for the next.

    Each node keeps a lease (:class:`Heartbeat`, TTL ``keep_alive_interval ×
    keep_alive_max_attempt``); it decides from what a watch of the run's keys showed, and
    writes the shared state only by compare-and-swap. The nodes of a run on one store
    object in one thread share that watch and its decoded view, so a thousand nodes in
    one process cost one watch, not a thousand. When the last node leaves, the run's keys
    are deleted, the adapters' subtree :attr:`data_prefix` with them.

    A node entering with the name of a live node of the run is refused with a
    :class:`RendezvousError`; the live node is left alone. The name of a node whose
    lease has expired is free again.

    :param store: the store
    :param run_id: the run; non-empty, no ``/``
    :param node: this node's name, unique among the run's live nodes; by default one
        unique to this process and this object
    :param min_nodes: the fewest nodes of a round, at least 1
    :param max_nodes: the most nodes of a round, at least ``min_nodes``
    :param join_timeout: how long :meth:`next_rendezvous` may wait, in seconds
    :param last_call_timeout: how long a round waits for more nodes once it has
        ``min_nodes``, in seconds
    :param close_timeout: how long :meth:`set_closed` may take, in seconds
    :param keep_alive_interval: seconds between lease renewals, at least 0.1
    :param keep_alive_max_attempt: how many missed renewals make a node dead
    :param payload: this node's payload, given to every participant of its rounds
    :param prefix: the key prefix of all runs
    :raises TypeError: if an argument has the wrong type
    :raises ValueError: if an argument is out of range

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        store: LeaseStore,
        run_id: str,
        *,
        node: str | None = None,
        min_nodes: int,
        max_nodes: int,
        join_timeout: float = 600,
        last_call_timeout: float = 30,
        close_timeout: float = 30,
        keep_alive_interval: float = 5,
        keep_alive_max_attempt: int = 3,
        payload: bytes = b"",
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self._store = check_store(store)
        missing = [
            name
            for name in ("get", "get_prefix_kv", "compare_and_swap", "txn")
            if not callable(getattr(store, name, None))
        ]
        if missing:
            raise TypeError(f"store must be a LeaseStore, got {type_name(store)} without {missing}")
        self.run_id: str = check_name("run_id", run_id)
        self.node: str = _default_node() if node is None else check_name("node", node)
        self.min_nodes: int = check_int("min_nodes", min_nodes, least=1)
        self.max_nodes: int = check_int("max_nodes", max_nodes, least=1)
        if self.min_nodes > self.max_nodes:
            raise ValueError(
                f"min_nodes must be at most max_nodes, got min_nodes={min_nodes} "
                f"and max_nodes={max_nodes}"
            )
        self.join_timeout: float = check_seconds("join_timeout", join_timeout)
        self.last_call_timeout: float = check_seconds("last_call_timeout", last_call_timeout)
        self.close_timeout: float = check_seconds("close_timeout", close_timeout)
        self.keep_alive_interval: float = check_seconds("keep_alive_interval", keep_alive_interval)
        if self.keep_alive_interval < MIN_INTERVAL:
            raise ValueError(
                f"keep_alive_interval must be at least {MIN_INTERVAL} s, "
                f"got {echo(keep_alive_interval)}"
            )
        self.keep_alive_max_attempt: int = check_int(
            "keep_alive_max_attempt", keep_alive_max_attempt, least=1
        )
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, got {type_name(payload)} {echo(payload)}")
        self._payload = payload
        self._run_prefix = f"{check_prefix(prefix)}/{self.run_id}/"
        self._state_key = self._run_prefix + rules.STATE
        self._join_key = self._run_prefix + rules.JOIN + self.node
        member = rules.Member(self.min_nodes, self.max_nodes, payload)
        self._claim = _ClaimingStore(
            store, self._run_prefix + rules.MEMBERS + self.node, self.run_id, self.node
        )
        self._heartbeat = Heartbeat(
            self._claim,
            self.run_id,
            self.node,
            interval=self.keep_alive_interval,
            max_missed=self.keep_alive_max_attempt,
            payload=rules.encode_member(member),
            prefix=prefix,
        )
        self._shared: _run_view.RunView | None = None  # while entered
        self._host_token: int | None = None  # this node's, as a host of the watch
        self._handed_out: int | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._stack: AsyncExitStack | None = None

    @property
    def data_prefix(self) -> str:
        """The run's subtree reserved for adapters, ``<prefix>/<run_id>/store/``.

        The rendezvous never reads its keys, and deletes them with the run's state when
        the run's last node leaves (or when a stale run is reset): an adapter such as
        the torchrun backend keeps its own keys there and need not clean them up.

        .. versionadded:: 0.2
        """
        return self._run_prefix + rules.DATA

    @property
    def _run(self) -> _run_view.RunView:
        shared = self._shared
        if shared is None:
            raise RuntimeError("use the Rendezvous in `async with` first")
        return shared

    @property
    def _view(self) -> rules.View:
        """The run's keys as the shared watch saw them."""
        return self._run.view

    @property
    def _errors(self) -> dict[str, str]:
        """For each key of the run whose value is malformed, why."""
        return self._run.errors

    @classmethod
    def from_conf(
        cls,
        store: LeaseStore,
        run_id: str,
        conf: str | Mapping[str, str],
        *,
        min_nodes: int,
        max_nodes: int,
        node: str | None = None,
    ) -> Rendezvous:
        """Make a rendezvous from a torchrun ``--rdzv-conf`` string, or a mapping of strings.

        It reads ``join_timeout`` (600), ``last_call_timeout`` (30), ``close_timeout``
        (30), ``keep_alive_interval`` (5) and ``keep_alive_max_attempt`` (3), with
        torch's defaults, and ignores other keys, as torch does.

        :raises ValueError: if the string does not parse, or a value is bad; the
            message names the key
        """
        options = parse_rendezvous_config(conf) if isinstance(conf, str) else dict(conf)
        values: dict[str, float] = dict(_CONF_DEFAULTS)
        for key in _CONF_DEFAULTS:
            text = options.get(key)
            if text is None:
                continue
            if not isinstance(text, str):
                raise TypeError(f"the value of {key!r} must be a str, got {type_name(text)}")
            try:
                number: float = int(text) if key == "keep_alive_max_attempt" else float(text)
            except ValueError:
                kind = "integer" if key == "keep_alive_max_attempt" else "numeric"
                raise ValueError(
                    f"The rendezvous configuration option '{key}' does not represent a valid "
                    f"{kind} value: {echo(text)}"
                ) from None
            if not (math.isfinite(number) and number > 0):
                raise ValueError(
                    f"The rendezvous configuration option '{key}' must be positive, "
                    f"got {echo(text)}"
                )
            values[key] = number
        return cls(
            store,
            run_id,
            node=node,
            min_nodes=min_nodes,
            max_nodes=max_nodes,
            join_timeout=values["join_timeout"],
            last_call_timeout=values["last_call_timeout"],
            close_timeout=values["close_timeout"],
            keep_alive_interval=values["keep_alive_interval"],
            keep_alive_max_attempt=int(values["keep_alive_max_attempt"]),
        )

    # -- lifetime ----------------------------------------------------------------------

    async def __aenter__(self) -> Rendezvous:
        if self._stack is not None:
            raise RuntimeError("this Rendezvous is already entered")
        async with AsyncExitStack() as stack:
            shared = _run_view.acquire(self._store, self.run_id, self._run_prefix)
            # Exits run in reverse: the node's task group closes, its lease is revoked,
            # and then it lets go of the shared view, cleaning up if it was the last.
            stack.push_async_callback(self._leave_run, shared)
            # Read before the heartbeat's grant, so as not to queue behind other nodes'.
            await shared.read()
            self._claim.batcher = shared.batcher
            await stack.enter_async_context(self._heartbeat)
            task_group = await stack.enter_async_context(anyio.create_task_group())
            token = await shared.attach(task_group)
            stack.callback(shared.detach, token)
            self._shared, self._host_token = shared, token
            await shared.until_revision(self._claim.revision)
            await self._reset_if_stale()
            self._task_group = task_group
            self._stack = stack.pop_all()
        logger.debug("node %r entered run %r", self.node, self.run_id)
        return self

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
        if self._shared is not None and self._host_token is not None:
            self._shared.detach(self._host_token)
        task_group.cancel_scope.cancel()
        return await stack.__aexit__(exc_type, exc_value, traceback)

    async def _leave_run(self, shared: _run_view.RunView) -> None:
        """Let go of the shared view once the lease is revoked; the last node of the run
        in this thread then deletes the run's keys if no node is left anywhere."""
        self._shared = self._host_token = None
        self._handed_out = None
        if shared.release():
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.close_timeout):
                await self._clean_up()

    async def _reset_if_stale(self) -> None:
        """Drop a state that no live node holds: its run ended without cleaning up (its
        last node was killed), and a rerun starts afresh. The adapters' subtree goes
        with it."""
        view = self._run.view
        current = view.state
        if current is None or len(view.members) > (self.node in view.members):
            return
        try:
            result = await self._store.txn(
                [Compare.mod_revision(self._state_key, "==", current[1])],
                [Delete(self._state_key), Delete(self.data_prefix, prefix=True)],
            )
        except StoreError as exc:
            logger.warning("run %r: could not drop a stale state: %s", self.run_id, exc)
            return
        if result.succeeded:
            logger.debug("run %r: dropped the state of a run no node holds", self.run_id)
            await self._run.until_revision(result.revision)

    async def _clean_up(self) -> None:
        """Delete the run's state and the adapters' subtree, in one txn, if no node of
        the run is left: the rest of its keys live under the nodes' leases."""
        try:
            members, _ = await self._store.get_prefix_kv(self._run_prefix + rules.MEMBERS)
            if members:
                return
            state = await self._store.get(self._state_key)
            result = await self._store.txn(
                [
                    Compare.mod_revision(
                        self._state_key, "==", 0 if state is None else state.mod_revision
                    )
                ],
                [Delete(self._state_key), Delete(self.data_prefix, prefix=True)],
            )
            if result.succeeded:
                logger.debug(
                    "node %r was the last of run %r: deleted its keys", self.node, self.run_id
                )
        except StoreError as exc:
            logger.warning("could not delete the state of run %r: %s", self.run_id, exc)

    # -- the watched view --------------------------------------------------------------

    def _check_errors(self) -> None:
        errors = self._run.errors
        if errors:
            raise RendezvousError(f"run {self.run_id!r}: " + "; ".join(errors.values()))

    def _check_entered(self) -> None:
        if self._task_group is None:
            raise RuntimeError("use the Rendezvous in `async with` first")

    # -- the rendezvous ----------------------------------------------------------------

    def _info(self, state: rules.RunState) -> RendezvousInfo:
        ranks, payloads = self._run.info_of(state)
        return RendezvousInfo(
            self.run_id,
            state.round,
            ranks[self.node],
            len(state.participants),
            state.participants,
            payloads,
        )

    async def next_rendezvous(self) -> RendezvousInfo:
        """Join the next round, and wait until it completes.

        A node still in a complete round asks for a new one; a node that comes after
        its round completed waits for the next.

        :raises RendezvousClosed: if the run is closed, or is closed meanwhile
        :raises RendezvousTimeout: if no round takes this node in ``join_timeout``
        :raises RendezvousError: if the run's state is malformed, or its nodes disagree
            on ``min_nodes`` or ``max_nodes``
        """
        self._check_entered()
        await anyio.lowlevel.checkpoint()
        try:
            with anyio.fail_after(self.join_timeout):
                info = await self._next()
        except TimeoutError:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                try:
                    await self._store.delete(self._join_key)
                except StoreError as exc:
                    logger.warning("node %r could not withdraw its join: %s", self.node, exc)
            raise RendezvousTimeout(
                f"node {self.node!r} of run {self.run_id!r}: no round completed with it "
                f"within join_timeout={self.join_timeout:g} s"
            ) from None
        self._handed_out = info.round
        logger.debug(
            "node %r holds rank %d of %d in round %d of run %r",
            self.node,
            info.rank,
            info.world_size,
            info.round,
            self.run_id,
        )
        return info

    async def _next(self) -> RendezvousInfo:
        retry: Iterator[float] | None = None
        shared = self._run
        while True:
            self._check_errors()
            version = shared.version
            min_reached = shared.min_reached
            view = shared.view
            if view.state is not None and not view.state[0].complete:
                # Another node of this process swaps the open round (it completes it,
                # most likely): every node would decide the same, at a cost that grows
                # with the round; wait for the outcome instead. Not in a complete round:
                # a participant may still be owed it.
                pending = shared.swaps.get(view.state[1])
                if pending is not None:
                    await pending.wait()
                    continue
            try:
                action = rules.decide(
                    view,
                    self.node,
                    min_nodes=self.min_nodes,
                    max_nodes=self.max_nodes,
                    handed_out=self._handed_out,
                    min_reached_at=None
                    if min_reached is None
                    or view.state is None
                    or min_reached[0] != view.state[0].round
                    else min_reached[1],
                    last_call_timeout=self.last_call_timeout,
                    now=anyio.current_time(),
                )
            except ValueError as exc:
                raise RendezvousError(f"run {self.run_id!r}: {exc}") from None
            try:
                done = await self._act(action, version)
            except StoreConnectionError as exc:
                retry = retry or backoff(0.05, 2.0)
                pause = next(retry)
                logger.warning(
                    "node %r of run %r: the store failed (%s); retrying in %.2f s",
                    self.node,
                    self.run_id,
                    exc,
                    pause,
                )
                await delay(pause)
                continue
            except LeaseExpired as exc:
                raise RendezvousError(
                    f"node {self.node!r} of run {self.run_id!r}: its lease is gone"
                ) from exc
            retry = None
            if done is not None:
                return done

    async def _act(self, action: rules.Action, version: int) -> RendezvousInfo | None:
        """Carry out ``action``; return the info, once it is done."""
        if isinstance(action, rules.Done):
            return self._info(action.state)
        if isinstance(action, rules.Closed):
            raise RendezvousClosed(f"run {self.run_id!r} is closed")
        shared = self._run
        if isinstance(action, rules.Wait):
            await shared.until_changed(version, action.until)
            return None
        if isinstance(action, rules.Join):
            value, lease = rules.encode_join(action.round), self._heartbeat.lease
            joined = await shared.batcher.put(Put(self._join_key, value, lease=lease))
            revision = (
                await self._store.put(self._join_key, value, lease=lease)
                if joined is None
                else joined
            )
            logger.debug("node %r joins round %d of run %r", self.node, action.round, self.run_id)
            await shared.until_revision(revision)
            return None
        if isinstance(action, rules.Create):
            new, expected, why = action.state, 0, "the run starts"
        else:
            new, expected, why = action.state, action.expected, action.why
        # The nodes of this process decide alike from one view: one of them swaps, and
        # the others wait for the view to show the outcome, rather than all swapping
        # and all but one failing.
        pending = shared.swaps.get(expected)
        if pending is not None:
            await pending.wait()
            return None
        done = shared.swaps[expected] = anyio.Event()
        try:
            result = await self._store.compare_and_swap(
                self._state_key, rules.encode_state(new), expected_mod_revision=expected
            )
            if result.succeeded:
                assert result.kv is not None
                logger.debug("run %r: %s", self.run_id, why)
                await shared.until_revision(result.kv.mod_revision)
            elif result.kv is not None:
                await shared.until_revision(result.kv.mod_revision)
            else:
                await shared.until_changed(version)
        finally:
            if shared.swaps.get(expected) is done:
                del shared.swaps[expected]
            done.set()
        return None

    async def num_nodes_waiting(self) -> int:
        """How many nodes wait for the next round, while the live participants of the
        complete one are fewer than ``max_nodes``; from the watched state, without asking
        the store."""
        self._check_entered()
        await anyio.lowlevel.checkpoint()
        return self._run.view.waiting()

    async def is_closed(self) -> bool:
        """Whether the run is closed, from the watched state."""
        self._check_entered()
        await anyio.lowlevel.checkpoint()
        state = self._run.view.state
        return state is not None and state[0].closed

    async def set_closed(self) -> None:
        """Close the run: every node's pending and later :meth:`next_rendezvous` raises
        :class:`RendezvousClosed`.

        :raises RendezvousTimeout: if it takes longer than ``close_timeout``
        :raises RendezvousError: if the run's state is malformed
        """
        self._check_entered()
        await anyio.lowlevel.checkpoint()
        shared = self._run
        try:
            with anyio.fail_after(self.close_timeout):
                while True:
                    self._check_errors()
                    version = shared.version
                    current = shared.view.state
                    if current is not None and current[0].closed:
                        return
                    if current is None:
                        new = rules.RunState(0, False, True, self.min_nodes, self.max_nodes)
                        expected = 0
                    else:
                        state, expected = current
                        new = rules.RunState(
                            state.round,
                            state.complete,
                            True,
                            state.min_nodes,
                            state.max_nodes,
                            state.participants,
                            state.payloads,
                            state.previous,
                        )
                    result = await self._store.compare_and_swap(
                        self._state_key, rules.encode_state(new), expected_mod_revision=expected
                    )
                    if result.succeeded:
                        assert result.kv is not None
                        logger.debug("node %r closed run %r", self.node, self.run_id)
                        await shared.until_revision(result.kv.mod_revision)
                        return
                    await shared.until_changed(version)
        except TimeoutError:
            raise RendezvousTimeout(
                f"run {self.run_id!r} could not be closed within close_timeout="
                f"{self.close_timeout:g} s"
            ) from None

    async def changes(self) -> AsyncGenerator[Change, None]:
        """Yield, once each, the reasons to leave the round this node holds: ``"waiting"``
        (nodes wait to join), ``"lost"`` (a participant's lease is gone), ``"new_round"``
        (a participant asked for a new round) and ``"closed"``.

        Before the node holds a round, only ``"closed"`` is yielded. Close it with
        ``contextlib.aclosing`` if you stop early.
        """
        self._check_entered()
        shared = self._run
        seen: set[str] = set()
        held: int | None = None
        while True:
            version = shared.version
            if held != self._handed_out:
                held, seen = self._handed_out, set()
            for change in self._reasons(shared.view, held):
                if change not in seen:
                    seen.add(change)
                    yield change
            await shared.until_changed(version)

    def _reasons(self, view: rules.View, held: int | None) -> list[Change]:
        current = view.state
        if current is None:
            return []
        state = current[0]
        reasons: list[Change] = []
        if state.closed:
            reasons.append("closed")
        if held is None:
            return reasons
        if state.round > held:
            reasons.append("new_round")
        elif state.round == held:
            if any(name not in view.members for name in state.participants):
                reasons.append("lost")
            if view.waiting():
                reasons.append("waiting")
        return reasons
