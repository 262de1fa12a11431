"""TCPStore's semantics on a :class:`~anyrdzv.LeaseStore`, in async code and with no torch.

:class:`TorchKV` is what torch's ``Store`` does, one async method per operation, on the
keys under one prefix: ``get``, ``wait`` and ``multi_get`` block until their keys exist,
up to a timeout, and then raise :class:`WaitTimeout` with TCPStore's message; ``add``
keeps decimal ASCII, by compare-and-swap; ``compare_set`` answers TCPStore's four cases;
``multi_set`` and ``check`` take one txn per 128 keys. A wait reads its keys, then
follows them with :func:`~anyrdzv._stores._follow.follow` from the revision after the
read: no polling. A wait can also be ended from outside, by a guard (the torchrun backend's:
a participant of the round is gone), with :class:`WaitEnded`. The torch facade,
:class:`~anyrdzv.torchrun._store.TorchStore`, runs these in its loop thread and turns their
errors into torch's.
"""

from __future__ import annotations

import logging
import math
import os.path
from contextlib import AbstractContextManager, aclosing, contextmanager
from typing import TYPE_CHECKING, Protocol, TypeVar

import anyio

from .._checks import check_str, cut, echo, type_name
from .._core._delay import backoff, delay
from .._exceptions import StoreConnectionError
from .._stores._follow import Resynced, follow
from .._stores._model import MAX_VALUE_BYTES, EventType
from .._stores._txn import MAX_TXN_OPS, TXN_ITEM_BYTES, Compare, Get, GetResult, Put

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from .._stores._model import KeyValue
    from .._stores._protocol import LeaseStore

__all__ = ("TorchKV", "WaitEnded", "WaitGuard", "WaitTimeout")

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# What TorchKV calls on its LeaseStore: checked when it is made.
_STORE_METHODS = (
    "put",
    "get",
    "delete",
    "txn",
    "compare_and_swap",
    "watch_prefix",
    "get_prefix_kv",
)


class WaitTimeout(TimeoutError):
    """Keys did not all appear in time. The message is TCPStore's:
    ``wait timeout after 300ms, keys: ...``, with the missing keys in full."""


class WaitEnded(Exception):
    """A wait ended before its keys appeared, for a reason outside the store (its
    guard says why): waiting on would be in vain."""


class WaitGuard(Protocol):
    """What a guard yields for one wait: why it was ended, once it was."""

    @property
    def reason(self) -> str | None:
        """Why the wait was ended, or ``None`` while it may go on."""
        ...


class _Unguarded:
    reason: str | None = None


@contextmanager
def _unguarded() -> Iterator[WaitGuard]:
    yield _Unguarded()


