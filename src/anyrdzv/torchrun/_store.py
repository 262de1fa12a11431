"""A ``torch.distributed.Store`` on a :class:`~anyrdzv.LeaseStore`, for torchrun's agent.

torch calls the store synchronously, from its own threads, through the C++ trampoline
(``PrefixStore`` in front). Each call runs the store operations as one task in a
:class:`LoopThread`, where the async store lives, and waits for it there, so that a
signal interrupts the wait at once and cancels the task.

The semantics are TCPStore's: ``get``, ``wait`` and ``multi_get`` block until their keys
exist, up to the store's timeout, and then raise ``DistStoreError`` with TCPStore's
message; ``add`` keeps decimal ASCII; ``compare_set`` answers TCPStore's four cases. A
wait reads its keys, then watches them from the revision after the read: no polling.

Errors from below become torch's in one place (:meth:`TorchStore._call`): a
:class:`~anyrdzv.StoreError` becomes ``DistNetworkError``, as TCPStore reports a lost
server; a :class:`LoopGone` (a forked child, a stopped loop) becomes ``DistError``.
Bad arguments raise ``TypeError`` or ``ValueError`` and pass through unchanged.
"""

from __future__ import annotations

import logging
import math
import os.path
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar, overload

import anyio
import torch.distributed as dist
from torch._C._distributed_c10d import Store

from .._checks import check_int, check_str, cut, echo, type_name
from .._core._delay import backoff
from .._exceptions import StoreCompacted, StoreConnectionError, StoreError
from .._stores._model import MAX_VALUE_BYTES, EventType
from .._stores._txn import MAX_TXN_OPS, TXN_ITEM_BYTES, Compare, Get, GetResult, Put
from ._loop import LoopGone, LoopThread

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .._stores._model import KeyValue
    from .._stores._protocol import LeaseStore

__all__ = ("TorchStore",)

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# What TorchStore calls on its LeaseStore: checked when it is made.
_STORE_METHODS = (
    "put",
    "get",
    "delete",
    "txn",
    "compare_and_swap",
    "watch_prefix",
    "get_prefix_kv",
)


class _WaitTimeout(Exception):
    """Keys did not all appear in time; :meth:`TorchStore._call` makes it torch's."""


