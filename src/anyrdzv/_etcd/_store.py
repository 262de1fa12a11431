"""EtcdStore: the LeaseStore facade over etcd's gateway client, keep-alive batcher and
wire format."""

from __future__ import annotations

import logging
import ssl as _ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

import anyio
import httpx

from .._checks import check_positive, check_str, echo, type_name, wrong_type
from .._core._delay import backoff
from .._core._endpoint import Endpoint, parse_rendezvous_endpoint
from .._exceptions import LeaseExpired, StoreCompacted, StoreConnectionError, StoreError
from .._stores._model import (
    CasResult,
    KeyValue,
    Lease,
    StoreEvent,
    check_key,
    check_lease_id,
    check_mod_revision,
    check_put,
    check_ttl,
)
from .._stores._txn import (
    Compare,
    DeleteResult,
    Get,
    GetResult,
    Put,
    PutResult,
    TxnOp,
    TxnOpResult,
    TxnResult,
    check_txn,
)
from . import _wire
from ._gateway import Gateway, WatchConnection
from ._keepalive import KeepAliveBatcher

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Iterator
    from types import TracebackType

logger = logging.getLogger(__name__)

ETCD_DEFAULT_PORT = 2379


def parse_etcd_endpoint(
    endpoint: object, ssl: object
) -> tuple[Endpoint, str, _ssl.SSLContext | None]:
    """Read ``host[:port]`` or an ``http(s)://host[:port]`` URL; return the endpoint, the
    scheme and the SSL context to use.

    :raises ValueError: if the endpoint is malformed, or says plain HTTP beside ``ssl``
    :raises TypeError: if an argument has the wrong type
    """
    text = check_str("endpoint", endpoint).strip()
    if ssl is not None and not isinstance(ssl, _ssl.SSLContext):
        raise TypeError(f"ssl must be an ssl.SSLContext or None, got {type_name(ssl)}")
    scheme = "https" if ssl is not None else "http"
    if "://" in text:
        given, _, rest = text.partition("://")
        given = given.lower()
        if given not in ("http", "https"):
            raise ValueError(
                f"endpoint must be host[:port] or an http:// or https:// URL, got {echo(text)}"
            )
        rest = rest.removesuffix("/")
        if "/" in rest or "?" in rest or "#" in rest:
            raise ValueError(f"endpoint must be a URL with no path, got {echo(text)}")
        if given == "http" and ssl is not None:
            raise ValueError(
                f"endpoint {echo(text)} says plain HTTP, but ssl= was given: "
                "use https://, or host:port"
            )
        if given == "https" and ssl is None:
            ssl = _ssl.create_default_context()  # the system's CAs
        scheme = given
        text = rest
    parsed = parse_rendezvous_endpoint(text, ETCD_DEFAULT_PORT)
    host = parsed.host
    if ":" not in host and not host.replace(".", "").isdigit():
        # A name must be one that DNS can carry; httpx would fail on it later, raw.
        try:
            encoded = host.encode("idna")
        except UnicodeError:
            encoded = b""
        if not encoded or len(encoded) > 253:
            raise ValueError(f"endpoint host {echo(host)} is not a valid host name")
    return parsed, scheme, ssl


@dataclass(frozen=True)
class MemberStatus:
    """What one etcd member says of itself, as :meth:`EtcdStore.cluster_status` asks.

    :ivar endpoint: the member, as ``host:port``
    :ivar reachable: whether it answered
    :ivar latency: how long its answer took, in seconds (``None`` if none came)
    :ivar version: its etcd version
    :ivar member_id: its id in the cluster
    :ivar leader_id: the id of the leader it knows, or ``None`` if it knows none
    :ivar is_leader: whether it is the leader
    :ivar raft_term: its raft term
    :ivar db_size: the size of its database, in bytes
    :ivar errors: the alarms and errors it reports (``etcdserver: no leader``, ...)
    :ivar error: why it did not answer, if it did not

    .. versionadded:: 0.2
    """

    endpoint: str
    reachable: bool
    latency: float | None = None
    version: str | None = None
    member_id: int | None = None
    leader_id: int | None = None
    is_leader: bool = False
    raft_term: int | None = None
    db_size: int | None = None
    errors: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class ClusterStatus:
    """Every listed member's :class:`MemberStatus`, and whether they have a quorum.

    :ivar members: each member's status, in the order they were listed
    :ivar quorum: whether a majority of the listed members answer and name one leader
    :ivar leader: the leader's endpoint, if a listed member leads

    .. versionadded:: 0.2
    """

    members: tuple[MemberStatus, ...]
    quorum: bool
    leader: str | None


