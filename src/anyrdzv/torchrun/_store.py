"""A ``torch.distributed.Store`` on a :class:`~anyrdzv.LeaseStore`, for torchrun's agent.

torch calls the store synchronously, from its own threads, through the C++ trampoline
(``PrefixStore`` in front). Each call checks and converts its arguments, then runs the
matching :class:`~anyrdzv.torchrun._kv.TorchKV` method (TCPStore's semantics, with no
torch) as one task in a :class:`LoopThread`, where the async store lives, and waits for
it there, so that a signal interrupts the wait at once and cancels the task.

Errors from below become torch's in one place (:meth:`TorchStore._call`): a
:class:`~anyrdzv.torchrun._kv.WaitTimeout` becomes ``DistStoreError`` with TCPStore's
message, and a :class:`~anyrdzv.torchrun._kv.WaitEnded` (the guard ended the wait) a
``DistStoreError`` that says why; a :class:`~anyrdzv.StoreError` becomes ``DistNetworkError``, as TCPStore
reports a lost server; a :class:`LoopGone` (a forked child, a stopped loop) becomes
``DistError``. Bad arguments raise ``TypeError`` or ``ValueError`` and pass through
unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar, overload

import torch.distributed as dist
from torch._C._distributed_c10d import Store

from .._checks import check_int, check_str, cut, echo, wrong_type
from .._exceptions import StoreError
from ._kv import TorchKV, WaitEnded, WaitGuard, WaitTimeout
from ._loop import LoopGone, LoopThread

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from .._stores._protocol import LeaseStore

__all__ = ("TorchStore",)

_T = TypeVar("_T")


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
    raise wrong_type(name, value, "bytes, bytearray, memoryview or str")


def _check_keys(keys: object) -> list[str]:
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence):
        raise wrong_type("keys", keys, "a list of str")
    return [check_str(f"keys[{index}]", key) for index, key in enumerate(keys)]


def _check_timeout(name: str, timeout: object) -> timedelta:
    if not isinstance(timeout, timedelta):
        raise wrong_type(name, timeout, "a datetime.timedelta")
    if timeout < timedelta(0):
        raise ValueError(f"{name} must not be negative, got {timeout!r}")
    return timeout


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
    :param guard: made and entered around each wait for missing keys, to end it early
        (see :class:`~anyrdzv.torchrun._kv.TorchKV`); by default none
    :param lease: gives the lease to write every key under (the run's), or ``None``
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
        guard: Callable[[], AbstractContextManager[WaitGuard]] | None = None,
        lease: Callable[[], int | None] | None = None,
    ) -> None:
        if not isinstance(loop, LoopThread):
            raise wrong_type("loop", loop, "a LoopThread")
        kv = TorchKV(store, prefix, guard=guard, lease=lease)
        super().__init__()
        self.set_timeout(_check_timeout("timeout", timeout))
        self._loop = loop
        self._kv = kv
        # torch keeps no reference to the Python half of a clone it asks for through a
        # PrefixStore; these do, for as long as this store lives.
        self._clones: list[TorchStore] = []

    def __repr__(self) -> str:
        return f"TorchStore({self._kv.store!r}, prefix={self._kv.prefix!r})"

    @property
    def prefix(self) -> str:
        """Where the keys live in the store: ``prefix + key``."""
        return self._kv.prefix

    # -- the one place where errors from below become torch's ---------------------------

    def _call(self, what: str, func: Callable[..., Awaitable[_T]], *args: object) -> _T:
        try:
            return self._loop.run(func, *args)
        except WaitTimeout as exc:
            raise dist.DistStoreError(str(exc)) from None
        except WaitEnded as exc:
            raise dist.DistStoreError(f"{what}: {exc}") from None
        except StoreError as exc:
            raise dist.DistNetworkError(f"{what} failed on {self._kv.store!r}: {exc}") from exc
        except LoopGone as exc:
            raise dist.DistError(f"{what}: the store's event loop cannot be used: {exc}") from exc

    if TYPE_CHECKING:
        # The binding has this property; torch 2.13's stubs lack it.
        @property
        def timeout(self) -> timedelta:
            """The store timeout: what :meth:`set_timeout` set, here or through a
            ``PrefixStore``."""
            ...

    def _timeout(self) -> float | None:
        """The store timeout now, in seconds; ``None`` for none (a zero timedelta).
        PrefixStore.set_timeout writes it, not through Python: read it at each call."""
        return self.timeout.total_seconds() or None

    # -- torch's Store ------------------------------------------------------------------

    def set(self, key: str, value: str | bytes | bytearray | memoryview) -> None:
        """Set ``key`` to ``value``.

        :param key: the key
        :param value: its value; a ``str`` is stored as UTF-8
        :raises TypeError: if ``key`` is not a ``str``, or ``value`` not bytes or ``str``
        :raises ValueError: if the key and value are over 1.5 MiB
        :raises torch.distributed.DistNetworkError: if the store failed
        """
        self._write("set", self._kv.set, key, value)

    def get(self, key: str) -> bytes:
        """Return the value of ``key``, waiting until it exists, up to the store timeout.

        :param key: the key
        :raises TypeError: if ``key`` is not a ``str``
        :raises torch.distributed.DistStoreError: if it did not appear in time
        :raises torch.distributed.DistNetworkError: if the store failed
        """
        check_str("key", key)
        return self._call(f"get({echo(key)})", self._kv.get, key, self._timeout())

    def add(self, key: str, value: int) -> int:
        """Add ``value`` to the integer at ``key``, atomically, and return the sum.

        A missing key counts as 0, and is created. The integer is kept in decimal ASCII.

        :param key: the key
        :param value: how much to add (may be negative or 0)
        :raises TypeError: if ``key`` is not a ``str``, or ``value`` not an ``int``
        :raises ValueError: if the key holds something other than an integer
        :raises torch.distributed.DistNetworkError: if the store failed
        """
        check_str("key", key)
        check_int("value", value)
        return self._call(f"add({echo(key)})", self._kv.add, key, value)

    def append(self, key: str, value: str | bytes | bytearray | memoryview) -> None:
        """Append ``value`` to the value of ``key``, atomically; a missing key is created.

        :param key: the key
        :param value: the bytes to append; a ``str`` as UTF-8
        :raises TypeError: if ``key`` is not a ``str``, or ``value`` not bytes or ``str``
        :raises ValueError: if the key and value grow over 1.5 MiB
        :raises torch.distributed.DistNetworkError: if the store failed
        """
        self._write("append", self._kv.append, key, value)

    def _write(
        self, name: str, func: Callable[[str, bytes], Awaitable[None]], key: str, value: object
    ) -> None:
        check_str("key", key)
        data = _as_bytes("value", value)
        self._call(f"{name}({echo(key)})", func, key, data)

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
        check_str("key", key)
        expected = _as_bytes("expected_value", expected_value)
        desired = _as_bytes("desired_value", desired_value)
        return self._call(f"compare_set({echo(key)})", self._kv.compare_set, key, expected, desired)

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
        checked = _check_keys(keys)
        seconds = (
            self._timeout()
            if timeout is None
            else _check_timeout("timeout", timeout).total_seconds()
        )
        self._call(f"wait({cut(repr(keys))})", self._kv.wait, checked, seconds)

    def check(self, keys: list[str]) -> bool:
        """Return whether every one of ``keys`` exists, at once.

        :param keys: the keys
        :raises TypeError: if ``keys`` is not a list of ``str``
        :raises torch.distributed.DistNetworkError: if the store failed
        """
        checked = _check_keys(keys)
        return self._call(f"check({cut(repr(keys))})", self._kv.check, checked)

    def multi_get(self, keys: list[str]) -> list[bytes]:
        """Return the values of ``keys``, in order, waiting until they all exist, up to
        the store timeout.

        :param keys: the keys
        :raises TypeError: if ``keys`` is not a list of ``str``
        :raises torch.distributed.DistStoreError: if some did not appear in time
        :raises torch.distributed.DistNetworkError: if the store failed
        """
        checked = _check_keys(keys)
        return self._call(
            f"multi_get({cut(repr(keys))})", self._kv.multi_get, checked, self._timeout()
        )

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
            raise wrong_type("values", values, "a list")
        if len(checked) != len(values):
            raise ValueError(
                f"keys and values must have the same length, got {len(checked)} keys and "
                f"{len(values)} values"
            )
        data = [_as_bytes(f"values[{index}]", value) for index, value in enumerate(values)]
        self._call(f"multi_set({cut(repr(keys))})", self._kv.multi_set, checked, data)

    def deleteKey(self, key: str) -> bool:
        """Delete ``key``; return whether it existed. (torch's trampoline calls this
        name, not ``delete_key``.)

        :param key: the key
        :raises TypeError: if ``key`` is not a ``str``
        :raises torch.distributed.DistNetworkError: if the store failed
        """
        check_str("key", key)
        return self._call(f"delete_key({echo(key)})", self._kv.delete, key)

    def delete_key(self, key: str) -> bool:
        """The same as :meth:`deleteKey`, under the name torch's Python API has."""
        return self.deleteKey(key)

    def getNumKeys(self) -> int:
        """Return how many keys this store holds: those under its prefix. (torch's
        trampoline calls this name, not ``num_keys``.)

        :raises torch.distributed.DistNetworkError: if the store failed
        """
        return self._call("num_keys()", self._kv.num_keys)

    def num_keys(self) -> int:
        """The same as :meth:`getNumKeys`, under the name torch's Python API has."""
        return self.getNumKeys()

    def clone(self) -> TorchStore:
        """Return a new store on the same loop, store, prefix and timeout.

        This store keeps a reference to it, since torch keeps none to the Python half
        of a clone asked for through a ``PrefixStore``.
        """
        twin = TorchStore(
            self._loop,
            self._kv.store,
            self._kv.prefix,
            timeout=self.timeout,
            guard=self._kv.guard,
            lease=self._kv.lease,
        )
        self._clones.append(twin)
        return twin