def _as_bytes(name: str, value: object) -> bytes:
    """A value as torch passes it (``bytes`` through C++, ``str`` from Python) as bytes."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"{name} must be encodable as UTF-8, got {echo(value)}: {exc}"
            ) from None
    raise TypeError(
        f"{name} must be bytes, bytearray, memoryview or str, got {type_name(value)} {echo(value)}"
    )


def _check_keys(keys: object) -> list[str]:
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence):
        raise TypeError(f"keys must be a list of str, got {type_name(keys)} {echo(keys)}")
    checked: list[str] = []
    for index, key in enumerate(keys):
        if not isinstance(key, str):
            raise TypeError(f"keys[{index}] must be a str, got {type_name(key)} {echo(key)}")
        checked.append(key)
    return checked


def _check_timeout(name: str, timeout: object) -> timedelta:
    if not isinstance(timeout, timedelta):
        raise TypeError(
            f"{name} must be a datetime.timedelta, got {type_name(timeout)} {echo(timeout)}"
        )
    if timeout < timedelta(0):
        raise ValueError(f"{name} must not be negative, got {timeout!r}")
    return timeout


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


class TorchStore(Store):
    """A ``torch.distributed.Store`` whose keys live in a :class:`~anyrdzv.LeaseStore`.

    Every key ``K`` is stored at ``prefix + K``. Each method is one or two store round
    trips (``add`` and ``append`` retry a compare-and-swap while others write the key;
    ``multi_get``, ``multi_set`` and ``check`` take one txn per 128 keys). Values
    may be ``bytes``, ``bytearray``, ``memoryview`` or ``str`` (stored as UTF-8);
    reads return ``bytes``.

    The timeout is the Store's own (:meth:`set_timeout`, the ``timeout`` property, and
    through a ``PrefixStore`` too), read at each call. As in TCPStore, a zero store
    timeout means no timeout, whereas ``wait(keys, timedelta(0))`` only checks. A
    blocking call always reads its keys once, whatever its timeout, so keys that exist
    are returned; only the wait for missing ones is cut short.

    Keep a reference to this object for as long as a ``PrefixStore`` wraps it: torch's
    C++ side does not keep the Python half alive.

    :param loop: the loop thread where ``store`` lives
    :param store: an entered store, used only in ``loop``
    :param prefix: where the keys live in ``store``; ends with ``/``
    :param timeout: the store timeout; zero waits forever
    :raises TypeError: if an argument has the wrong type
    :raises ValueError: if ``prefix`` is empty or lacks the final ``/``, or ``timeout``
        is negative
    """

    def __init__(
        self,
        loop: LoopThread,
        store: LeaseStore,
        prefix: str,
        *,
        timeout: timedelta = timedelta(seconds=300),
    ) -> None:
        if not isinstance(loop, LoopThread):
            raise TypeError(f"loop must be a LoopThread, got {type_name(loop)} {echo(loop)}")
        missing = [name for name in _STORE_METHODS if not callable(getattr(store, name, None))]
        if isinstance(store, type) or missing:
            raise TypeError(
                f"store must be a LeaseStore instance such as EtcdStore, got "
                f"{type_name(store)} {echo(store)}"
            )
        check_str("prefix", prefix)
        if not prefix.endswith("/"):
            raise ValueError(f"prefix must end with '/', got {echo(prefix)}")
        super().__init__()
        self.set_timeout(_check_timeout("timeout", timeout))
        self._loop = loop
        self._store = store
        self._prefix = prefix
        # torch keeps no reference to the Python half of a clone it asks for through a
        # PrefixStore; these do, for as long as this store lives.
        self._clones: list[TorchStore] = []

    def __repr__(self) -> str:
        return f"TorchStore({self._store!r}, prefix={self._prefix!r})"

    @property
    def prefix(self) -> str:
        """Where the keys live in the store: ``prefix + key``."""
        return self._prefix

    # -- the one place where errors from below become torch's ---------------------------

    def _call(self, what: str, func: Callable[..., Awaitable[_T]], *args: object) -> _T:
        try:
            return self._loop.run(func, *args)
        except _WaitTimeout as exc:
            raise dist.DistStoreError(str(exc)) from None
        except StoreError as exc:
            raise dist.DistNetworkError(f"{what} failed on {self._store!r}: {exc}") from exc
        except LoopGone as exc:
            raise dist.DistError(f"{what}: the store's event loop cannot be used: {exc}") from exc

    if TYPE_CHECKING:
        # The binding has this property; torch 2.13's stubs lack it.
        @property
        def timeout(self) -> timedelta:
            """The store timeout: what :meth:`set_timeout` set, here or through a
            ``PrefixStore``."""
            ...

    def _timedelta(self) -> timedelta:
        """The store timeout now: PrefixStore.set_timeout writes it, not through Python."""
        return self.timeout

    def _timeout(self) -> float | None:
        """The store timeout now, in seconds; ``None`` for none (a zero timedelta)."""
        return self._timedelta().total_seconds() or None

    def _key(self, key: object) -> str:
        return self._prefix + check_str("key", key)

    # -- async parts, run in the loop ---------------------------------------------------

    async def _read(self, keys: list[str]) -> tuple[dict[str, bytes], int]:
        """The values of those of ``keys`` that exist, and the oldest revision read at."""
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
        """Wait until every key exists; return their values.

        :raises _WaitTimeout: if some are still missing after ``timeout`` seconds
        """
        deadline = math.inf if timeout is None else anyio.current_time() + timeout
        found, revision = await self._read(keys)
        missing = [key for key in keys if key not in found]
        if not missing:
            return found
        wanted = set(keys)
        with anyio.move_on_at(deadline):
            pauses: Iterator[float] | None = None
            while True:
                prefix = os.path.commonprefix(missing)
                try:
                    watch = self._store.watch_prefix(prefix, start_revision=revision + 1)
                    async with aclosing(watch) as events:
                        async for event in events:
                            if event.key not in wanted:
                                continue
                            if event.type is EventType.PUT:
                                found[event.key] = event.value
                            else:
                                found.pop(event.key, None)
                            if len(found) == len(wanted):
                                return found
                    cause = "the watch ended"
                except (StoreConnectionError, StoreCompacted) as exc:
                    cause = str(exc)
                pauses = pauses or backoff(0.05, 1.0)
                pause = next(pauses)
                logger.warning(
                    "the watch on %r for %d keys broke; reading them again in %.2f s: %s",
                    prefix,
                    len(wanted) - len(found),
                    pause,
                    cause,
                )
                await anyio.sleep(pause)
                found, revision = await self._read(keys)
                missing = [key for key in keys if key not in found]
                if not missing:
                    return found
        missing = [key for key in keys if key not in found]
        milliseconds = round((timeout or 0.0) * 1000)
        raise _WaitTimeout(f"wait timeout after {milliseconds}ms, keys: {cut(', '.join(missing))}")

    async def _add(self, key: str, amount: int) -> int:
        # Optimistic: a new counter takes one round trip, a present one two.
        value, expected = amount, 0
        while True:
            result = await self._store.compare_and_swap(
                key, str(value).encode("ascii"), expected_mod_revision=expected
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
                    f"add: key {cut(repr(key[len(self._prefix) :]))} holds "
                    f"{echo(kv.value)}, not an integer in decimal ASCII"
                ) from None
            expected = kv.mod_revision
            logger.debug("add on %r met another write; trying again", key)

    async def _append(self, key: str, value: bytes) -> None:
        new, expected = value, 0
        while True:
            result = await self._store.compare_and_swap(key, new, expected_mod_revision=expected)
            if result.succeeded:
                return
            kv = result.kv
            new, expected = (value, 0) if kv is None else (kv.value + value, kv.mod_revision)

    async def _compare_set(self, key: str, expected: bytes, desired: bytes) -> bytes:
        while True:
            if not expected:
                result = await self._store.txn(
                    [Compare.absent(key)], [Put(key, desired)], [Get(key)]
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
                [Compare.value(key, "==", expected)], [Put(key, desired)], [Get(key)]
            )
            if result.succeeded:
                return desired
            kv = _only_kv(result.results[0])
            if kv is not None:
                return kv.value
            if expected:
                return expected  # TCPStore's answer for a missing key: not created
            # "" expected, and the key was deleted meanwhile: create it

    async def _multi_set(self, puts: list[Put]) -> None:
        for chunk in _put_chunks(puts):
            await self._store.txn([], chunk)

    async def _num_keys(self) -> int:
        kvs, _ = await self._store.get_prefix_kv(self._prefix)
        return len(kvs)

    # -- torch's Store ------------------------------------------------------------------

    def set(self, key: str, value: str | bytes | bytearray | memoryview) -> None:
        """Set ``key`` to ``value``.

        :param key: the key
        :param value: its value; a ``str`` is stored as UTF-8
        :raises TypeError: if ``key`` is not a ``str``, or ``value`` not bytes or ``str``
        :raises ValueError: if the key and value are over 1.5 MiB
        :raises torch.distributed.DistNetworkError: if the store failed
        """
        full = self._key(key)
        data = _as_bytes("value", value)
        self._call(f"set({echo(key)})", self._store.put, full, data)

    def get(self, key: str) -> bytes:
        """Return the value of ``key``, waiting until it exists, up to the store timeout.

        :param key: the key
        :raises TypeError: if ``key`` is not a ``str``
        :raises torch.distributed.DistStoreError: if it did not appear in time
        :raises torch.distributed.DistNetworkError: if the store failed
        """
        full = self._key(key)
        found = self._call(f"get({echo(key)})", self._wait, [full], self._timeout())
        return found[full]

    def add(self, key: str, value: int) -> int:
        """Add ``value`` to the integer at ``key``, atomically, and return the sum.

        A missing key counts as 0, and is created. The integer is kept in decimal ASCII.

        :param key: the key
        :param value: how much to add (may be negative or 0)
        :raises TypeError: if ``key`` is not a ``str``, or ``value`` not an ``int``
        :raises ValueError: if the key holds something other than an integer
        :raises torch.distributed.DistNetworkError: if the store failed
        """
        full = self._key(key)
        check_int("value", value)
        return self._call(f"add({echo(key)})", self._add, full, value)

    def append(self, key: str, value: str | bytes | bytearray | memoryview) -> None:
        """Append ``value`` to the value of ``key``, atomically; a missing key is created.

        :param key: the key
        :param value: the bytes to append; a ``str`` as UTF-8
        :raises TypeError: if ``key`` is not a ``str``, or ``value`` not bytes or ``str``
        :raises ValueError: if the key and value grow over 1.5 MiB
        :raises torch.distributed.DistNetworkError: if the store failed
        """
        full = self._key(key)
        data = _as_bytes("value", value)
        self._call(f"append({echo(key)})", self._append, full, data)

    def compare_set(
        self,
        key: str,
        expected_value: str | bytes | bytearray | memoryview,
        desired_value: str | bytes | bytearray | memoryview,
    ) -> bytes:
        """Set ``key`` to ``desired_value`` if it holds ``expected_value``, atomically.

        As TCPStore: a missing key with an empty ``expected_value`` is set and
        ``desired_value`` returned; a missing key with another ``expected_value`` is
        left missing and ``expected_value`` returned; a mismatch returns the current
        value; a match sets the key and returns ``desired_value``.

        :param key: the key
        :param expected_value: the value to compare with; empty also matches a missing key
        :param desired_value: the new value
        :raises TypeError: if an argument has the wrong type
        :raises torch.distributed.DistNetworkError: if the store failed
        """
        full = self._key(key)
        expected = _as_bytes("expected_value", expected_value)
        desired = _as_bytes("desired_value", desired_value)
        return self._call(f"compare_set({echo(key)})", self._compare_set, full, expected, desired)

    @overload
    def wait(self, keys: list[str]) -> None: ...

    @overload
    def wait(self, keys: list[str], timeout: timedelta) -> None: ...

    def wait(self, keys: list[str], timeout: timedelta | None = None) -> None:
        """Wait until every one of ``keys`` exists.

        :param keys: the keys
        :param timeout: how long to wait; by default the store timeout (where zero means
            forever); an explicit zero only checks
        :raises TypeError: if ``keys`` is not a list of ``str``, or ``timeout`` not a
            ``timedelta``
        :raises ValueError: if ``timeout`` is negative
        :raises torch.distributed.DistStoreError: if some did not appear in time
        :raises torch.distributed.DistNetworkError: if the store failed
        """
        full = [self._prefix + key for key in dict.fromkeys(_check_keys(keys))]
        seconds = (
            self._timeout()
            if timeout is None
            else _check_timeout("timeout", timeout).total_seconds()
        )
        self._call(f"wait({cut(repr(keys))})", self._wait, full, seconds)

    def check(self, keys: list[str]) -> bool:
        """Return whether every one of ``keys`` exists, at once.

        :param keys: the keys
        :raises TypeError: if ``keys`` is not a list of ``str``
        :raises torch.distributed.DistNetworkError: if the store failed
        """
        full = [self._prefix + key for key in dict.fromkeys(_check_keys(keys))]
        found, _ = self._call(f"check({cut(repr(keys))})", self._read, full)
        return len(found) == len(full)

    def multi_get(self, keys: list[str]) -> list[bytes]:
        """Return the values of ``keys``, in order, waiting until they all exist, up to
        the store timeout.

        :param keys: the keys
        :raises TypeError: if ``keys`` is not a list of ``str``
        :raises torch.distributed.DistStoreError: if some did not appear in time
        :raises torch.distributed.DistNetworkError: if the store failed
        """
        full = [self._prefix + key for key in _check_keys(keys)]
        unique = list(dict.fromkeys(full))
        found = self._call(f"multi_get({cut(repr(keys))})", self._wait, unique, self._timeout())
        return [found[key] for key in full]

    def multi_set(
        self, keys: list[str], values: Sequence[str | bytes | bytearray | memoryview]
    ) -> None:
        """Set each of ``keys`` to the value at the same place in ``values``.

        Up to 128 keys are set at once (one etcd txn); more take one txn per 128. A key
        given twice takes its last value.

        :param keys: the keys
        :param values: their values
        :raises TypeError: if an argument has the wrong type
        :raises ValueError: if ``keys`` and ``values`` differ in length, or a key and
            value are over 1.5 MiB
        :raises torch.distributed.DistNetworkError: if the store failed
        """
        checked = _check_keys(keys)
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise TypeError(f"values must be a list, got {type_name(values)} {echo(values)}")
        if len(checked) != len(values):
            raise ValueError(
                f"keys and values must have the same length, got {len(checked)} keys and "
                f"{len(values)} values"
            )
        latest = {
            self._prefix + key: _as_bytes(f"values[{index}]", value)
            for index, (key, value) in enumerate(zip(checked, values, strict=True))
        }
        puts = [Put(key, value) for key, value in latest.items()]
        self._call(f"multi_set({cut(repr(keys))})", self._multi_set, puts)

    def deleteKey(self, key: str) -> bool:
        """Delete ``key``; return whether it existed. (torch's trampoline calls this
        name, not ``delete_key``.)

        :param key: the key
        :raises TypeError: if ``key`` is not a ``str``
        :raises torch.distributed.DistNetworkError: if the store failed
        """
        full = self._key(key)
        return self._call(f"delete_key({echo(key)})", self._store.delete, full)

    def delete_key(self, key: str) -> bool:
        """The same as :meth:`deleteKey`, under the name torch's Python API has."""
        return self.deleteKey(key)

    def getNumKeys(self) -> int:
        """Return how many keys this store holds: those under its prefix. (torch's
        trampoline calls this name, not ``num_keys``.)

        :raises torch.distributed.DistNetworkError: if the store failed
        """
        return self._call("num_keys()", self._num_keys)

    def num_keys(self) -> int:
        """The same as :meth:`getNumKeys`, under the name torch's Python API has."""
        return self.getNumKeys()

    def clone(self) -> TorchStore:
        """Return a new store on the same loop, store, prefix and timeout.

        This store keeps a reference to it, since torch keeps none to the Python half
        of a clone asked for through a ``PrefixStore``.
        """
        twin = TorchStore(self._loop, self._store, self._prefix, timeout=self._timedelta())
        self._clones.append(twin)
        return twin
