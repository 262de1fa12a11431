"""The errors of the store layer: every failure a store reports is one of these."""

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

    .. versionadded:: 0.2
    """
