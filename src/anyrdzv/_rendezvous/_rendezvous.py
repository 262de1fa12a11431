"""Rendezvous: torchrun's elastic rendezvous, event-driven, on a LeaseStore.

The public facade: it checks its arguments, and translates the pieces' answers into the
public ones. A node's stay in its run is a :class:`~._lifecycle.RunEntry`, its rounds
are :class:`~._rounds.Rounds`, its heartbeat's put is its :class:`~._claim.Claim` of its
name, and what it decides follows the pure rules of :mod:`._rules`.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

import anyio
import anyio.lowlevel

from .._checks import check_bytes, check_int, check_seconds, echo, type_name
from .._exceptions import (
    HeartbeatLost,
    RendezvousError,
    RendezvousTimeout,
    StoreError,
)
from .._membership._heartbeat import MIN_INTERVAL, MemberLease, lease_ttl
from .._membership._keys import DEFAULT_PREFIX, check_name, check_prefix
from .._stores._protocol import LeaseStore, check_store
from . import _rules as rules
from ._claim import Claim
from ._conf import parse_conf
from ._coordinator import Coordinator, candidacy, run_lease_ttl
from ._events import emit
from ._health import HEALTH, HealthGate, load_health_check
from ._lifecycle import RunEntry
from ._ranks import RankOrder, check_rank_order, check_topology
from ._rounds import Rounds

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
    from types import TracebackType

    from ._rules import Change
    from ._run_view import RunView

logger = logging.getLogger(__name__)

_local_ids = itertools.count()

#: The most bytes one node's payload may hold: it is kept base64 in JSON in the node's
#: own key, which etcd takes up to 1.5 MiB.
MAX_PAYLOAD = 1024 * 1024
#: How long withdrawing a join may take, in seconds, when a call ends without a round.
WITHDRAW_TIMEOUT = 1.0
#: The default of ``health_check_timeout``, in seconds.
HEALTH_CHECK_TIMEOUT = 60.0


@dataclass(frozen=True)
class RendezvousInfo:
    """One node's place in a completed round.

    :ivar run_id: the run
    :ivar round: the round, from 0
    :ivar rank: this node's rank, ``0 … world_size - 1``, in the run's ``rank_order``
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


