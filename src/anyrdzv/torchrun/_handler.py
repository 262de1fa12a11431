"""torch's ``RendezvousHandler`` on anyrdzv's :class:`~anyrdzv.Rendezvous` and etcd v3.

This module imports torch: it is reached only through the ``anyrdzv-etcd`` entry point's
creator, or an explicit import.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

from torch._C._distributed_c10d import PrefixStore
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
from .._rendezvous import _rendezvous
from ._conf import read_conf
from ._loop import LoopGone, LoopThread
from ._session import Session, SessionClosed, SessionLost
from ._store import TorchStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from .._stores._protocol import LeaseStore

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: The name torchrun knows this backend by: ``--rdzv-backend=anyrdzv-etcd``.
BACKEND_NAME = "anyrdzv-etcd"


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
        raise RendezvousConnectionError(f"{what}: {exc}") from exc
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
        self._run_id = params.run_id
        self._local_addr = params.local_addr
        store = EtcdStore(
            conf.endpoint,
            ssl=conf.ssl,
            username=conf.username,
            password=conf.password,
            timeout=conf.store_timeout,
        )

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
                session = Session(lambda: store, make_rendezvous, _probe)
                self._loop.start(session.run)
                self._session = session
        except BaseException:
            self._loop.stop()
            raise
        # The handler holds the Python store for as long as a PrefixStore wraps it.
        self._store = TorchStore(
            self._loop,
            self._session.store,
            self._session.rendezvous.data_prefix,
            timeout=timedelta(seconds=300),
        )
        self._shut_down = False
        logger.info(
            "node %r joined run %r on etcd %s",
            self._session.rendezvous.node,
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

    def next_rendezvous(self) -> RendezvousInfo:
        """Join the next round and wait until it completes with this node in it."""
        info = self._run("next_rendezvous", lambda: self._loop.run(self._session.next_rendezvous))
        store = PrefixStore(f"torch.rendezvous.{self._run_id}.{info.round}", self._store)
        bootstrap = RendezvousStoreInfo.build(info.rank, store, self._local_addr)
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
        return RendezvousInfo(store, info.rank, info.world_size, bootstrap)

    def num_nodes_waiting(self) -> int:
        """Nodes that wait to join, from the watched state, with no store round trip;
        at least 1 also while a participant of this node's round has lost its lease or
        asked for a new round, so that the agent restarts its workers at once."""
        self._run("num_nodes_waiting", self._check)
        return self._session.nodes_waiting

    def _check(self) -> None:
        self._loop.check()
        self._session.check()

    def is_closed(self) -> bool:
        """Whether the run is closed, from the watched state."""
        return self._run("is_closed", lambda: self._loop.run(self._session.is_closed))

    def set_closed(self) -> None:
        """Close the run: every node's next rendezvous fails."""
        self._run("set_closed", lambda: self._loop.run(self._session.set_closed))

    def get_run_id(self) -> str:
        """The run id."""
        return self._run_id

    def shutdown(self) -> bool:
        """Close the run, leave it (the last node deletes its keys) and stop the loop.

        :return: False, with a warning logged, if the run could not be closed
        """
        if self._shut_down:
            return True
        self._shut_down = True
        try:
            with _torch_errors(f"node {self._node!r} of run {self._run_id!r}: shutdown"):
                self._loop.run(lambda: self._session.close(close_run=True))
        except RendezvousError as exc:
            logger.warning("the run %r could not be closed: %s", self._run_id, exc)
            return False
        finally:
            self._loop.stop()
        return True


async def _probe(store: LeaseStore) -> None:
    """Ask etcd once, so that an unreachable etcd is an error at once, with its cause."""
    await store.get("/anyrdzv")
