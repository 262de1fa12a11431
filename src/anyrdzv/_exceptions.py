"""Every public error of anyrdzv: the store layer's, and the rendezvous's and heartbeat's."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of the errors a :class:`LeaseStore` raises."""


class StoreConnectionError(StoreError, ConnectionError):
    """The store could not be reached, did not answer in time, dropped the connection,
    or answered that it cannot serve the request now (no leader, stopping, unavailable).

    Such faults pass: a caller may retry.
    """


class StorePermissionError(StoreError, PermissionError):
    """The store refused the request: bad or missing credentials, or no permission."""


class LeaseExpired(StoreError):
    """The lease does not exist any more: it expired or was revoked."""


class StoreCompacted(StoreError):
    """A watch asked for history that the store has already compacted away.

    :ivar compact_revision: the oldest revision still available
    """

    def __init__(self, message: str, compact_revision: int) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class StoreProtocolError(StoreError):
    """The server's answer could not be read: it is not an etcd v3 gateway's answer, or a
    field in it is missing or malformed.
    """


# -- rendezvous and membership --------------------------------------------------------


class RendezvousError(Exception):
    """A rendezvous failed: the base class of :class:`RendezvousClosed`,
    :class:`RendezvousTimeout` and :class:`HeartbeatLost`, and what a malformed or
    disagreeing run raises. ``except RendezvousError`` catches every way a
    :class:`~anyrdzv.Rendezvous` fails, its store's errors aside."""


class RendezvousClosed(RendezvousError):
    """The run is closed: no new round will complete."""


class RendezvousTimeout(RendezvousError, TimeoutError):
    """A round did not complete, or the run could not be closed, in time."""


class HeartbeatLost(RendezvousError):
    """A member's lease is gone: the rest of the group now sees the member as left.

    A :class:`~anyrdzv.Heartbeat` raises it out of its ``async with`` block. A
    :class:`~anyrdzv.Rendezvous` node whose lease is gone raises it too, whichever
    notices first: :meth:`~anyrdzv.Rendezvous.next_rendezvous` (its join finds the lease
    gone) or the heartbeat (out of the block); both raise the one object. It is a
    :class:`RendezvousError`, so that ``except RendezvousError`` catches every way a
    rendezvous fails.

    Its ``__cause__`` is the error that ended the heartbeat: the store's last error, or
    a :class:`TimeoutError` if the store did not answer before the lease ran out.

    :ivar group: the group (a rendezvous's run id)
    :ivar member: the member whose heartbeat was lost (a rendezvous's node)
    """

    def __init__(self, message: str, group: str, member: str) -> None:
        super().__init__(message)
        self.group = group
        self.member = member
