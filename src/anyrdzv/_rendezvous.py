"""Rendezvous: torchrun's elastic rendezvous, event-driven, on a LeaseStore."""

from __future__ import annotations

import itertools
import logging
import math
import os
import socket
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, final

import anyio
import anyio.abc
import anyio.lowlevel

from . import _rendezvous_state as rules
from ._config import parse_rendezvous_config
from ._delay import backoff, delay
from ._exceptions import LeaseExpired, StoreCompacted, StoreConnectionError, StoreError
from ._heartbeat import MIN_INTERVAL, Heartbeat
from ._keys import DEFAULT_PREFIX, check_name, check_prefix
from ._store import EventType, LeaseStore, check_store
from ._txn import Compare, Delete
from ._util import echo, type_name

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterator, Mapping
    from types import TracebackType

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


class RendezvousError(Exception):
    """A rendezvous failed: the base class of :class:`RendezvousClosed` and
    :class:`RendezvousTimeout`, and what a malformed or disagreeing run raises."""


class RendezvousClosed(RendezvousError):
    """The run is closed: no new round will complete."""


class RendezvousTimeout(RendezvousError, TimeoutError):
    """A round did not complete, or the run could not be closed, in time."""


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


def _check_int(name: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type_name(value)} {echo(value)}")
    if value < least:
        raise ValueError(f"{name} must be at least {least}, got {echo(value)}")
    return value


def _check_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type_name(value)} {echo(value)}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {echo(value)}")
    return float(value)


