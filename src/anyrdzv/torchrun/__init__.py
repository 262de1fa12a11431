"""anyrdzv as torchrun's etcd v3 backend: ``torchrun --rdzv-backend=anyrdzv-etcd``.

torch loads every ``torchrun.handlers`` entry point whenever its rendezvous package is
imported, whichever backend is chosen, and calls it with no argument to get the
creator. So importing this module imports no torch and starts no thread, and
:func:`handler_factory` only returns :func:`create_handler`, which imports the handler
(and torch) when torchrun calls it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch.distributed.elastic.rendezvous import RendezvousHandler, RendezvousParameters

__all__ = ("create_handler", "handler_factory")


def create_handler(params: RendezvousParameters) -> RendezvousHandler:
    """Make the ``anyrdzv-etcd`` handler from torchrun's parameters.

    ``--rdzv-endpoint`` is one etcd member or a comma-separated list (default port
    2379). ``--rdzv-conf`` takes torch's ``join_timeout``, ``last_call_timeout``,
    ``close_timeout``, ``keep_alive_interval`` and ``keep_alive_max_attempt``, with
    torch's defaults; ``cacert``, ``cert`` and ``key`` for TLS; ``user``, whose password
    comes from ``$ANYRDZV_ETCD_PASSWORD``; ``store_timeout`` (seconds etcd may take to
    answer, 5); and ``async_backend`` (``asyncio``, ``uvloop`` or ``trio``).
    ``--local-addr`` is the address this node publishes when it is rank 0.

    :param params: torchrun's rendezvous parameters
    :raises ValueError: if a conf value or the endpoint is bad
    :raises torch.distributed.elastic.rendezvous.RendezvousConnectionError: if etcd does
        not answer within ``store_timeout``
    """
    from ._handler import EtcdRendezvousHandler

    return EtcdRendezvousHandler(params)


def handler_factory() -> Callable[[RendezvousParameters], RendezvousHandler]:
    """The ``torchrun.handlers`` entry point: return the creator, :func:`create_handler`.

    Cheap and free of side effects, as torch calls it in every process that imports
    its rendezvous package.
    """
    return create_handler