def parse_etcd_endpoints(
    endpoints: object, ssl: object
) -> list[tuple[Endpoint, str, _ssl.SSLContext | None]]:
    """Read a cluster's members: a comma-separated ``str``, or a sequence of ``str``,
    each as :func:`parse_etcd_endpoint` reads one.

    :raises ValueError: if there is no member, one is malformed, or one is listed twice
    :raises TypeError: if an argument has the wrong type
    """
    if isinstance(endpoints, str):
        items = endpoints.split(",") if "," in endpoints else [endpoints]
    elif isinstance(endpoints, Sequence) and not isinstance(endpoints, bytes | bytearray):
        items = list(endpoints)
        if not items:
            raise ValueError("endpoint must name at least one etcd member, got an empty list")
        for item in items:
            if not isinstance(item, str):
                raise TypeError(
                    f"{wrong_type('endpoint', item, 'a str or a sequence of str')} in the sequence"
                )
    else:
        raise wrong_type("endpoint", endpoints, "a str or a sequence of str")
    parsed: list[tuple[Endpoint, str, _ssl.SSLContext | None]] = []
    seen: dict[tuple[str, int], str] = {}
    for index, item in enumerate(items):
        if not item.strip():
            raise ValueError(
                f"endpoint has an empty member (number {index + 1}) in {echo(endpoints)}"
            )
        try:
            member = parse_etcd_endpoint(item, ssl)
        except ValueError as exc:
            if len(items) == 1:
                raise
            raise ValueError(f"etcd member {echo(item.strip())} in the list: {exc}") from None
        where = (member[0].host.lower(), member[0].port)
        if where in seen:
            raise ValueError(
                f"endpoint lists etcd member {echo(item.strip())} twice "
                f"(as {echo(seen[where])} before)"
            )
        seen[where] = item.strip()
        parsed.append(member)
    return parsed


