"""torch's ``RendezvousHandler`` on anyrdzv's :class:`~anyrdzv.Rendezvous` and etcd v3.

This module imports torch: it is reached only through the ``anyrdzv-etcd`` entry point's
creator, or an explicit import.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

import torch.distributed as dist
from torch._C._distributed_c10d import PrefixStore
from torch.distributed.elastic.events import construct_and_record_rdzv_event
from torch.distributed.elastic.events.api import NodeState
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.rendezvous import (
    RendezvousClosedError,
    RendezvousConnectionError,
    RendezvousError,
    RendezvousHandler,
    RendezvousInfo,
    RendezvousParameters,
    RendezvousStateError,
    RendezvousStoreInfo,
    RendezvousTimeoutError,
)

from .. import _exceptions as ours
from .._etcd._store import EtcdStore
from .._exceptions import StoreError
from .._membership._keys import DEFAULT_PREFIX
from .._rendezvous import _rendezvous
from .._rendezvous._report import TORCH_ROUND_PREFIX
from ._conf import in_torchrun_terms, read_conf
from ._loop import LoopGone, LoopThread
from ._session import Session, SessionClosed, SessionLost
from ._store import TorchStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from types import FrameType

    from .._stores._protocol import LeaseStore

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: The name torchrun knows this backend by: ``--rdzv-backend=anyrdzv-etcd``.
BACKEND_NAME = "anyrdzv-etcd"

#: Where each participant of a round says, in the round's store, that it has its
#: bootstrap info: ``<READY>/<rank>``.
READY = "anyrdzv/ready"


@contextmanager
def _torch_errors(what: str) -> Iterator[None]:
    """Turn every error of ours into one of torch's ``RendezvousError`` subclasses: the
    only kind the agent handles."""
    try:
        yield
    except RendezvousError:
        raise
    except ours.RendezvousClosed as exc:
        raise RendezvousClosedError(str(exc)) from exc
    except ours.RendezvousTimeout as exc:
        raise RendezvousTimeoutError(str(exc)) from exc
    except SessionLost as exc:
        raise RendezvousConnectionError(
            f"{what}: the heartbeat of this node was lost, so the other nodes see it as gone: {exc}"
        ) from exc
    except (StoreError, LoopGone) as exc:
        raise RendezvousConnectionError(f"{what}: {in_torchrun_terms(str(exc))}") from exc
    except SessionClosed as exc:
        raise RendezvousClosedError(f"{what}: {exc}") from exc
    except ours.RendezvousError as exc:
        raise RendezvousStateError(f"{what}: {exc}") from exc


class EtcdRendezvousHandler(RendezvousHandler):
    """torchrun's rendezvous on etcd v3: :class:`anyrdzv.Rendezvous` behind torch's
    synchronous handler API.

    The rendezvous, its heartbeat and its watch run as tasks in an event loop in a
    daemon thread; every call waits for its task in a way a signal interrupts at once.
    ``num_nodes_waiting()`` reads a count that a task keeps from the watched state, so
    torchrun's monitor loop never waits on the store.

    Each round's ``store`` is a ``PrefixStore("torch.rendezvous.<run>.<round>")`` over a
    torch ``Store`` on the same etcd, under the run's keys; rank 0 publishes a fresh
    ``MASTER_ADDR``/``MASTER_PORT`` in it every round, and its worker rank 0 hosts the
    workers' store (``use_agent_store`` is False).

    :param params: torchrun's parameters
    :raises ValueError: if a ``--rdzv-conf`` value or the endpoint is bad
    :raises RendezvousConnectionError: if etcd does not answer within ``store_timeout``
    """

    def __init__(self, params: RendezvousParameters) -> None:
        conf = read_conf(params.endpoint, params.config, os.environ)
        warning = conf.unknown_keys_warning()
        if warning is not None:
            logger.warning("%s", warning)
        self._run_id = params.run_id
        self._local_addr = params.local_addr
        try:
            store = EtcdStore(
                conf.endpoint,
                ssl=conf.ssl,
                username=conf.username,
                password=conf.password,
                timeout=conf.store_timeout,
            )
        except ValueError as exc:
            raise ValueError(in_torchrun_terms(str(exc))) from None

        def make_rendezvous(store: LeaseStore) -> _rendezvous.Rendezvous:
            return _rendezvous.Rendezvous.from_conf(
                store,
                params.run_id,
                conf.rendezvous,
                min_nodes=params.min_nodes,
                max_nodes=params.max_nodes,
            )

        self._loop = LoopThread(conf.backend, name=f"anyrdzv-etcd-{params.run_id}")
        try:
            with _torch_errors(f"run {params.run_id!r} on etcd {conf.endpoint}"):
                session = Session(lambda: store, make_rendezvous, _probe(params.run_id))
                self._loop.start(session.run)
                self._session = session
        except BaseException:
            self._loop.stop()
            raise
        rendezvous = self._session.rendezvous
        # The handler holds the Python store for as long as a PrefixStore wraps it. A
        # wait in it is bounded by join_timeout, and ends as soon as the round this node
        # holds cannot go on.
        self._store = TorchStore(
            self._loop,
            self._session.store,
            rendezvous.data_prefix,
            timeout=timedelta(seconds=rendezvous.join_timeout),
            guard=self._session.guard,
            # Under the run's lease: the keys expire with the run, even when the last
            # node to leave was killed and no node was left to delete them.
            lease=lambda: rendezvous.data_lease,
        )
        self._shut_down = False
        self._round = -1  # the last round next_rendezvous() returned, for the events
        # torchrun skips shutdown() when a signal ends the agent: leave the run then (the
        # lease revoked, the run left open), so that the others go on at once.
        self._pid = os.getpid()
        atexit.register(self._leave_at_exit)
        self._sigterm = _catch_sigterm()
        logger.info(
            "node %r joined run %r on etcd %s",
            rendezvous.node,
            self._run_id,
            conf.endpoint,
        )

    # -- torch's API ---------------------------------------------------------------------

    def get_backend(self) -> str:
        """``"anyrdzv-etcd"``."""
        return BACKEND_NAME

    @property
    def use_agent_store(self) -> bool:
        """False: the agent hosts no TCPStore, and worker rank 0 hosts the workers' store
        at the address rank 0 published in the round's store, fresh each round."""
        return False

    def _run(self, what: str, func: Callable[[], _T]) -> _T:
        with _torch_errors(f"node {self._node!r} of run {self._run_id!r}: {what}"):
            if self._shut_down:
                raise SessionClosed("the rendezvous handler has been shut down")
            return func()

    @property
    def _node(self) -> str:
        return self._session.rendezvous.node

    def _record(
        self,
        method: str,
        message: str,
        state: NodeState = NodeState.RUNNING,
        rank: int | None = None,
    ) -> None:
        """Record a rendezvous event through ``torch.distributed.elastic.events``, as
        torch's dynamic handler does at the same moments: named ``<file>:<class>.<method>``,
        with the node's state, and the round in the message. torch does nothing unless an
        event handler is configured for ``dynamic_rendezvous``."""
        construct_and_record_rdzv_event(
            run_id=self._run_id,
            message=message,
            node_state=state,
            name=f"{type(self).__name__}.{method}",
            hostname=self._local_addr or "",
            pid=os.getpid(),
            rank=rank,
        )

    def _record_failure(self, method: str, exc: BaseException) -> None:
        self._record(method, f"{type(exc).__name__}: {exc}", NodeState.FAILED)

    def next_rendezvous(self) -> RendezvousInfo:
        """Join the next round and wait until it completes with this node in it, and
        until every participant has the round's bootstrap info (rank 0 publishes it).

        It records torch's events for it: the attempt, then the round joined (with the
        rank), or the failure.

        If the round cannot go on meanwhile (a participant's lease is gone, or it asked
        for a new round), this node joins the next round at once.

        :raises RendezvousClosedError: if the run is closed
        :raises RendezvousTimeoutError: if no round completes within ``join_timeout``, or
            its bootstrap does not
        :raises RendezvousConnectionError: if etcd failed, or this node's heartbeat
        :raises RendezvousStateError: if the run's state is bad, or its nodes disagree
        """
        self._record(
            "next_rendezvous",
            f"node {self._node!r} attempts to join the next round of run {self._run_id!r}",
        )
        try:
            info = self._next_rendezvous()
        except Exception as exc:
            self._record_failure("next_rendezvous", exc)
            raise
        self._record(
            "next_rendezvous",
            f"node {self._node!r} joined round {self._round} of run {self._run_id!r} as rank "
            f"{info.rank} in a world of size {info.world_size}",
            rank=info.rank,
        )
        return info

    def _next_rendezvous(self) -> RendezvousInfo:
        while True:
            info = self._run(
                "next_rendezvous", lambda: self._loop.run(self._session.next_rendezvous)
            )
            round_prefix = TORCH_ROUND_PREFIX.format(run_id=self._run_id, round=info.round)
            store = PrefixStore(round_prefix.removesuffix("/"), self._store)
            try:
                bootstrap = RendezvousStoreInfo.build(info.rank, store, self._local_addr)
                store.set(f"{READY}/{info.rank}", "")
                store.wait([f"{READY}/{rank}" for rank in range(info.world_size)])
            except dist.DistError as exc:
                reason = self._session.ended(info.round)
                if reason is None:
                    self._bootstrap_failed(info.round, exc)
                self._run("next_rendezvous", self._check)  # this node's own loss
                logger.warning(
                    "node %r, round %d of run %r: %s before the round's bootstrap "
                    "completed; joining the next round",
                    self._node,
                    info.round,
                    self._run_id,
                    reason,
                )
                continue
            logger.info(
                "node %r holds rank %d of %d in round %d of run %r; master %s:%d",
                self._node,
                info.rank,
                info.world_size,
                info.round,
                self._run_id,
                bootstrap.master_addr,
                bootstrap.master_port,
            )
            self._round = info.round
            return RendezvousInfo(store, info.rank, info.world_size, bootstrap)

    def _bootstrap_failed(self, round: int, exc: dist.DistError) -> None:
        what = f"node {self._node!r}, round {round} of run {self._run_id!r}: bootstrap"
        self._run("next_rendezvous", self._check)
        if isinstance(exc, dist.DistStoreError):
            raise RendezvousTimeoutError(
                f"{what}: the participants did not all publish their bootstrap info within "
                f"join_timeout: {exc}"
            ) from exc
        raise RendezvousConnectionError(f"{what}: {exc}") from exc

    def num_nodes_waiting(self) -> int:
        """Nodes that wait to join, from the watched state, with no store round trip;
        at least 1 also while a participant of this node's round has lost its lease or
        asked for a new round, so that the agent restarts its workers at once."""
        try:
            self._run("num_nodes_waiting", self._check)
        except RendezvousError as exc:
            self._record_failure("num_nodes_waiting", exc)
            raise
        return self._session.nodes_waiting

    def _check(self) -> None:
        self._loop.check()
        self._session.check()

    def is_closed(self) -> bool:
        """Whether the run is closed, from the watched state."""
        try:
            return self._run("is_closed", lambda: self._loop.run(self._session.is_closed))
        except RendezvousError as exc:
            self._record_failure("is_closed", exc)
            raise

    def set_closed(self) -> None:
        """Close the run: every node's next rendezvous fails."""
        try:
            self._run("set_closed", lambda: self._loop.run(self._session.set_closed))
        except RendezvousError as exc:
            self._record_failure("set_closed", exc)
            raise
        self._record(
            "set_closed",
            f"node {self._node!r} closed run {self._run_id!r}",
            NodeState.SUCCEEDED,
        )

    def get_run_id(self) -> str:
        """The run id."""
        return self._run_id

    def shutdown(self) -> bool:
        """Close the run (if this node was ever admitted to it), leave it (the last node
        deletes its keys) and stop the loop.

        :return: False, with a warning logged, if the run could not be closed
        """
        if self._shut_down:
            return True
        self._shut_down = True
        atexit.unregister(self._leave_at_exit)
        _restore_sigterm(self._sigterm)
        try:
            with _torch_errors(f"node {self._node!r} of run {self._run_id!r}: shutdown"):
                self._loop.run(lambda: self._session.close(close_run=True))
        except RendezvousError as exc:
            logger.warning("the run %r could not be closed: %s", self._run_id, exc)
            self._record(
                "shutdown",
                f"node {self._node!r} could not shut down run {self._run_id!r}: "
                f"{type(exc).__name__}: {exc}",
                NodeState.FAILED,
            )
            return False
        finally:
            self._loop.stop()
        self._record(
            "shutdown", f"node {self._node!r} closed run {self._run_id!r}", NodeState.SUCCEEDED
        )
        return True

    def _leave_at_exit(self) -> None:
        """At the exit of a process that did not call :meth:`shutdown` (torchrun skips it
        when a signal ends the agent): leave the run, open, and stop the loop. Nothing in
        a forked child, which inherits the hook but not the loop."""
        if self._shut_down or os.getpid() != self._pid:
            return
        self._shut_down = True
        try:
            with _torch_errors(f"node {self._node!r} of run {self._run_id!r}: leaving at exit"):
                self._loop.run(lambda: self._session.close(close_run=False))
            logger.info("node %r left run %r at exit", self._node, self._run_id)
        except (RendezvousError, LoopGone) as exc:
            logger.warning(
                "node %r could not leave run %r at exit: %s", self._node, self._run_id, exc
            )
        finally:
            self._loop.stop()