def _default_node() -> str:
    host = socket.gethostname().replace("/", "_") or "localhost"
    return f"{host}_{os.getpid()}_{next(_local_ids)}"


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
    keep_alive_max_attempt``) and one watch on the run's keys; it decides from what the
    watch showed, and writes the shared state only by compare-and-swap. When the last
    node leaves, the run's keys are deleted.

    :param store: the store
    :param run_id: the run; non-empty, no ``/``
    :param node: this node's name, unique in the run; by default one unique to this
        process and this object
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
        self.min_nodes: int = _check_int("min_nodes", min_nodes, 1)
        self.max_nodes: int = _check_int("max_nodes", max_nodes, 1)
        if self.min_nodes > self.max_nodes:
            raise ValueError(
                f"min_nodes must be at most max_nodes, got min_nodes={min_nodes} "
                f"and max_nodes={max_nodes}"
            )
        self.join_timeout: float = _check_seconds("join_timeout", join_timeout)
        self.last_call_timeout: float = _check_seconds("last_call_timeout", last_call_timeout)
        self.close_timeout: float = _check_seconds("close_timeout", close_timeout)
        self.keep_alive_interval: float = _check_seconds("keep_alive_interval", keep_alive_interval)
        if self.keep_alive_interval < MIN_INTERVAL:
            raise ValueError(
                f"keep_alive_interval must be at least {MIN_INTERVAL} s, "
                f"got {echo(keep_alive_interval)}"
            )
        self.keep_alive_max_attempt: int = _check_int(
            "keep_alive_max_attempt", keep_alive_max_attempt, 1
        )
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, got {type_name(payload)} {echo(payload)}")
        self._payload = payload
        self._run_prefix = f"{check_prefix(prefix)}/{self.run_id}/"
        self._state_key = self._run_prefix + rules.STATE
        self._join_key = self._run_prefix + rules.JOIN + self.node
        member = rules.Member(self.min_nodes, self.max_nodes, payload)
        self._heartbeat = Heartbeat(
            store,
            self.run_id,
            self.node,
            interval=self.keep_alive_interval,
            max_missed=self.keep_alive_max_attempt,
            payload=rules.encode_member(member),
            prefix=prefix,
        )
        self._view = rules.View(None, {}, {})
        self._errors: dict[str, str] = {}  # key -> why its value is malformed
        self._revision = 0  # of the last event the view holds
        self._version = 0  # bumped on every change of the view
        self._changed = anyio.Event()
        self._min_reached: tuple[int, float] | None = None  # (round, local time)
        self._handed_out: int | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._stack: AsyncExitStack | None = None

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
            await stack.enter_async_context(self._heartbeat)
            task_group = await stack.enter_async_context(anyio.create_task_group())
            await task_group.start(self._watch)
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
        task_group.cancel_scope.cancel()
        try:
            return await stack.__aexit__(exc_type, exc_value, traceback)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.close_timeout):
                await self._clean_up()
            self._handed_out = None

    async def _reset_if_stale(self) -> None:
        """Drop a state that no live node holds: its run ended without cleaning up (its
        last node was killed), and a rerun starts afresh."""
        current = self._view.state
        if current is None or set(self._view.members) - {self.node}:
            return
        try:
            result = await self._store.txn(
                [Compare.mod_revision(self._state_key, "==", current[1])],
                [Delete(self._state_key)],
            )
        except StoreError as exc:
            logger.warning("run %r: could not drop a stale state: %s", self.run_id, exc)
            return
        if result.succeeded:
            logger.debug("run %r: dropped the state of a run no node holds", self.run_id)
            await self._until_revision(result.revision)

    async def _clean_up(self) -> None:
        """Delete the run's state if this node was its last: the rest of its keys live
        under the nodes' leases."""
        try:
            members, _ = await self._store.get_prefix_kv(self._run_prefix + rules.MEMBERS)
            if members:
                return
            state = await self._store.get(self._state_key)
            if state is None:
                return
            result = await self._store.txn(
                [Compare.mod_revision(self._state_key, "==", state.mod_revision)],
                [Delete(self._state_key)],
            )
            if result.succeeded:
                logger.debug(
                    "node %r was the last of run %r: deleted its state", self.node, self.run_id
                )
        except StoreError as exc:
            logger.warning("could not delete the state of run %r: %s", self.run_id, exc)

    # -- the watched view --------------------------------------------------------------

    def _notify(self) -> None:
        self._version += 1
        self._changed.set()
        self._changed = anyio.Event()

    async def _snapshot(self) -> int:
        kvs, revision = await self._store.get_prefix_kv(self._run_prefix)
        self._view = rules.View(None, {}, {})
        self._errors.clear()
        for kv in kvs:
            self._apply(kv.key, kv.value, kv.mod_revision)
        self._revision = revision
        self._after_change()
        return revision

    def _apply(self, key: str, value: bytes | None, revision: int) -> None:
        """Apply a put (``value``) or a delete (``None``) of ``key`` to the view."""
        name = key[len(self._run_prefix) :]
        view = self._view
        self._errors.pop(key, None)
        # The view's dicts change in place: decide() reads it between two events only.
        try:
            if name == rules.STATE:
                state = None if value is None else (rules.decode_state(value), revision)
                view.state = state
            elif name.startswith(rules.MEMBERS) and "/" not in name[len(rules.MEMBERS) :]:
                member = None if value is None else rules.decode_member(value)
                view.set_member(name[len(rules.MEMBERS) :], member)
            elif name.startswith(rules.JOIN) and "/" not in name[len(rules.JOIN) :]:
                join = None if value is None else (rules.decode_join(value), revision)
                view.set_join(name[len(rules.JOIN) :], join)
            else:
                logger.warning(
                    "run %r: skipping key %s, which no node writes", self.run_id, echo(key)
                )
        except ValueError as exc:
            logger.warning(
                "run %r: key %s holds a malformed value: %s", self.run_id, echo(key), exc
            )
            self._errors[key] = f"key {echo(key)} holds a malformed value ({exc}): {echo(value)}"

    def _after_change(self) -> None:
        view = self._view
        if view.state is not None and not view.state[0].complete:
            state = view.state[0]
            if view.count_joined(state.round) >= state.min_nodes:
                if self._min_reached is None or self._min_reached[0] != state.round:
                    self._min_reached = (state.round, anyio.current_time())
            else:
                self._min_reached = None
        else:
            self._min_reached = None
        self._notify()

    async def _watch(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        revision = await self._snapshot()
        task_status.started()
        retry: Iterator[float] | None = None
        while True:
            try:
                stream = self._store.watch_prefix(self._run_prefix, start_revision=revision + 1)
                async with aclosing(stream) as events:
                    async for event in events:
                        retry = None
                        value = event.value if event.type is EventType.PUT else None
                        self._apply(event.key, value, event.revision)
                        revision = self._revision = max(self._revision, event.revision)
                        self._after_change()
                raise StoreConnectionError("the watch stream ended")
            except (StoreConnectionError, StoreCompacted) as exc:
                retry = retry or backoff(0.05, 2.0)
                pause = next(retry)
                logger.warning(
                    "run %r: the watch failed (%s); reading the run afresh in %.2f s",
                    self.run_id,
                    exc,
                    pause,
                )
                await delay(pause)
                try:
                    revision = await self._snapshot()
                except StoreError as error:
                    logger.warning("run %r: reading the run failed: %s", self.run_id, error)

    def _check_errors(self) -> None:
        if self._errors:
            raise RendezvousError(f"run {self.run_id!r}: " + "; ".join(self._errors.values()))

    async def _until_changed(self, version: int, until: float | None = None) -> None:
        """Wait until the view is past ``version``, or the local time ``until``."""
        while self._version <= version:
            changed = self._changed
            if until is None:
                await changed.wait()
            else:
                with anyio.move_on_after(until - anyio.current_time()):
                    await changed.wait()
                return

    async def _until_revision(self, revision: int) -> None:
        while self._revision < revision:
            await self._changed.wait()

    def _check_entered(self) -> None:
        if self._task_group is None:
            raise RuntimeError("use the Rendezvous in `async with` first")

    # -- the rendezvous ----------------------------------------------------------------

    def _info(self, state: rules.RunState) -> RendezvousInfo:
        return RendezvousInfo(
            self.run_id,
            state.round,
            state.participants.index(self.node),
            len(state.participants),
            state.participants,
            MappingProxyType(dict(state.payloads)),
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
        while True:
            self._check_errors()
            version = self._version
            min_reached = self._min_reached
            view = self._view
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
        if isinstance(action, rules.Wait):
            await self._until_changed(version, action.until)
            return None
        if isinstance(action, rules.Join):
            revision = await self._store.put(
                self._join_key, rules.encode_join(action.round), lease=self._heartbeat.lease
            )
            logger.debug("node %r joins round %d of run %r", self.node, action.round, self.run_id)
            await self._until_revision(revision)
            return None
        if isinstance(action, rules.Create):
            new, expected, why = action.state, 0, "the run starts"
        else:
            new, expected, why = action.state, action.expected, action.why
        result = await self._store.compare_and_swap(
            self._state_key, rules.encode_state(new), expected_mod_revision=expected
        )
        if result.succeeded:
            assert result.kv is not None
            logger.debug("run %r: %s", self.run_id, why)
            await self._until_revision(result.kv.mod_revision)
        else:
            await self._until_changed(version)
        return None

    async def num_nodes_waiting(self) -> int:
        """How many nodes wait for the next round, while the live participants of the
        complete one are fewer than ``max_nodes``; from the watched state, without asking
        the store."""
        self._check_entered()
        await anyio.lowlevel.checkpoint()
        return self._view.waiting()

    async def is_closed(self) -> bool:
        """Whether the run is closed, from the watched state."""
        self._check_entered()
        await anyio.lowlevel.checkpoint()
        state = self._view.state
        return state is not None and state[0].closed

    async def set_closed(self) -> None:
        """Close the run: every node's pending and later :meth:`next_rendezvous` raises
        :class:`RendezvousClosed`.

        :raises RendezvousTimeout: if it takes longer than ``close_timeout``
        :raises RendezvousError: if the run's state is malformed
        """
        self._check_entered()
        await anyio.lowlevel.checkpoint()
        try:
            with anyio.fail_after(self.close_timeout):
                while True:
                    self._check_errors()
                    version = self._version
                    current = self._view.state
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
                        await self._until_revision(result.kv.mod_revision)
                        return
                    await self._until_changed(version)
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
        seen: set[str] = set()
        held: int | None = None
        while True:
            version = self._version
            if held != self._handed_out:
                held, seen = self._handed_out, set()
            for change in self._reasons(held):
                if change not in seen:
                    seen.add(change)
                    yield change
            await self._until_changed(version)

    def _reasons(self, held: int | None) -> list[Change]:
        current = self._view.state
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
            if any(name not in self._view.members for name in state.participants):
                reasons.append("lost")
            if self._view.waiting():
                reasons.append("waiting")
        return reasons