@final
class Rendezvous:
    """An elastic rendezvous of the nodes of a run, with torchrun's semantics.

    ::

        async with Rendezvous(store, "job42", min_nodes=2, max_nodes=4) as rdzv:
            info = await rdzv.next_rendezvous()

    A round completes when ``max_nodes`` have joined, or when at least ``min_nodes``
    have and ``last_call_timeout`` has passed since they reached ``min_nodes``; in a
    round after the first, also as soon as every live node of the last round and every
    waiting node have joined, if they are at least ``min_nodes`` (D6). Ranks follow
    ``rank_order`` (natural name order by default, D7) and the nodes' ``topology``
    labels. A node that comes after its round completed waits for the next; beyond
    ``max_nodes`` it is a hot spare, which takes a lost participant's place in the next
    round.

    Each node keeps a lease (:class:`Heartbeat`, TTL ``keep_alive_interval ×
    keep_alive_max_attempt``); it decides from what a watch of the run's keys showed, and
    writes the shared state only by compare-and-swap. The nodes of a run on one store
    object in one thread share that watch and its decoded view, so a thousand nodes in
    one process cost one watch, not a thousand. When the last node leaves, the run's keys
    are deleted, the adapters' subtree :attr:`data_prefix` with them.

    A node entering with the name of a live node of the run is refused with a
    :class:`RendezvousError`; the live node is left alone. The name of a node whose
    lease has expired is free again.

    Exceptions leave the ``async with`` block as themselves, so ``except
    RendezvousTimeout:`` around it works: one raised in the block leaves unchanged (a
    ``KeyboardInterrupt`` too), and a background failure that is the only error cancels
    the block and leaves as itself: :class:`HeartbeatLost` when this node's lease is
    gone (the same object :meth:`next_rendezvous` raises if it notices first), or the
    store's error if the run's watch gives up. Only errors that happen at once (the
    block raises as the heartbeat is lost, before the loss could cancel it, or while it
    handles that cancellation) leave together, in an exception group.

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
    :param payload: this node's payload, given to every participant of its rounds; at most
        1 MiB (1,048,576 bytes). It lives in the node's own key, and a participant
        reads the round's payloads in one read, only when one is not empty
    :param prefix: the key prefix of all runs
    :param max_rounds: the run's restart budget: how many rounds may follow the first,
        counted run-wide in the store (the run's round number), at least 0; ``None``
        (the default) for no limit. When a round past it is asked for, the coordinator
        closes the run with the reason, and every node's :meth:`next_rendezvous` raises
        :class:`RendezvousClosed` with it. The run keeps the budget of the node that
        created its state
    :param health_check: a zero-argument async callable run before each join (each
        :meth:`next_rendezvous` call, before it asks for a round); it passes when it
        returns, whatever it returns, and fails when it raises or takes longer than
        ``health_check_timeout``. A node whose check fails does not join: it waits
        outside the rounds, checking again with backoff (0.5 s doubling up to 10 s) and
        logging a WARNING with the reason, until it passes or ``join_timeout`` ends the
        call. :func:`read_run` and ``anyrdzv rendezvous`` show the outcome
    :param health_check_timeout: how long one health check may take, in seconds
    :param rank_order: how a round ranks its participants: ``"natural"`` (names with
        their digit runs compared as numbers, ``node7 < node66``), ``"stable"`` (a
        participant of the last round keeps its rank if it is below the new world size;
        the others fill the free ranks in natural order) or ``"name"`` (torch's sorted
        names). The node that creates the run sets it; a node with another gets a
        :class:`RendezvousError`
    :param topology: this node's topology label, e.g. ``"rack3/switch12"``, or ``None``:
        nodes with one label get contiguous ranks, labels in natural order, ``/``
        segment by segment; nodes without a label come first
    :raises TypeError: if an argument has the wrong type
    :raises ValueError: if an argument is out of range
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
        max_rounds: int | None = None,
        health_check: Callable[[], Awaitable[object]] | None = None,
        health_check_timeout: float = HEALTH_CHECK_TIMEOUT,
        rank_order: RankOrder = "natural",
        topology: str | None = None,
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
        check_bytes("payload", payload)
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(
                f"payload must be at most {MAX_PAYLOAD} bytes (it travels in the node's own "
                f"key, base64 in JSON, and etcd takes values up to 1.5 MiB), got "
                f"{len(payload)} bytes"
            )
        self.max_rounds: int | None = (
            None if max_rounds is None else check_int("max_rounds", max_rounds, least=0)
        )
        if health_check is not None and not callable(health_check):
            raise TypeError(
                "health_check must be a zero-argument async callable or None, got "
                f"{type_name(health_check)} {echo(health_check)}"
            )
        self.health_check_timeout: float = check_seconds(
            "health_check_timeout", health_check_timeout
        )
        self.rank_order: RankOrder = check_rank_order("rank_order", rank_order)
        self.topology: str | None = check_topology("topology", topology)
        self._keys = rules.NodeKeys(f"{check_prefix(prefix)}/{self.run_id}/", self.node)
        ttl = lease_ttl(
            self.keep_alive_interval, keep_alive_max_attempt, interval=self.keep_alive_interval
        )
        member = rules.encode_member(
            rules.Member(self.min_nodes, self.max_nodes, payload, self.topology)
        )
        claim = Claim(store, self._keys.member, member, self.run_id, self.node)
        self._heartbeat = MemberLease(
            store,
            self.run_id,
            self.node,
            key=self._keys.member,
            interval=self.keep_alive_interval,
            ttl=ttl,
            put=claim,
        )
        run_ttl = run_lease_ttl(ttl)

        async def stand(run: RunView) -> None:
            def coordinator() -> Coordinator:
                return Coordinator(
                    self._store,
                    self.run_id,
                    self._keys,
                    self._heartbeat,
                    min_nodes=self.min_nodes,
                    max_nodes=self.max_nodes,
                    last_call_timeout=self.last_call_timeout,
                    run_ttl=run_ttl,
                    floor=lambda: run.next_round,
                    max_rounds=self.max_rounds,
                    rank_order=self.rank_order,
                )

            await candidacy(self._store, run, coordinator, self._keys, self._heartbeat)

        self._entry = RunEntry(
            store,
            self.run_id,
            self._keys,
            self._heartbeat,
            claim,
            stand,
            close_timeout=self.close_timeout,
        )
        self._health = (
            None
            if health_check is None
            else HealthGate(
                store,
                health_check,
                timeout=self.health_check_timeout,
                key=self._keys.run + HEALTH + self.node,
                lease=self._heartbeat,
                run_id=self.run_id,
                node=self.node,
            )
        )
        self._rounds: Rounds | None = None  # while entered
        self._calling = False  # a next_rendezvous() call runs

    @property
    def data_prefix(self) -> str:
        """The run's subtree reserved for adapters, ``<prefix>/<run_id>/store/``.

        The rendezvous never reads its keys, and deletes them with the run's state when
        the run's last node leaves (or when a stale run is reset): an adapter such as
        the torchrun backend keeps its own keys there and need not clean them up.
        """
        return self._keys.data

    @property
    def data_lease(self) -> int | None:
        """The run's lease (its id), under which an adapter puts its keys in
        :attr:`data_prefix`, so that they expire with the run when every node is gone,
        even if no node was left to delete them; ``None`` outside ``async with``, or
        before the run's state exists. One node keeps it alive while any node is in the
        run.
        """
        rounds = self._rounds
        return None if rounds is None else rounds.data_lease()

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
        payload: bytes = b"",
        prefix: str = DEFAULT_PREFIX,
        health_check: Callable[[], Awaitable[object]] | None = None,
    ) -> Rendezvous:
        """Make a rendezvous from a torchrun ``--rdzv-conf`` string, or a mapping of strings.

        It reads ``join_timeout`` (600), ``last_call_timeout`` (30), ``close_timeout``
        (30), ``keep_alive_interval`` (5) and ``keep_alive_max_attempt`` (3), with
        torch's defaults, and anyrdzv's ``max_rounds`` (no limit), ``health_check``
        (``package.module:function``), ``health_check_timeout`` (60), ``rank_order``
        (``natural``) and ``topology`` (none), and ignores other keys, as torch does.
        The other arguments are the constructor's.

        :param store: the store
        :param run_id: the run; non-empty, no ``/``
        :param conf: ``"join_timeout=60,last_call_timeout=5"``, or
            ``{"join_timeout": "60"}``
        :param min_nodes: the fewest nodes of a round, at least 1
        :param max_nodes: the most nodes of a round, at least ``min_nodes``
        :param node: this node's name, unique among the run's live nodes; by default one
            unique to this process and this object
        :param payload: this node's payload, given to every participant of its rounds
        :param prefix: the key prefix of all runs
        :param health_check: the health check (see the constructor); by default, the
            conf key ``health_check=package.module:function``, imported, if given
        :raises ValueError: if the string does not parse, or a value is bad (the message
            names the key; a ``health_check`` that does not import too), or another
            argument is out of range
        :raises TypeError: if an argument has the wrong type
        """
        values = parse_conf(conf)
        if health_check is None and values["health_check"] is not None:
            health_check = load_health_check(values["health_check"])
        return cls(
            store,
            run_id,
            node=node,
            min_nodes=min_nodes,
            max_nodes=max_nodes,
            payload=payload,
            prefix=prefix,
            join_timeout=values["join_timeout"],
            last_call_timeout=values["last_call_timeout"],
            close_timeout=values["close_timeout"],
            keep_alive_interval=values["keep_alive_interval"],
            keep_alive_max_attempt=values["keep_alive_max_attempt"],
            max_rounds=values["max_rounds"],
            health_check=health_check,
            health_check_timeout=values["health_check_timeout"],
            rank_order=values["rank_order"],
            topology=values["topology"],
        )

    # -- lifetime ----------------------------------------------------------------------

    async def __aenter__(self) -> Rendezvous:
        await self._entry.__aenter__()
        self._rounds = Rounds(
            self._store,
            self._entry,
            self._heartbeat,
            self.run_id,
            self._keys,
            min_nodes=self.min_nodes,
            max_nodes=self.max_nodes,
            rank_order=self.rank_order,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        self._rounds = None
        if self._health is not None:
            self._health.forget()  # its key goes with the lease
        return await self._entry.__aexit__(exc_type, exc_value, traceback)

    async def _withdraw(self, rounds: Rounds) -> None:
        """Withdraw this node's join, shielded from cancellation, within a second; log a
        failure (the next call withdraws it)."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(WITHDRAW_TIMEOUT) as scope:
            try:
                await rounds.withdraw()
            except StoreError as exc:
                logger.warning("node %r could not withdraw its join: %s", self.node, exc)
        if scope.cancelled_caught:
            logger.warning(
                "node %r could not withdraw its join: no answer within %g s",
                self.node,
                WITHDRAW_TIMEOUT,
            )

    def _entered(self) -> Rounds:
        rounds = self._rounds
        if rounds is None:
            raise RuntimeError("use the Rendezvous in `async with` first")
        return rounds

    # -- the rendezvous ----------------------------------------------------------------

    async def next_rendezvous(self) -> RendezvousInfo:
        """Join the next round, and wait until it completes.

        A node still in a complete round asks for a new one; a node that comes after
        its round completed waits for the next.

        A call that ends without a round (``join_timeout``, a cancellation, an error)
        withdraws this node's join before it returns, so that no round counts a node
        that is not waiting for it; the next call joins the open round afresh.

        :raises RendezvousClosed: if the run is closed, or is closed meanwhile
        :raises RendezvousTimeout: if no round takes this node in ``join_timeout``
        :raises HeartbeatLost: if this node's lease is gone (its heartbeat's error,
            which also ends the ``async with`` block)
        :raises RendezvousError: if the run's state is malformed, or its nodes disagree
            on ``min_nodes`` or ``max_nodes``
        :raises RuntimeError: if another call of it on this object is running: calls on
            one ``Rendezvous`` must not overlap
        """
        rounds = self._entered()
        if self._calling:
            raise RuntimeError(
                f"next_rendezvous() of node {self.node!r} of run {self.run_id!r} is already "
                "running in another task: calls of it on one Rendezvous must not overlap"
            )
        self._calling = True
        wanted = rounds.wanted()
        emit(
            logger,
            "join_attempt",
            "node %r attempts to join round %s of run %r",
            self.node,
            "?" if wanted is None else wanted,
            self.run_id,
            run_id=self.run_id,
            node=self.node,
            round=wanted,
        )
        try:
            await anyio.lowlevel.checkpoint()
            with anyio.fail_after(self.join_timeout):
                if self._health is not None:
                    await self._health.pass_(wanted)
                state, record = await rounds.next()
        except TimeoutError:
            await self._withdraw(rounds)
            failing = None if self._health is None else self._health.failing
            health = "" if failing is None else f" (its health check fails: {failing})"
            exc = RendezvousTimeout(
                f"node {self.node!r} of run {self.run_id!r}: no round completed with it "
                f"within join_timeout={self.join_timeout:g} s{health}"
            )
            self._join_failed(exc)
            raise exc from None
        except HeartbeatLost as exc:
            self._join_failed(exc)
            raise  # the lease is gone, and the join key with it
        except BaseException as exc:
            await self._withdraw(rounds)
            if isinstance(exc, RendezvousError):
                self._join_failed(exc)
            raise
        finally:
            self._calling = False
        info = RendezvousInfo(
            self.run_id,
            state.round,
            rounds.ranks_of(record)[self.node],
            len(record.participants),
            record.participants,
            await rounds.payloads_of(record),
        )
        emit(
            logger,
            "joined",
            "node %r holds rank %d of %d in round %d of run %r",
            self.node,
            info.rank,
            info.world_size,
            info.round,
            self.run_id,
            run_id=self.run_id,
            node=self.node,
            round=info.round,
            rank=info.rank,
            world_size=info.world_size,
        )
        return info

    def _join_failed(self, exc: BaseException) -> None:
        emit(
            logger,
            "join_failed",
            "node %r of run %r: next_rendezvous() failed: %s: %s",
            self.node,
            self.run_id,
            type(exc).__name__,
            exc,
            run_id=self.run_id,
            node=self.node,
            reason=f"{type(exc).__name__}: {exc}",
        )

    async def num_nodes_waiting(self) -> int:
        """How many nodes wait for the next round, while the live participants of the
        complete one are fewer than ``max_nodes``; from the watched state, without asking
        the store."""
        rounds = self._entered()
        await anyio.lowlevel.checkpoint()
        return rounds.waiting()

    async def is_closed(self) -> bool:
        """Whether the run is closed, from the watched state."""
        rounds = self._entered()
        await anyio.lowlevel.checkpoint()
        return rounds.closed()

    async def set_closed(self) -> None:
        """Close the run: every node's pending and later :meth:`next_rendezvous` raises
        :class:`RendezvousClosed`.

        :raises RendezvousTimeout: if it takes longer than ``close_timeout``
        :raises RendezvousError: if the run's state is malformed
        """
        rounds = self._entered()
        await anyio.lowlevel.checkpoint()
        try:
            with anyio.fail_after(self.close_timeout):
                await rounds.close()
            emit(
                logger,
                "closed",
                "node %r closed run %r",
                self.node,
                self.run_id,
                run_id=self.run_id,
                node=self.node,
            )
        except TimeoutError:
            raise RendezvousTimeout(
                f"run {self.run_id!r} could not be closed within close_timeout="
                f"{self.close_timeout:g} s"
            ) from None

    async def closed_reason(self) -> str | None:
        """Why the run was closed, when its coordinator closed it (``max_rounds`` spent),
        from the watched state; ``None`` while it is open, or if a node closed it with
        :meth:`set_closed`."""
        rounds = self._entered()
        await anyio.lowlevel.checkpoint()
        return rounds.closed_reason()

    async def changes(self) -> AsyncGenerator[Change, None]:
        """Yield, once each, the reasons to leave the round this node holds: ``"waiting"``
        (nodes wait to join), ``"lost"`` (a participant's lease is gone), ``"new_round"``
        (a participant asked for a new round) and ``"closed"``.

        Before the node holds a round, only ``"closed"`` is yielded. Close it with
        ``contextlib.aclosing`` if you stop early.
        """
        rounds = self._entered()
        async with aclosing(rounds.changes()) as changes:
            async for change in changes:
                yield change
