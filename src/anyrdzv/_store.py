from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

from ._exceptions import (
    LeaseExpired,
    StoreCompacted,
    StoreConnectionError,
    StoreError,
    StorePermissionError,
    StoreProtocolError,
)
from ._util import check_str, type_name

# The errors live in _exceptions; these names stay importable from here too.
__all__ = (
    "EventType",
    "Lease",
    "LeaseExpired",
    "LeaseStore",
    "StoreCompacted",
    "StoreConnectionError",
    "StoreError",
    "StoreEvent",
    "StorePermissionError",
    "StoreProtocolError",
    "WatchStream",
    "check_put",
    "check_store",
    "check_ttl",
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable


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

    def watch_prefix(
        self,
        prefix: str,
        *,
        start_revision: int,
        on_open: Callable[[], object] | None = None,
    ) -> WatchStream:
        """Yield every change under ``prefix`` from ``start_revision`` on, in order.

        ``on_open``, if given, is called each time the store confirms the watch (for
        etcd, again whenever the stream is made anew): a caller can tell a watch that
        works but is quiet from one that keeps failing.

        :raises StoreCompacted: if ``start_revision`` is older than the kept history
        :raises StoreConnectionError: if the stream breaks; resume from the next revision
        """
        ...


_LEASE_STORE_METHODS = ("grant", "keep_alive", "revoke", "put", "get_prefix", "watch_prefix")


def check_store(store: object) -> LeaseStore:
    """Return ``store`` if it has the methods of a :class:`LeaseStore`, else a TypeError."""
    if isinstance(store, type):  # the class, not an instance: its methods are callable too
        raise TypeError(
            f"store must be a LeaseStore instance, such as MemoryStore(), "
            f"got the class {store.__qualname__}"
        )
    missing = [name for name in _LEASE_STORE_METHODS if not callable(getattr(store, name, None))]
    if missing:
        lacks = (
            f" (it has no {', '.join(name + '()' for name in missing)})"
            if len(missing) < len(_LEASE_STORE_METHODS)
            else ""
        )
        raise TypeError(
            f"store must be a LeaseStore such as MemoryStore or EtcdStore, "
            f"got {type_name(store)} {store!r:.200}{lacks}"
        )
    return cast("LeaseStore", store)