def _chunks(items: list[_T], size: int = MAX_TXN_OPS) -> Iterator[list[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _put_chunks(puts: list[Put]) -> Iterator[list[Put]]:
    """Puts in txns that etcd takes: at most 128, and within the size a request may have."""
    chunk: list[Put] = []
    size = 0
    for put in puts:
        item = TXN_ITEM_BYTES + len(put.key.encode("utf-8", "surrogatepass")) + len(put.value)
        if chunk and (len(chunk) == MAX_TXN_OPS or size + item > MAX_VALUE_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(put)
        size += item
    if chunk:
        yield chunk


def _only_kv(result: object) -> KeyValue | None:
    """The key a txn's single-key :class:`Get` found, or ``None``."""
    assert isinstance(result, GetResult)
    return result.kvs[0] if result.kvs else None


def _no_lease() -> None:
    return None


class TorchKV:
    """The keys of a torch ``Store``, with TCPStore's semantics, under ``prefix`` in a
    :class:`~anyrdzv.LeaseStore`.

    Every key ``K`` is stored at ``prefix + K``. Each method is one or two store round
    trips (``add`` and ``append`` retry a compare-and-swap while others write the key;
    ``multi_get``, ``multi_set`` and ``check`` take one txn per 128 keys). Values are
    ``bytes``; the caller converts and checks the arguments.

    A timeout of ``None`` waits forever; ``0`` only checks. A blocking call always reads
    its keys once, whatever its timeout, so keys that exist are returned; only the wait
    for missing ones is cut short. A wait survives a broken watch: it watches again from
    the revision after the last event, and reads the keys again after a compaction. If
    the store refuses the new watch too, one more read decides, as the store retries it
    within its own timeout: the wait goes on from that read, or the read's
    :class:`~anyrdzv.StoreError` is raised.

    :param store: an entered store
    :param prefix: where the keys live in ``store``; ends with ``/``
    :param guard: made and entered around each wait for missing keys: a context manager
        that cancels the wait (it leaves the block quietly) when waiting on is in vain,
        and yields a :class:`WaitGuard` that then says why; by default none
    :param lease: gives the lease to write every key under (its id), or ``None`` for
        none: the run's lease, so that the keys expire with the run
    :raises TypeError: if ``store`` is not a :class:`~anyrdzv.LeaseStore` instance, or
        ``prefix`` not a ``str``
    :raises ValueError: if ``prefix`` lacks the final ``/``
    """

    def __init__(
        self,
        store: LeaseStore,
        prefix: str,
        *,
        guard: Callable[[], AbstractContextManager[WaitGuard]] | None = None,
        lease: Callable[[], int | None] | None = None,
    ) -> None:
        missing = [name for name in _STORE_METHODS if not callable(getattr(store, name, None))]
        if isinstance(store, type) or missing:
            raise TypeError(
                f"store must be a LeaseStore instance such as EtcdStore, got "
                f"{type_name(store)} {echo(store)}"
            )
        if not check_str("prefix", prefix).endswith("/"):
            raise ValueError(f"prefix must end with '/', got {echo(prefix)}")
        self._store = store
        self._prefix = prefix
        self._guard = guard or _unguarded
        self._lease = lease or _no_lease

    def __repr__(self) -> str:
        return f"TorchKV({self._store!r}, prefix={self._prefix!r})"

    @property
    def store(self) -> LeaseStore:
        """The store the keys live in."""
        return self._store

    @property
    def prefix(self) -> str:
        """Where the keys live in the store: ``prefix + key``."""
        return self._prefix

    @property
    def lease(self) -> Callable[[], int | None]:
        """What gives the lease the keys are written under."""
        return self._lease

    @property
    def guard(self) -> Callable[[], AbstractContextManager[WaitGuard]]:
        """What is entered around each wait for missing keys."""
        return self._guard

    # -- reads and waits -----------------------------------------------------------------

    async def _read(self, keys: list[str]) -> tuple[dict[str, bytes], int]:
        """The values of those of ``keys`` (full) that exist, and the oldest revision
        read at."""
        found: dict[str, bytes] = {}
        revisions: list[int] = []
        for chunk in _chunks(keys):
            result = await self._store.txn([], [Get(key) for key in chunk])
            revisions.append(result.revision)
            for answer in result.results:
                assert isinstance(answer, GetResult)
                found.update((kv.key, kv.value) for kv in answer.kvs)
        return found, min(revisions, default=0)

    async def _wait(self, keys: list[str], timeout: float | None) -> dict[str, bytes]:
        """Wait until every one of ``keys`` (full, unique) exists; return their values.

        :raises WaitTimeout: if some are still missing after ``timeout`` seconds
        :raises WaitEnded: if the guard ended the wait first
        """
        deadline = math.inf if timeout is None else anyio.current_time() + timeout
        found, revision = await self._read(keys)
        if len(found) == len(keys):
            return found
        pauses: Iterator[float] | None = None
        with self._guard() as guard, anyio.move_on_at(deadline):
            while len(found) < len(keys):
                try:
                    revision = await self._follow(keys, found, revision)
                except StoreConnectionError as exc:
                    # The watch broke and the store refused a new one: a read, which
                    # the store retries within its timeout, says whether it is back.
                    pauses = pauses or backoff(0.05, 1.0)
                    pause = next(pauses)
                    logger.warning(
                        "the watch for %d keys could not be made again (%s); reading them "
                        "in %.2f s",
                        len(keys) - len(found),
                        exc,
                        pause,
                    )
                    await delay(pause)
                    found, revision = await self._read(keys)
                else:
                    pauses = None
            return found
        missing = [key for key in keys if key not in found]
        if guard.reason is not None:
            raise WaitEnded(f"the wait for keys {cut(', '.join(missing))} ended: {guard.reason}")
        milliseconds = round((timeout or 0.0) * 1000)
        raise WaitTimeout(f"wait timeout after {milliseconds}ms, keys: {cut(', '.join(missing))}")

    async def _follow(self, keys: list[str], found: dict[str, bytes], revision: int) -> int:
        """Follow the missing ones of ``keys`` from the revision after ``revision``, at
        which ``found`` was read, keeping ``found`` up to date, until all exist, or a
        read after a compaction finds one missing that the watch does not cover; return
        the revision ``found`` is at.

        :raises StoreConnectionError: if the watch broke and could not be made again
        """
        missing = [key for key in keys if key not in found]
        prefix = os.path.commonprefix(missing)
        wanted = set(keys)

        async def resync() -> int:
            fresh, read_at = await self._read(keys)
            found.clear()
            found.update(fresh)
            return read_at

        following = follow(
            self._store,
            prefix,
            start_revision=revision + 1,
            what=f"{prefix!r} for {len(missing)} keys",
            resync=resync,
            retry_for=0.0,
            log=logger,
        )
        async with aclosing(following) as events:
            async for event in events:
                revision = event.revision
                if isinstance(event, Resynced):
                    if any(not key.startswith(prefix) for key in keys if key not in found):
                        return revision
                elif event.key in wanted:
                    if event.type is EventType.PUT:
                        found[event.key] = event.value
                    else:
                        found.pop(event.key, None)
                if len(found) == len(wanted):
                    return revision
        raise AssertionError("follow() ended")  # pragma: no cover - it never does

    async def get(self, key: str, timeout: float | None) -> bytes:
        """Return the value of ``key``, waiting until it exists.

        :param timeout: how long to wait, in seconds; ``None`` for ever
        :raises WaitTimeout: if it did not appear in time
        """
        full = self._prefix + key
        found = await self._wait([full], timeout)
        return found[full]

    async def wait(self, keys: Sequence[str], timeout: float | None) -> None:
        """Wait until every one of ``keys`` exists.

        :param timeout: how long to wait, in seconds; ``None`` for ever, 0 only checks
        :raises WaitTimeout: if some did not appear in time
        """
        await self._wait([self._prefix + key for key in dict.fromkeys(keys)], timeout)

    async def multi_get(self, keys: Sequence[str], timeout: float | None) -> list[bytes]:
        """Return the values of ``keys``, in order, waiting until they all exist.

        :param timeout: how long to wait, in seconds; ``None`` for ever
        :raises WaitTimeout: if some did not appear in time
        """
        full = [self._prefix + key for key in keys]
        found = await self._wait(list(dict.fromkeys(full)), timeout)
        return [found[key] for key in full]

    async def check(self, keys: Sequence[str]) -> bool:
        """Return whether every one of ``keys`` exists, at once."""
        full = [self._prefix + key for key in dict.fromkeys(keys)]
        found, _ = await self._read(full)
        return len(found) == len(full)

    async def num_keys(self) -> int:
        """Return how many keys there are under the prefix."""
        kvs, _ = await self._store.get_prefix_kv(self._prefix)
        return len(kvs)

    # -- writes --------------------------------------------------------------------------

    async def set(self, key: str, value: bytes) -> None:
        """Set ``key`` to ``value``.

        :raises ValueError: if the key and value are over 1.5 MiB
        """
        await self._store.put(self._prefix + key, value, lease=self._lease())

    async def add(self, key: str, amount: int) -> int:
        """Add ``amount`` to the integer at ``key``, atomically, and return the sum; a
        missing key counts as 0. The integer is kept in decimal ASCII.

        :raises ValueError: if the key holds something other than an integer
        """
        # Optimistic: a new counter takes one round trip, a present one two.
        full = self._prefix + key
        value, expected = amount, 0
        while True:
            result = await self._store.compare_and_swap(
                full,
                str(value).encode("ascii"),
                expected_mod_revision=expected,
                lease=self._lease(),
            )
            if result.succeeded:
                return value
            kv = result.kv
            if kv is None:
                value, expected = amount, 0
                continue
            try:
                value = int(kv.value) + amount
            except ValueError:
                raise ValueError(
                    f"add: key {cut(repr(key))} holds {echo(kv.value)}, "
                    "not an integer in decimal ASCII"
                ) from None
            expected = kv.mod_revision
            logger.debug("add on %r met another write; trying again", full)

    async def append(self, key: str, value: bytes) -> None:
        """Append ``value`` to the value of ``key``, atomically; a missing key is created.

        :raises ValueError: if the key and value grow over 1.5 MiB
        """
        full = self._prefix + key
        new, expected = value, 0
        while True:
            result = await self._store.compare_and_swap(
                full, new, expected_mod_revision=expected, lease=self._lease()
            )
            if result.succeeded:
                return
            kv = result.kv
            new, expected = (value, 0) if kv is None else (kv.value + value, kv.mod_revision)

    async def compare_set(self, key: str, expected: bytes, desired: bytes) -> bytes:
        """Set ``key`` to ``desired`` if it holds ``expected``, atomically.

        As TCPStore: a missing key with an empty ``expected`` is set and ``desired``
        returned; a missing key with another ``expected`` is left missing and
        ``expected`` returned; a mismatch returns the current value; a match sets the key
        and returns ``desired``.
        """
        full = self._prefix + key
        while True:
            if not expected:
                result = await self._store.txn(
                    [Compare.absent(full)], [Put(full, desired, lease=self._lease())], [Get(full)]
                )
                if result.succeeded:
                    return desired
                kv = _only_kv(result.results[0])
                if kv is None:
                    continue  # deleted meanwhile
                if kv.value:
                    return kv.value
                # present and empty, which "" matches: compare the value
            result = await self._store.txn(
                [Compare.value(full, "==", expected)],
                [Put(full, desired, lease=self._lease())],
                [Get(full)],
            )
            if result.succeeded:
                return desired
            kv = _only_kv(result.results[0])
            if kv is not None:
                return kv.value
            if expected:
                return expected  # TCPStore's answer for a missing key: not created
            # "" expected, and the key was deleted meanwhile: create it

    async def multi_set(self, keys: Sequence[str], values: Sequence[bytes]) -> None:
        """Set each of ``keys`` to the value at the same place in ``values``, in txns of
        up to 128 keys; a key given twice takes its last value.

        :raises ValueError: if ``keys`` and ``values`` differ in length, or a key and
            value are over 1.5 MiB
        """
        latest = {self._prefix + key: value for key, value in zip(keys, values, strict=True)}
        lease = self._lease()
        puts = [Put(key, value, lease=lease) for key, value in latest.items()]
        for chunk in _put_chunks(puts):
            await self._store.txn([], chunk)

    async def delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed."""
        return await self._store.delete(self._prefix + key)
