"""The store layer's data: leases, keys with their revisions, watch events, swap
results, and the limits and checks every store applies to its arguments alike.

Pure: no I/O, no event loop.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .._checks import check_bytes, check_int, check_str, echo, is_int, wrong_type


def check_ttl(ttl: object) -> int:
    """Return ``ttl`` if it is a whole number of seconds, at least 1."""
    return check_int("ttl", ttl, least=1)


#: The most bytes a key and its value may hold together. etcd refuses a request over
#: 1.5 MiB (its default ``--max-request-bytes``, 1,572,864) with "request is too large";
#: 4 KiB are left for the rest of the request, so that every store refuses the same
#: writes, up front, with the same error.
MAX_VALUE_BYTES = 1_572_864 - 4096


def check_prefix(prefix: object, name: str = "prefix") -> str:
    """Return ``prefix`` if it is a ``str`` that UTF-8 can encode (``""`` is every key).

    etcd's keys are bytes, which a store sends a ``str`` as, in UTF-8; a lone surrogate
    (such as ``"\\udcff"``, which ``os.fsdecode`` makes of a byte that is not UTF-8) has
    no UTF-8 form, so every store refuses it alike, before any I/O.

    :param name: the parameter, for the error message
    :raises TypeError: if it is not a ``str``
    :raises ValueError: if it holds a lone surrogate
    """
    text = check_str(name, prefix)
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{name} must be text that UTF-8 can encode, got {echo(text)}, which holds a "
            f"lone surrogate at index {exc.start}"
        ) from None
    return text


def check_key(key: object, name: str = "key") -> str:
    """Return ``key`` if it is a non-empty ``str`` that UTF-8 can encode: etcd has no
    empty key (and see :func:`check_prefix`).

    :param name: the parameter, for the error message
    :raises TypeError: if it is not a ``str``
    :raises ValueError: if it is empty, or holds a lone surrogate
    """
    text = check_prefix(key, name)
    if not text:
        raise ValueError(f"{name} must not be empty")
    return text


def check_put(key: object, value: object) -> None:
    """Check the arguments of :meth:`LeaseStore.put`: a non-empty ``str`` key and a ``bytes`` value,
    together no larger than :data:`MAX_VALUE_BYTES`."""
    text = check_key(key)
    value = check_bytes("value", value)
    if len(value) + 4 * len(text) > MAX_VALUE_BYTES:  # UTF-8 takes at most 4 bytes a character
        size = len(value) + len(text.encode())
        if size > MAX_VALUE_BYTES:
            raise ValueError(
                f"value is too large: the key and value hold {size} bytes, and a store "
                f"takes at most {MAX_VALUE_BYTES} (etcd refuses requests over 1.5 MiB)"
            )


def check_mod_revision(name: str, revision: object) -> int:
    """Return ``revision`` if it is an ``int`` of at least 0 (``bool`` excluded)."""
    return check_int(name, revision, least=0)


#: The largest lease id: etcd's lease ids are 64-bit signed integers.
MAX_LEASE_ID = 2**63 - 1


def check_lease_id(lease: object, *, least: int = 1) -> int:
    """The id of ``lease``: a :class:`Lease`, or a lease id as :attr:`KeyValue.lease`
    gives it. Every parameter that takes a lease takes either.

    :param least: the smallest id taken: 1, since no store grants lease 0; 0 where it
        means "no lease" (:meth:`Compare.lease`)
    :raises TypeError: if ``lease`` is neither
    :raises ValueError: if the id is below ``least`` or above :data:`MAX_LEASE_ID`
    """
    if isinstance(lease, Lease):
        return lease.id
    if not is_int(lease):
        raise wrong_type("lease", lease, "a Lease or an int")
    check_int("lease", lease, least=least)
    if lease > MAX_LEASE_ID:
        raise ValueError(
            f"lease must be at most {MAX_LEASE_ID} (etcd's lease ids are 64-bit), got {echo(lease)}"
        )
    return lease


def check_optional_lease(lease: object) -> int | None:
    """The id of ``lease`` (see :func:`check_lease_id`), or ``None`` for no lease.

    :raises TypeError: if ``lease`` is not a :class:`Lease`, an ``int`` or ``None``
    :raises ValueError: if the id is out of range
    """
    if lease is None:
        return None
    if not isinstance(lease, Lease) and not is_int(lease):
        raise wrong_type("lease", lease, "a Lease, an int or None")
    return check_lease_id(lease)


def lease_id_of(lease: Lease | int | None) -> int | None:
    """The id of a lease already checked: a :class:`Lease`, its id, or ``None``."""
    return lease.id if isinstance(lease, Lease) else lease


class EventType(enum.Enum):
    """What happened to a key."""

    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True)
class Lease:
    """A lease granted by a store. Keys put under it vanish when it expires.

    Every parameter that takes a lease takes a ``Lease`` or its id, an ``int``, as
    :attr:`KeyValue.lease` and :attr:`StoreEvent.lease` give it: a key's lease can be
    renewed, revoked or reused without knowing its TTL.

    :ivar id: the store's id for the lease
    :ivar ttl: the time to live it was granted with, in seconds
    """

    id: int
    ttl: int


@dataclass(frozen=True)
class KeyValue:
    """A key, its value, and etcd's bookkeeping for it.

    :ivar key: the key
    :ivar value: its value
    :ivar create_revision: the store revision at which the key was created (a key
        deleted and put again is created anew)
    :ivar mod_revision: the store revision of the key's last put: the token that
        :meth:`LeaseStore.compare_and_swap` compares
    :ivar version: how many puts the key has had since it was created (1 after the first)
    :ivar lease: the id of the lease the key lives under, or ``None``
    """

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int | None


@dataclass(frozen=True)
class CasResult:
    """What :meth:`LeaseStore.compare_and_swap` did.

    :ivar succeeded: whether the key was written
    :ivar kv: on success, the key as written (its ``mod_revision`` is the revision of the
        write); on failure, the key as it is now, or ``None`` if it is absent
    """

    succeeded: bool
    kv: KeyValue | None


@dataclass(frozen=True)
class StoreEvent:
    """A change to one key, as a watch reports it.

    :ivar type: ``PUT`` or ``DELETE``
    :ivar key: the key
    :ivar value: the new value (empty for ``DELETE``)
    :ivar revision: the store revision of the change: the key's new ``mod_revision``
        (also :attr:`mod_revision`)
    :ivar create_revision: for ``PUT``, the revision at which the key was created; 0 for
        ``DELETE``, as etcd sends it
    :ivar version: for ``PUT``, how many puts the key has had since it was created; 0
        for ``DELETE``
    :ivar lease: for ``PUT``, the id of the lease the key lives under, or ``None``;
        ``None`` for ``DELETE``
    """

    type: EventType
    key: str
    value: bytes
    revision: int
    create_revision: int = 0
    version: int = 0
    lease: int | None = None

    @property
    def mod_revision(self) -> int:
        """The store revision of the change: the same as :attr:`revision`."""
        return self.revision