def _raise_signal(signum: int, frame: FrameType | None) -> None:
    """As torchrun's agent does once its workers started: a ``SignalException``, which
    makes torchrun skip ``shutdown()`` (the run stays open) and end the agent."""
    sigval = signal.Signals(signum)
    raise SignalException(f"Process {os.getpid()} got signal: {sigval}", sigval=sigval)


def _catch_sigterm() -> bool:
    """Before torchrun's agent starts its first workers, SIGTERM has its default action,
    which ends the process with no clean-up: raise ``SignalException`` instead, so that
    the node leaves the run at exit. Only where SIGTERM has its default action, in the
    main thread; return whether it was set."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    signal.signal(signal.SIGTERM, _raise_signal)
    return True


def _restore_sigterm(caught: bool) -> None:
    """Give SIGTERM its default action back, if :func:`_catch_sigterm` set it and it is
    still set."""
    if (
        caught
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is _raise_signal
    ):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _probe(run_id: str) -> Callable[[LeaseStore], Awaitable[object]]:
    """Ask etcd once, so that an unreachable etcd (or a user without rights on the run's
    keys) is an error at once, with its cause: a read of the run's own key prefix, within
    what a user granted ``<prefix>/`` may read."""

    async def probe(store: LeaseStore) -> None:
        await store.get(f"{DEFAULT_PREFIX}/{run_id}/")

    return probe
