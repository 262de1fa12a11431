"""EtcdStore: the :class:`~anyrdzv.LeaseStore` facade over etcd's gateway client, the
keep-alive batcher, the watch and the wire format. It checks arguments, and translates
between the store's model and etcd's requests and answers."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, final

from .._checks import check_int, check_positive
from .._stores._model import (
    CasResult,
    KeyValue,
    Lease,
    check_key,
    check_lease_id,
    check_mod_revision,
    check_optional_lease,
    check_prefix,
    check_put,
    check_ttl,
)
from .._stores._txn import check_txn
from . import _requests, _wire
from ._auth import check_credentials
from ._endpoints import gateway_members, parse_etcd_endpoints
from ._gateway import Gateway
from ._keepalive import KeepAliveBatcher
from ._renew import renew
from ._status import ClusterStatus, cluster_status
from ._watch import watch

if TYPE_CHECKING:
    import ssl as _ssl
    from collections.abc import AsyncGenerator, Callable, Sequence
    from types import TracebackType

    import httpx

    from .._core._endpoint import Endpoint
    from .._stores._model import StoreEvent
    from .._stores._txn import Compare, TxnOp, TxnResult


@final
class EtcdStore:
    """A :class:`LeaseStore` on etcd (3.4+), through its v3 JSON gateway, with httpx.

    httpx runs on anyio, so this works on asyncio, uvloop and trio alike. Use it as an
    async context manager::

        async with EtcdStore("etcd1:2379", timeout=5) as store:
            ...

    Passing faults are retried within ``timeout``: a refused connection, and answers
    that etcd cannot serve a request now (no leader, stopping, unavailable). Opening
    retries them too, so a store opened before etcd is up waits for it; a TLS failure or
    refused credentials fail at once. An expired auth token is renewed. A watch that
    hears nothing for ``watch_idle`` seconds is re-created, so a connection that went
    silent is found out.

    :param endpoint: ``host[:port]``, parsed like torch's endpoints, default port 2379;
        or an ``http://`` or ``https://`` URL, as etcd's own flags take them
    :param ssl: an SSL context for HTTPS; ``None`` means plain HTTP, or, with an
        ``https://`` URL, TLS with the system's CAs (loaded when a store first opens,
        once a process, in a worker thread)
    :param username: the etcd user, when etcd has auth enabled
    :param password: that user's password
    :param timeout: how long etcd may take to answer one request, retries included, in
        seconds; an unreachable store raises :class:`StoreConnectionError` within it.
        Time spent queued behind this process's own requests is not counted, as long
        as etcd keeps answering them.
    :param watch_idle: how long a watch may hear nothing before it is re-created
    :param member_timeout: with several members, how long one member may take to answer
        before a request moves on to the next
    :param transport: the httpx transport to send requests through, as
        ``httpx.AsyncClient(transport=...)`` takes it; ``None`` for the network. An
        ``httpx.MockTransport`` answers as a test says, for the answers a real etcd
        cannot be made to give. The store closes it when it closes.
    :raises ValueError: if the endpoint is malformed, or a time is not positive
    :raises TypeError: if an argument has the wrong type
    """

    def __init__(
        self,
        endpoint: str | Sequence[str] = "localhost:2379",
        *,
        ssl: _ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        watch_idle: float = 10.0,
        member_timeout: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        parsed_members = parse_etcd_endpoints(endpoint, ssl)
        self.endpoints: tuple[Endpoint, ...] = tuple(parsed for parsed, _ in parsed_members)
        self.endpoint: Endpoint = self.endpoints[0]
        check_credentials(username, password)
        self._timeout = check_positive("timeout", timeout)
        self._watch_idle = check_positive("watch_idle", watch_idle)
        self._gateway = Gateway(
            gateway_members(parsed_members),
            ssl=ssl,
            username=username,
            password=password,
            timeout=self._timeout,
            member_timeout=check_positive("member_timeout", member_timeout),
            transport=transport,
        )
        self._batcher: KeepAliveBatcher | None = None

    def __repr__(self) -> str:
        return f"EtcdStore({self._gateway.where!r})"

    @property
    def member(self) -> str:
        """The cluster member that requests go to now, as ``host:port``."""
        return self._gateway.member

    async def cluster_status(self) -> ClusterStatus:
        """Ask every listed member, at once, for its status; once each, no retry.

        The quorum is judged from the listed members: a majority of them must answer,
        with no error, and name the same leader.
        """
        return await cluster_status(self._gateway)

    async def __aenter__(self) -> EtcdStore:
        await self._gateway.open()
        send = functools.partial(renew, self._gateway)
        self._batcher = KeepAliveBatcher(send, timeout=self._timeout, where=self._gateway.where)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        self._batcher = None
        await self._gateway.aclose()

    # -- the LeaseStore protocol ------------------------------------------------------------

    async def grant(self, ttl: int) -> Lease:
        """Grant a lease that lives ``ttl`` seconds unless kept alive.

        etcd may raise a very short TTL to its minimum; the lease says what was granted.
        """
        check_ttl(ttl)
        return await _requests.grant(self._gateway, ttl)

    async def keep_alive(self, lease: Lease | int) -> int:
        """Renew ``lease`` (a :class:`Lease` or its id) and return its remaining TTL.

        Keep-alives from concurrent callers share requests, as etcd's own client shares
        one keep-alive stream: the calls that come within 5 ms ride in one request, and
        the next ones gather while it flies.

        :raises LeaseExpired: if the lease is gone
        :raises TypeError: if ``lease`` is neither a :class:`Lease` nor an ``int``
        """
        lease_id = check_lease_id(lease)
        if self._batcher is None or not self._gateway.is_open:
            raise RuntimeError("EtcdStore is not open: use it as 'async with EtcdStore(...)'")
        return await self._batcher.keep_alive(lease_id)

    async def revoke(self, lease: Lease | int) -> None:
        """Revoke ``lease`` (a :class:`Lease` or its id) now, deleting its keys. A gone
        lease is not an error.

        :raises TypeError: if ``lease`` is neither a :class:`Lease` nor an ``int``
        """
        await _requests.revoke(self._gateway, check_lease_id(lease))

    async def put(self, key: str, value: bytes, *, lease: Lease | int | None = None) -> int:
        """Set ``key`` to ``value``, under ``lease`` (a :class:`Lease` or its id) if given;
        return the new revision.

        :raises LeaseExpired: if ``lease`` is gone
        """
        check_put(key, value)
        return await _requests.put(self._gateway, key, value, check_optional_lease(lease))

    async def get_prefix(self, prefix: str) -> tuple[dict[str, bytes], int]:
        """Return every key under ``prefix`` with its value, and the store revision.

        Keys that are not UTF-8, which no anyrdzv writer makes, are skipped and logged.
        """
        kvs, revision = await self.get_prefix_kv(prefix)
        return {kv.key: kv.value for kv in kvs}, revision

    async def get(self, key: str) -> KeyValue | None:
        """Return ``key`` with its value and revisions, or ``None`` if it is absent."""
        check_key(key)
        return await _requests.get(self._gateway, key)

    async def get_prefix_kv(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Return every key under ``prefix``, sorted by key, and the revision read at.

        Keys that are not UTF-8, which no anyrdzv writer makes, are skipped and logged.
        """
        check_prefix(prefix)
        return await _requests.get_prefix(self._gateway, prefix)

    async def count_prefix(self, prefix: str) -> int:
        """Return how many keys are under ``prefix``: etcd counts them, and sends none."""
        check_prefix(prefix)
        return await _requests.count_prefix(self._gateway, prefix)

    async def delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed. Deleting an absent key changes
        nothing, not even the store revision.

        Not retried after a passing fault: a retry could not tell whether the first try
        deleted the key.

        :raises StoreConnectionError: if etcd could not be reached or did not answer
        """
        check_key(key)
        return await _requests.delete(self._gateway, {"key": _wire.b64_text(key)}) > 0

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``, at one revision; return how many there were.

        Not retried after a passing fault: a retry could not count what the first try
        deleted.

        :raises StoreConnectionError: if etcd could not be reached or did not answer
        """
        check_prefix(prefix)
        return await _requests.delete(self._gateway, _wire.prefix_range(prefix))

    async def compare_and_swap(
        self,
        key: str,
        value: bytes,
        *,
        expected_mod_revision: int,
        lease: Lease | int | None = None,
    ) -> CasResult:
        """Set ``key`` to ``value`` only if its ``mod_revision`` is
        ``expected_mod_revision`` (0: only if the key is absent), atomically.

        One txn, one round trip: it compares, puts, and reads the key back. It is not
        retried after a passing fault, since a retry of a swap that went through would
        fail against its own write: on :class:`StoreConnectionError`, :meth:`get` the
        key to see whether it went through.

        :param lease: the lease to put the key under (a :class:`Lease` or its id), if any
        :return: whether it was written, with the key as written, or as it is now
        :raises LeaseExpired: if the comparison held but ``lease`` is gone; nothing is
            written
        :raises ValueError: if ``expected_mod_revision`` is negative, or the value too large
        :raises StoreConnectionError: if etcd could not be reached or did not answer
        """
        check_put(key, value)
        check_mod_revision("expected_mod_revision", expected_mod_revision)
        lease_id = check_optional_lease(lease)
        return await _requests.compare_and_swap(
            self._gateway, key, value, expected_mod_revision, lease_id
        )

    def watch_prefix(
        self,
        prefix: str,
        *,
        start_revision: int,
        on_open: Callable[[], object] | None = None,
    ) -> AsyncGenerator[StoreEvent, None]:
        """Yield every change under ``prefix`` from ``start_revision`` on, in order; from
        ``start_revision=0``, every change after etcd confirms the watch.

        :param on_open: called each time etcd confirms the watch
        :raises StoreCompacted: if ``start_revision`` has been compacted
        :raises StoreConnectionError: if the stream breaks; resume from the next revision
        :raises ValueError: if ``start_revision`` is negative, or ``prefix`` holds a lone
            surrogate, at once
        :raises TypeError: if an argument has the wrong type, at once
        """
        check_prefix(prefix)
        check_int("start_revision", start_revision, least=0)
        return watch(
            self._gateway,
            prefix,
            start_revision=start_revision,
            on_open=on_open,
            watch_idle=self._watch_idle,
        )

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        """Run a transaction, atomically: if every comparison in ``compare`` holds, run
        the operations of ``success``, else those of ``failure``, in order.

        One etcd txn, one round trip, with etcd's semantics: all the writes of the branch
        that runs happen at one new revision, a :class:`Get` sees the writes before it in
        its branch, and an absent key's version, revisions and lease compare as 0 (a
        comparison of its value is false). Bad arguments are refused before anything is
        sent. It is not retried after a passing fault, since a retry of a txn that went
        through would meet its own writes: on :class:`StoreConnectionError`, read the
        keys to see whether it did.

        Keys that are not UTF-8, which no anyrdzv writer makes, are left out of a
        :class:`GetResult` and logged.

        :param compare: the comparisons, at most 128
        :param success: the operations to run if they all hold, at most 128
        :param failure: the operations to run if one does not, at most 128
        :return: which branch ran, the revision after the txn, and each operation's answer
        :raises LeaseExpired: if a :class:`Put` of the branch that runs is under a gone
            lease; nothing is written
        :raises ValueError: if there are too many comparisons or operations, if a branch
            writes one key twice (two puts, or a put and a delete that covers it), or if
            the txn is over 1.5 MiB
        :raises TypeError: if an argument is not a sequence of the right kind
        :raises StoreConnectionError: if etcd could not be reached or did not answer
        """
        compares, on_success, on_failure = check_txn(compare, success, failure)
        return await _requests.txn(self._gateway, compares, on_success, on_failure)

    async def time_to_live(self, lease: Lease | int) -> int | None:
        """Return the remaining time to live of ``lease``, in whole seconds, as etcd
        counts it; or ``None`` if the lease is gone (expired, revoked or never granted).

        It does not renew the lease.

        :param lease: the lease, or its id (as :attr:`KeyValue.lease` gives it)
        :raises TypeError: if ``lease`` is neither a :class:`Lease` nor an int
        :raises StoreConnectionError: if etcd could not be reached or did not answer
        """
        return await _requests.time_to_live(self._gateway, check_lease_id(lease))


def send_requests_to(store: EtcdStore, member: str) -> None:
    """Send ``store``'s requests to ``member`` from now on: for
    :func:`anyrdzv.testing.use_member`.

    :raises ValueError: if it is not one of the store's members
    """
    store._gateway.members.use(member)
