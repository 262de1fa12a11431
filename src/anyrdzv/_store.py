from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ._util import check_str

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable


def check_ttl(ttl: object) -> int:
    """Return ``ttl`` if it is a whole number of seconds, at least 1."""
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise TypeError(f"ttl must be an int number of seconds, got {type(ttl).__qualname__}")
    if ttl < 1:
        raise ValueError(f"ttl must be at least 1 second, got {ttl}")
    return ttl


def check_put(key: object, value: object) -> None:
    """Check the arguments of :meth:`LeaseStore.put`: a ``str`` key and a ``bytes`` value."""
    check_str("key", key)
    if not isinstance(value, bytes):
        raise TypeError(f"value must be bytes, got {type(value).__qualname__}")


class StoreError(Exception):
    """Base class of the errors a :class:`LeaseStore` raises."""


class StoreConnectionError(StoreError, ConnectionError):
    """The store could not be reached, did not answer in time, or dropped the connection."""


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


class EventType(enum.Enum):
    """What happened to a key."""

    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True)
class Lease:
    """A lease granted by a store. Keys put under it vanish when it expires.

    :ivar id: the store's id for the lease
    :ivar ttl: the time to live it was granted with, in seconds
    """

    id: int
    ttl: int


@dataclass(frozen=True)
class StoreEvent:
    """A change to one key, as a watch reports it.

    :ivar type: ``PUT`` or ``DELETE``
    :ivar key: the key
    :ivar value: the new value (empty for ``DELETE``)
    :ivar revision: the store revision of the change
    """

    type: EventType
    key: str
    value: bytes
    revision: int


class WatchStream(Protocol):
    """What :meth:`LeaseStore.watch_prefix` returns: an async iterator of events that
    can be closed early (``contextlib.aclosing`` works with it)."""

    def __aiter__(self) -> AsyncIterator[StoreEvent]: ...

    def __anext__(self) -> Awaitable[StoreEvent]: ...

    def aclose(self) -> Awaitable[object]:
        """Stop watching and release the stream."""
        ...


class LeaseStore(Protocol):
    """An async key-value store with leases and watches: what heartbeats need.

    :class:`MemoryStore` and :class:`EtcdStore` implement it, and pass one contract
    test suite.
    """

    async def grant(self, ttl: int) -> Lease:
        """Grant a lease that lives ``ttl`` seconds unless kept alive."""
        ...

    async def keep_alive(self, lease: Lease) -> int:
        """Renew ``lease`` and return its remaining time to live, in seconds.

        :raises LeaseExpired: if the lease is gone
        """
        ...

    async def revoke(self, lease: Lease) -> None:
        """Revoke ``lease`` now, deleting its keys. Revoking a gone lease is not an error."""
        ...

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        """Set ``key`` to ``value``, under ``lease`` if given; return the new revision.

        :raises LeaseExpired: if ``lease`` is gone
        """
        ...

    async def get_prefix(self, prefix: str) -> tuple[dict[str, bytes], int]:
        """Return every key under ``prefix`` with its value, and the store revision."""
        ...

    def watch_prefix(self, prefix: str, *, start_revision: int) -> WatchStream:
        """Yield every change under ``prefix`` from ``start_revision`` on, in order.

        :raises StoreCompacted: if ``start_revision`` is older than the kept history
        :raises StoreConnectionError: if the stream breaks; resume from the next revision
        """
        ...