@final
class EtcdStore:
    """A :class:`LeaseStore` on etcd (3.4+), through its v3 JSON gateway, with httpx.

    httpx runs on anyio, so this works on asyncio, uvloop and trio alike. Use it as an
    async context manager::

        async with EtcdStore("etcd1:2379", timeout=5) as store:
            ...

    Passing faults are retried within ``timeout``: a refused connection, and answers
    that etcd cannot serve a request now (no leader, stopping, unavailable). An expired
    auth token is renewed. A watch that hears nothing for ``watch_idle`` seconds is
    re-created, so a connection that went silent is found out.

    :param endpoint: ``host[:port]``, parsed like torch's endpoints, default port 2379;
        or an ``http://`` or ``https://`` URL, as etcd's own flags take them
    :param ssl: an SSL context for HTTPS; ``None`` means plain HTTP, or, with an
        ``https://`` URL, TLS with the system's CAs
    :param username: the etcd user, when etcd has auth enabled
    :param password: that user's password
    :param timeout: how long etcd may take to answer one request, retries included, in
        seconds; an unreachable store raises :class:`StoreConnectionError` within it.
        Time spent queued behind this process's own requests is not counted, as long
        as etcd keeps answering them.
    :param watch_idle: how long a watch may hear nothing before it is re-created
    :raises ValueError: if the endpoint is malformed, or a time is not positive
    :raises TypeError: if an argument has the wrong type

    .. versionchanged:: 0.2
       URLs, ``watch_idle``, retries and token renewal.
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
    ) -> None:
        parsed_members = parse_etcd_endpoints(endpoint, ssl)
        self.endpoints: tuple[Endpoint, ...] = tuple(parsed for parsed, _, _ in parsed_members)
        self.endpoint: Endpoint = self.endpoints[0]
        if username is not None:
            check_str("username", username)
        if password is not None:
            check_str("password", password)
        if (username is None) != (password is None):
            raise ValueError("username and password go together: give both or neither")
        self._timeout = check_positive("timeout", timeout)
        self._watch_idle = check_positive("watch_idle", watch_idle)
        check_positive("member_timeout", member_timeout)
        context = ssl
        members: list[tuple[str, str]] = []
        for parsed, scheme, member_context in parsed_members:
            context = context or member_context
            host = parsed.host
            if ":" in host:
                host = f"[{host.replace('%', '%25')}]"
            base_url = f"{scheme}://{host}:{parsed.port}"
            try:
                httpx.URL(base_url)
            except httpx.InvalidURL as exc:
                raise ValueError(
                    f"endpoint {echo(str(parsed))} is not a valid URL: {exc}"
                ) from None
            members.append((base_url, str(parsed)))
        self._gateway = Gateway(
            members,
            ",".join(where for _, where in members),
            ssl=context,
            username=username,
            password=password,
            timeout=self._timeout,
            member_timeout=member_timeout,
        )
        self._batcher: KeepAliveBatcher | None = None

    def __repr__(self) -> str:
        return f"EtcdStore({self._gateway.where!r})"

    @property
    def member(self) -> str:
        """The cluster member that requests go to now, as ``host:port``.

        .. versionadded:: 0.2
        """
        return self._gateway.member

    async def cluster_status(self) -> ClusterStatus:
        """Ask every listed member, at once, for its status; once each, no retry.

        The quorum is judged from the listed members: a majority of them must answer,
        with no error, and name the same leader.

        .. versionadded:: 0.2
        """
        gateway = self._gateway
        gateway.require_open()
        found: dict[str, MemberStatus] = {}
        path = "/v3/maintenance/status"

        async def ask(where: str) -> None:
            started = anyio.current_time()
            try:
                body = await gateway.call_member(where, path, {})
                raw = _wire.status(path, body)
            except StoreError as exc:
                found[where] = MemberStatus(where, reachable=False, error=str(exc))
                return
            found[where] = MemberStatus(
                where,
                reachable=True,
                latency=anyio.current_time() - started,
                version=raw.version or None,
                member_id=raw.member_id,
                leader_id=raw.leader or None,
                is_leader=raw.leader != 0 and raw.leader == raw.member_id,
                raft_term=raw.raft_term,
                db_size=raw.db_size,
                errors=raw.errors,
            )

        async with anyio.create_task_group() as tg:
            for where in gateway.members:
                tg.start_soon(ask, where)
        statuses = tuple(found[where] for where in gateway.members)
        votes: dict[int, int] = {}
        for member in statuses:
            if member.reachable and member.leader_id is not None and not member.errors:
                votes[member.leader_id] = votes.get(member.leader_id, 0) + 1
        majority = len(statuses) // 2 + 1
        quorum = any(count >= majority for count in votes.values())
        leader = next((m.endpoint for m in statuses if m.is_leader), None)
        return ClusterStatus(statuses, quorum, leader)

    async def __aenter__(self) -> EtcdStore:
        await self._gateway.open()
        self._batcher = KeepAliveBatcher(
            self._gateway.renew, timeout=self._timeout, where=self._gateway.where
        )
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

    def _key(self, raw: bytes, where: str) -> str | None:
        """A key as text, or ``None`` (logged) for a foreign key that is not UTF-8."""
        try:
            return raw.decode()
        except UnicodeDecodeError:
            logger.warning(
                "skipping a key in %s from etcd at %s that is not UTF-8: %s",
                where,
                self._gateway.where,
                echo(raw),
            )
            return None

    @staticmethod
    def _key_value(raw: _wire.RawKeyValue, key: str) -> KeyValue:
        return KeyValue(
            key,
            raw.value,
            raw.create_revision,
            raw.mod_revision,
            raw.version,
            raw.lease or None,
        )

    # -- the LeaseStore protocol ------------------------------------------------------------

    async def grant(self, ttl: int) -> Lease:
        """Grant a lease that lives ``ttl`` seconds unless kept alive.

        etcd may raise a very short TTL to its minimum; the lease says what was granted.
        """
        check_ttl(ttl)
        path = "/v3/lease/grant"
        body = await self._gateway.call(path, {"TTL": str(ttl)})
        lease_id, granted = _wire.grant(path, body, ttl)
        return Lease(lease_id, granted)

    async def keep_alive(self, lease: Lease) -> int:
        """Renew ``lease`` and return its remaining TTL.

        Keep-alives from concurrent callers share requests, as etcd's own client shares
        one keep-alive stream: the calls that come within 5 ms ride in one request, and
        the next ones gather while it flies.

        :raises LeaseExpired: if the lease is gone
        """
        if self._batcher is None or not self._gateway.is_open:
            raise RuntimeError("EtcdStore is not open: use it as 'async with EtcdStore(...)'")
        return await self._batcher.keep_alive(lease.id)

    async def revoke(self, lease: Lease) -> None:
        """Revoke ``lease`` now, deleting its keys. A gone lease is not an error."""
        try:
            await self._gateway.call("/v3/lease/revoke", {"ID": str(lease.id)}, urgent=True)
        except LeaseExpired:
            pass

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        """Set ``key`` to ``value``, under ``lease`` if given; return the new revision.

        :raises LeaseExpired: if ``lease`` is gone
        """
        check_put(key, value)
        path = "/v3/kv/put"
        payload: dict[str, Any] = {"key": _wire.b64_text(key), "value": _wire.b64(value)}
        if lease is not None:
            payload["lease"] = str(lease.id)
        # A put under a lease is a member joining: its lease is already ticking.
        answer = await self._gateway.call(path, payload, urgent=lease is not None)
        return _wire.revision(path, answer)

    async def get_prefix(self, prefix: str) -> tuple[dict[str, bytes], int]:
        """Return every key under ``prefix`` with its value, and the store revision.

        Keys that are not UTF-8, which no anyrdzv writer makes, are skipped and logged.
        """
        check_str("prefix", prefix)
        path = "/v3/kv/range"
        body = await self._gateway.call(
            path, {"key": _wire.prefix_start(prefix), "range_end": _wire.prefix_end(prefix)}
        )
        kvs, revision = _wire.range_result(path, body)
        found: dict[str, bytes] = {}
        for kv in kvs:
            key = self._key(kv.key, prefix)
            if key is not None:
                found[key] = kv.value
        return found, revision

    async def get(self, key: str) -> KeyValue | None:
        """Return ``key`` with its value and revisions, or ``None`` if it is absent.

        .. versionadded:: 0.2
        """
        check_key(key)
        path = "/v3/kv/range"
        body = await self._gateway.call(path, {"key": _wire.b64_text(key)})
        kvs, _ = _wire.range_result(path, body)
        raw_key = key.encode()
        for kv in kvs:
            if kv.key == raw_key:
                return self._key_value(kv, key)
        return None

    async def get_prefix_kv(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Return every key under ``prefix``, sorted by key, and the revision read at.

        Keys that are not UTF-8, which no anyrdzv writer makes, are skipped and logged.

        .. versionadded:: 0.2
        """
        check_str("prefix", prefix)
        path = "/v3/kv/range"
        body = await self._gateway.call(
            path, {"key": _wire.prefix_start(prefix), "range_end": _wire.prefix_end(prefix)}
        )
        kvs, revision = _wire.range_result(path, body)
        found: list[KeyValue] = []
        for kv in sorted(kvs, key=lambda kv: kv.key):
            key = self._key(kv.key, prefix)
            if key is not None:
                found.append(self._key_value(kv, key))
        return found, revision

    async def delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed. Deleting an absent key changes
        nothing, not even the store revision.

        Not retried after a passing fault: a retry could not tell whether the first try
        deleted the key.

        :raises StoreConnectionError: if etcd could not be reached or did not answer

        .. versionadded:: 0.2
        """
        check_key(key)
        path = "/v3/kv/deleterange"
        body = await self._gateway.call(path, {"key": _wire.b64_text(key)}, retry=False)
        count, _ = _wire.deleted(path, body)
        return count > 0

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``, at one revision; return how many there were.

        Not retried after a passing fault: a retry could not count what the first try
        deleted.

        :raises StoreConnectionError: if etcd could not be reached or did not answer

        .. versionadded:: 0.2
        """
        check_str("prefix", prefix)
        path = "/v3/kv/deleterange"
        body = await self._gateway.call(
            path,
            {"key": _wire.prefix_start(prefix), "range_end": _wire.prefix_end(prefix)},
            retry=False,
        )
        count, _ = _wire.deleted(path, body)
        return count

    async def compare_and_swap(
        self,
        key: str,
        value: bytes,
        *,
        expected_mod_revision: int,
        lease: Lease | None = None,
    ) -> CasResult:
        """Set ``key`` to ``value`` only if its ``mod_revision`` is
        ``expected_mod_revision`` (0: only if the key is absent), atomically.

        One txn, one round trip: it compares, puts, and reads the key back. It is not
        retried after a passing fault, since a retry of a swap that went through would
        fail against its own write: on :class:`StoreConnectionError`, :meth:`get` the
        key to see whether it went through.

        :param lease: the lease to put the key under, if any
        :return: whether it was written, with the key as written, or as it is now
        :raises LeaseExpired: if the comparison held but ``lease`` is gone; nothing is
            written
        :raises ValueError: if ``expected_mod_revision`` is negative, or the value too large
        :raises StoreConnectionError: if etcd could not be reached or did not answer

        .. versionadded:: 0.2
        """
        check_put(key, value)
        check_mod_revision("expected_mod_revision", expected_mod_revision)
        path = "/v3/kv/txn"
        request = _wire.compare_and_swap_request(
            key, value, expected_mod_revision, None if lease is None else lease.id
        )
        body = await self._gateway.call(path, request, retry=False, urgent=lease is not None)
        succeeded, raw = _wire.compare_and_swap_result(path, body, key)
        return CasResult(succeeded, None if raw is None else self._key_value(raw, key))

    async def watch_prefix(
        self,
        prefix: str,
        *,
        start_revision: int,
        on_open: Callable[[], object] | None = None,
    ) -> AsyncGenerator[StoreEvent, None]:
        """Yield every change under ``prefix`` from ``start_revision`` on, in order.

        :param on_open: called each time etcd confirms the watch
        :raises StoreCompacted: if ``start_revision`` has been compacted
        :raises StoreConnectionError: if the stream breaks; resume from the next revision
        """
        check_str("prefix", prefix)
        gateway = self._gateway
        next_revision = start_revision
        renewed = False
        failing_since: float | None = None  # the first failure since the watch last opened
        pauses: Iterator[float] | None = None
        while True:
            request = {
                "create_request": {
                    "key": _wire.prefix_start(prefix),
                    "range_end": _wire.prefix_end(prefix),
                    "start_revision": str(next_revision),
                    "progress_notify": True,
                }
            }
            connection: WatchConnection | None = None
            try:
                async with gateway.stream("/v3/watch", request) as connection:
                    created = False
                    while True:
                        # Until etcd confirms the watch, it must answer in the member
                        # timeout; after, a quiet stream is checked by making it again.
                        bound = self._watch_idle if created else gateway.attempt_timeout
                        line = await connection.next_line(bound, lambda: gateway.member)
                        if line is None:
                            if not created:
                                raise StoreConnectionError(
                                    f"etcd at {connection.member.where} did not confirm "
                                    f"the watch on {prefix!r} within {bound} s"
                                )
                            logger.debug(
                                "watch on %r heard nothing for %s s; making it again to "
                                "check the connection",
                                prefix,
                                self._watch_idle,
                            )
                            break
                        if not line.strip():
                            continue
                        message = _wire.watch_line(line, has_credentials=gateway.has_credentials)
                        if message.compact_revision:
                            raise StoreCompacted(
                                f"revision {next_revision} has been compacted; "
                                f"the oldest kept is {message.compact_revision}",
                                message.compact_revision,
                            )
                        if message.canceled:
                            raise _wire.watch_cancelled(
                                message.cancel_reason,
                                has_credentials=gateway.has_credentials,
                            )
                        if message.created and not created:
                            created = True
                            renewed = False
                            failing_since = None
                            pauses = None
                            if on_open is not None:
                                on_open()
                        for event in message.events:
                            next_revision = event.kv.mod_revision + 1
                            key = self._key(event.kv.key, f"the watch on {prefix!r}")
                            if key is None:
                                continue
                            yield StoreEvent(
                                event.type,
                                key,
                                event.kv.value,
                                event.kv.mod_revision,
                                event.kv.create_revision,
                                event.kv.version,
                                event.kv.lease or None,
                            )
            except _wire.InvalidToken:
                if renewed or connection is None:
                    raise
                renewed = True
                await gateway.relogin(connection)
            except StoreConnectionError as exc:
                # With a cluster, the stream resumes on the next member, from the next
                # revision: nothing is lost, nothing repeated. Once every member has
                # failed for the timeout, the caller hears of it.
                if not gateway.several:
                    raise
                now = anyio.current_time()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since >= self._timeout:
                    raise
                pauses = pauses or backoff(0.05, 1.0)
                pause = next(pauses) if now - failing_since > gateway.attempt_timeout else 0.0
                logger.warning(
                    "watch on %r resumes from revision %d on etcd at %s%s: %s",
                    prefix,
                    next_revision,
                    gateway.member,
                    f" in {pause:.2f} s" if pause else "",
                    exc,
                )
                await anyio.sleep(pause)

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

        .. versionadded:: 0.2
        """
        compares, on_success, on_failure = check_txn(compare, success, failure)
        path = "/v3/kv/txn"
        request = _wire.txn_request(compares, on_success, on_failure)
        # A put under a lease is a member joining: its lease is already ticking.
        urgent = any(
            isinstance(op, Put) and op.lease is not None for op in (*on_success, *on_failure)
        )
        body = await self._gateway.call(path, request, retry=False, urgent=urgent)
        answer = _wire.txn_answer(path, body, on_success, on_failure)
        results: list[TxnOpResult] = []
        ran = on_success if answer.succeeded else on_failure
        for op, response in zip(ran, answer.responses, strict=True):
            if isinstance(op, Get):
                kvs: list[KeyValue] = []
                for raw in sorted(response.kvs, key=lambda kv: kv.key):
                    key = self._key(raw.key, f"the txn's get of {op.key!r}")
                    if key is not None:
                        kvs.append(self._key_value(raw, key))
                results.append(GetResult(tuple(kvs)))
            elif isinstance(op, Put):
                results.append(PutResult(answer.revision))
            else:
                results.append(DeleteResult(response.deleted))
        return TxnResult(answer.succeeded, answer.revision, tuple(results))

    async def time_to_live(self, lease: Lease | int) -> int | None:
        """Return the remaining time to live of ``lease``, in whole seconds, as etcd
        counts it; or ``None`` if the lease is gone (expired, revoked or never granted).

        It does not renew the lease. It is not part of :class:`~anyrdzv.LeaseStore`.

        :param lease: the lease, or its id (as :attr:`KeyValue.lease` gives it)
        :raises TypeError: if ``lease`` is neither a :class:`Lease` nor an int
        :raises StoreConnectionError: if etcd could not be reached or did not answer

        .. versionadded:: 0.2
        """
        lease_id = check_lease_id(lease)
        path = "/v3/lease/timetolive"
        try:
            body = await self._gateway.call(path, {"ID": str(lease_id)})
        except LeaseExpired:
            return None
        return _wire.time_to_live(path, body)
