"""The client of etcd's JSON gateway: HTTP through httpx, request slots, auth with its
token, timeouts and retries, and watch streams with a liveness bound."""

from __future__ import annotations

import functools
import logging
import random
import ssl as _ssl
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar, final

import anyio
import httpx

from .._checks import MAX_ECHO, echo
from .._core._delay import backoff
from .._exceptions import StoreConnectionError, StoreError, StoreProtocolError
from . import _wire
from ._slots import Slots

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Sequence

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

KEEPALIVE = "/v3/lease/keepalive"
AUTHENTICATE = "/v3/auth/authenticate"
# The most requests in flight at once, watches aside: 4 for grants, puts and the like,
# and 2 more for keep-alives, so that a burst of joins never starves the heartbeats of
# the members already in. More do not get etcd's answers sooner, and they cost CPU
# here: httpcore's pool scans every connection and every queued request each time one
# starts or ends (a grant costs 1.3 ms of CPU with 50 in flight, 0.65 ms with 4).
MAX_REQUESTS = 4
MAX_RENEWAL_REQUESTS = 2
# How many tries a keep-alive race sends per member at most, one a member timeout.
_RACE_TRIES = 2
# What a request's transport may raise: httpx's errors, and, unwrapped on some backends,
# an ssl.SSLError (an OSError) or a broken anyio stream. Our own errors are OSErrors
# too (PermissionError, ConnectionError): where they can pass, catch them first.
_TRANSPORT_ERRORS = (httpx.TransportError, OSError, anyio.BrokenResourceError)


class _Body(httpx.AsyncByteStream):
    """A request body that is no async generator.

    httpx sends ``content=``/``json=`` bodies through an async generator; when the
    connection drops mid-request, that generator is left for garbage collection, and
    trio reports it with a ResourceWarning. This one-chunk iterator has nothing to leave.
    """

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        if self._data is None:
            raise StopAsyncIteration
        data, self._data = self._data, None
        return data


async def _finish_generators(response: httpx.Response, lines: AsyncIterator[str]) -> None:
    """Close a streamed response so that httpx's chain of async generators ends now.

    ``aiter_lines()`` reads through half a dozen nested async generators in httpx and
    httpcore. Leaving it mid-stream leaves them all suspended, for the event loop's
    garbage-collection hooks to finalise later, in stray tasks. Closing the response
    and then advancing the iterator once makes the innermost read fail, and that error
    unwinds, and so finishes, every generator in the chain.
    """
    with anyio.CancelScope(shield=True):
        await response.aclose()
        try:
            await lines.__anext__()
        except (httpx.HTTPError, httpx.StreamError, StopAsyncIteration):
            pass  # the closed stream's ReadError: the chain has unwound


def _ssl_error(exc: BaseException) -> _ssl.SSLError | None:
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, _ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    return cause


# The etcd answers that say a request was refused before etcd did anything with it:
# sending it to another member cannot apply it twice.
_NOT_APPLIED_MESSAGES = ("no leader", "not capable", "too many requests")


def _not_sent(exc: StoreConnectionError) -> bool:
    """Whether ``exc`` says the request surely had no effect: its connection was never
    made, or etcd refused it before acting on it."""
    cause = exc.__cause__
    if isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True
    text = str(exc)
    return "cannot serve" in text and any(m in text for m in _NOT_APPLIED_MESSAGES)


@final
class Member:
    """One etcd member of the cluster a :class:`Gateway` talks to, with its own auth
    token: etcd's simple tokens are per member."""

    __slots__ = ("base_url", "generation", "login", "reads", "token", "where")

    def __init__(self, base_url: str, where: str) -> None:
        self.base_url = base_url
        self.where = where
        self.token: str | None = None
        self.login: anyio.Lock | None = None
        # Bumped each time the gateway leaves this member, so that watch streams still
        # open on it move too; ``reads`` are the cancel scopes of their pending reads.
        self.generation = 0
        self.reads: set[anyio.CancelScope] = set()


@final
class WatchConnection:
    """A watch stream open on one member: its lines, with a bound on each read."""

    def __init__(self, member: Member, lines: AsyncIterator[str]) -> None:
        self.member = member
        self.token = member.token
        self._lines = lines
        self._generation = member.generation

    def _check_member(self, moved_to: str) -> None:
        if self.member.generation != self._generation:
            raise StoreConnectionError(
                f"requests left etcd member {self.member.where} for {moved_to}; the watch moves too"
            )

    async def next_line(self, bound: float, moved_to: Callable[[], str]) -> str | None:
        """The next line, or ``None`` if none came within ``bound`` seconds.

        :raises StoreConnectionError: if the stream ended, or the gateway left its member
        """
        self._check_member(moved_to())
        with anyio.move_on_after(bound) as scope:
            self.member.reads.add(scope)
            try:
                return await self._lines.__anext__()
            except StopAsyncIteration:
                raise StoreConnectionError(
                    f"etcd at {self.member.where} closed the watch stream"
                ) from None
            finally:
                self.member.reads.discard(scope)
        self._check_member(moved_to())
        return None


@functools.cache
def _plain_http_context() -> _ssl.SSLContext:
    """The context of a client that only speaks plain HTTP (every member is ``http://``;
    an ``https://`` member brings its own context): made once, since httpx would load
    certifi's whole bundle for each new client, 0.15 s here, for a context never used."""
    return _ssl.create_default_context()


@final
class Gateway:
    """The JSON gateways of an etcd cluster's members, reached over HTTP(S).

    Requests go to one member at a time. When it is unreachable, does not answer within
    ``member_timeout``, or answers that it cannot serve requests now, they move on to
    the next member; so do the watch streams open on it.

    :param members: each member's ``(base_url, where)``: ``http(s)://host:port``, and
        how error messages name it
    :param where: how error messages name the cluster
    :param ssl: the SSL context for HTTPS, or ``None`` for plain HTTP
    :param username: the etcd user, or ``None`` without auth
    :param password: that user's password
    :param timeout: how long one request may wait for etcd, retries included
    :param member_timeout: with several members, how long one member may take to answer
        before the request moves on; ignored with one member
    """

    def __init__(
        self,
        members: Sequence[tuple[str, str]],
        where: str,
        *,
        ssl: _ssl.SSLContext | None,
        username: str | None,
        password: str | None,
        timeout: float,
        member_timeout: float,
    ) -> None:
        self.where = where
        self.timeout = timeout
        self._members = [Member(base_url, name) for base_url, name in members]
        self._several = len(self._members) > 1
        self._member_timeout = min(member_timeout, timeout) if self._several else timeout
        # Each process starts at its own member, so that many clients spread their
        # watches over the cluster (etcd forwards writes to the leader either way).
        self._current = random.randrange(len(self._members))
        self._ssl = ssl
        self._username = username
        self._password = password
        self._client: httpx.AsyncClient | None = None
        self._requests: Slots | None = None
        self._renewal_requests: Slots | None = None

    @property
    def has_credentials(self) -> bool:
        return self._username is not None

    @property
    def is_open(self) -> bool:
        return self._client is not None

    @property
    def several(self) -> bool:
        """Whether there are several members to move between."""
        return self._several

    @property
    def attempt_timeout(self) -> float:
        """How long one member may take to answer before a request moves on."""
        return self._member_timeout

    @property
    def member(self) -> str:
        """The member that requests go to now."""
        return self._members[self._current].where

    @property
    def members(self) -> tuple[str, ...]:
        """Every member, as error messages name them."""
        return tuple(member.where for member in self._members)

    async def open(self) -> None:
        """Make the HTTP client, and check that a member answers (logging in, with
        credentials).

        :raises RuntimeError: if it is open already
        """
        if self._client is not None:
            raise RuntimeError(f"the store for etcd at {self.where} is open already")
        # Made here, not in __init__: they belong to the event loop that opens the store.
        self._requests = Slots(MAX_REQUESTS, "request")
        self._renewal_requests = Slots(MAX_RENEWAL_REQUESTS, "keep-alive request")
        for member in self._members:
            member.login = anyio.Lock()
            member.token = None
        self._client = httpx.AsyncClient(
            verify=self._ssl if self._ssl is not None else _plain_http_context(),
            timeout=httpx.Timeout(self.timeout),
            # Each watch holds a connection; the requests beside them are few (above).
            limits=httpx.Limits(
                max_connections=None,
                max_keepalive_connections=MAX_REQUESTS + MAX_RENEWAL_REQUESTS,
            ),
            trust_env=False,
        )
        try:
            if self._username is not None:

                async def login(member: Member, deadline: float, waited: float) -> None:
                    await self._authenticate(member, None, deadline=deadline, held=True)

                await self._attempts(AUTHENTICATE, login, retry=False, each_once=True)
            else:
                await self.call("/v3/maintenance/status", {}, retry=False, each_once=True)
        except StoreConnectionError as exc:
            await self.aclose()
            cause = exc.__cause__
            if (
                self._ssl is not None
                and isinstance(cause, httpx.ConnectError | httpx.ReadError)
                and (not str(cause) or "reset" in str(cause) or "broken" in str(cause))
            ):
                # uvloop and trio may report a failed handshake this way, with no SSL
                # error to say why, or as a reset connection: name both likely causes.
                raise StoreConnectionError(
                    f"TLS with etcd at {self.member} failed: the handshake was broken off, "
                    "with no reason given. Pass ssl= an SSLContext that trusts the "
                    "server's CA; or, if it serves plain HTTP, use an http:// endpoint "
                    "and no ssl="
                ) from cause
            if self._ssl is None and isinstance(cause, httpx.RemoteProtocolError | httpx.ReadError):
                # What a TLS port does to plain HTTP: it hangs up without a word.
                raise StoreConnectionError(
                    f"etcd at {self.member} closed the connection without answering "
                    f"({cause or type(cause).__name__}). If it serves TLS, "
                    "use an https:// endpoint or pass ssl="
                ) from cause
            raise
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def require_open(self) -> None:
        """:raises RuntimeError: if the store is not open"""
        self._require_client()

    def _require_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("EtcdStore is not open: use it as 'async with EtcdStore(...)'")
        return self._client

    def _leave(self, member: Member, exc: object, *, to: Member | None = None) -> None:
        """After ``exc`` from ``member`` (an error, or why it was passed over): if
        requests go to it, move them to ``to`` or else the next member, and the watch
        streams open on it too."""
        if not self._several or self._members[self._current] is not member:
            return
        if to is None:
            self._current = (self._current + 1) % len(self._members)
        else:
            self._current = self._members.index(to)
        member.generation += 1
        logger.warning(
            "leaving etcd member %s (%s); requests go to %s now",
            member.where,
            exc,
            self._members[self._current].where,
        )
        for scope in list(member.reads):
            scope.cancel()

    # -- errors ---------------------------------------------------------------------------

    def connection_error(
        self,
        exc: BaseException,
        *,
        member: Member | None = None,
        waited: float = 0.0,
        limit: float | None = None,
    ) -> StoreError:
        """Our error for an HTTP transport failure (httpx's exceptions, or a timeout)."""
        where = (member or self._members[self._current]).where
        text = (str(exc) or type(exc).__name__)[:MAX_ECHO]
        tls = _ssl_error(exc)
        if tls is not None or "CERTIFICATE_VERIFY_FAILED" in text:
            reason = str(tls or text)[:MAX_ECHO]
            if "CERTIFICATE_VERIFY_FAILED" in reason or "certificate" in reason.lower():
                return StoreConnectionError(
                    f"TLS with etcd at {where} failed: {reason}. Pass ssl= an "
                    "SSLContext that trusts the server's CA "
                    "(ssl.create_default_context(cafile=...))"
                )
            return StoreConnectionError(
                f"TLS with etcd at {where} failed: {reason}. Does it serve plain "
                "HTTP? Then use an http:// endpoint and no ssl="
            )
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            queued = f", after {waited:.1f} s waiting for a request slot" if waited > 0.05 else ""
            return StoreConnectionError(
                f"etcd at {where} did not answer within "
                f"{self._member_timeout if limit is None else limit:.3g} s{queued} ({text})"
            )
        return StoreConnectionError(f"cannot reach etcd at {where}: {text}")

    # -- requests -------------------------------------------------------------------------

    def _request(self, member: Member, path: str, data: bytes, *, token: bool) -> httpx.Request:
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
        if token and member.token:
            headers["Authorization"] = member.token
        request = self._require_client().build_request(
            "POST", member.base_url + path, headers=headers
        )
        request.stream = _Body(data)
        return request

    def _slots(self, path: str) -> Slots:
        self._require_client()
        slots = self._renewal_requests if path == KEEPALIVE else self._requests
        assert slots is not None
        return slots

    async def post(
        self,
        member: Member,
        path: str,
        data: bytes,
        *,
        deadline: float,
        token: bool = True,
        urgent: bool = False,
        held: bool = False,
        waited: float = 0.0,
    ) -> tuple[int, bytes]:
        """Send one request to ``member`` in a slot; return the HTTP status and the body.

        Waiting for a slot is not counted against ``deadline``: etcd's answer is.

        :param held: the caller holds a slot for it already (and waited ``waited``)
        :raises StoreConnectionError: if etcd does not answer by ``deadline``
        """
        client = self._require_client()
        slots = self._slots(path)
        if not held:
            waited = await slots.acquire(self.timeout, urgent=urgent)
            deadline += waited
        limit = max(deadline - anyio.current_time(), 0.001)
        try:
            with anyio.fail_after(limit):
                response = await client.send(self._request(member, path, data, token=token))
            slots.answered()
            return response.status_code, response.content
        except TimeoutError as exc:
            raise self.connection_error(exc, member=member, waited=waited, limit=limit) from exc
        except _TRANSPORT_ERRORS as exc:
            raise self.connection_error(exc, member=member) from exc
        finally:
            if not held:
                slots.release()

    async def _authenticate(
        self, member: Member, stale: str | None, *, deadline: float, held: bool = False
    ) -> None:
        """Log in to ``member``, unless another caller already replaced its ``stale``
        token.

        :param held: the caller holds a request slot for the login already
        """
        assert member.login is not None
        async with member.login:
            if member.token is not None and member.token != stale:
                return  # someone else logged in meanwhile
            if stale is not None:
                logger.info("etcd at %s refused the auth token; logging in again", member.where)
            member.token = None
            status, content = await self.post(
                member,
                AUTHENTICATE,
                _wire.encode({"name": self._username, "password": self._password}),
                deadline=deadline,
                token=False,  # a clean request: a stale token would fail the login
                held=held,
            )
            body = _wire.read_answer(AUTHENTICATE, status, content, has_credentials=True)
            token = body.get("token")
            if not isinstance(token, str) or not token:
                raise StoreProtocolError(
                    f"etcd's answer to {AUTHENTICATE} has no token: {echo(body)}"
                )
            member.token = token
            logger.debug("logged in to etcd at %s as %r", member.where, self._username)

    def _retries(self) -> Iterator[float]:
        return backoff(0.05, 1.0)

    async def _attempts(
        self,
        path: str,
        send: Callable[[Member, float, float], Awaitable[_T]],
        *,
        retry: bool,
        urgent: bool = False,
        each_once: bool = False,
    ) -> _T:
        """Run ``send(member, deadline, waited)`` in a request slot until it succeeds,
        moving between members and retrying passing faults within the timeout.

        The member is chosen once the slot is free, so that requests queued behind one
        that found a member dead go to the next. A refused connection, a timeout and an
        answer that etcd cannot serve the request now (no leader, stopping,
        unavailable) move the requests to the next member, and are retried there; once
        every member has failed, with backoff until the timeout. A stale auth token is
        renewed once per member. Anything else is raised at once.

        :param retry: whether the request may be applied twice without harm; if not, it
            is sent again only when the first try surely had no effect (it never
            reached etcd, or etcd refused it unread)
        :param urgent: go ahead of the queued requests that are not urgent
        :param each_once: try each member once, with no backoff
        """
        slots = self._slots(path)
        deadline = anyio.current_time() + self.timeout
        pauses: Iterator[float] | None = None
        renewed: set[int] = set()
        failures = 0  # since the last pause
        while True:
            waited = await slots.acquire(self.timeout, urgent=urgent)
            deadline += waited  # queueing behind our own requests is not etcd's delay
            member = self._members[self._current]
            token = member.token
            # A request that may not be sent twice waits for its answer to the end: moving
            # on from a member that is merely slow would leave its outcome unknown.
            bound = (
                min(deadline, anyio.current_time() + self._member_timeout)
                if retry or each_once
                else deadline
            )
            error: StoreError
            try:
                if self.has_credentials and member.token is None and not each_once:
                    # A member moved to: log in first (etcd's simple tokens are per member).
                    await self._authenticate(member, None, deadline=bound, held=True)
                return await send(member, bound, waited)
            except (_wire.InvalidToken, StoreConnectionError) as exc:
                error = exc
            finally:
                slots.release()
            if isinstance(error, _wire.InvalidToken):
                if id(member) in renewed or not self.has_credentials:
                    raise error
                renewed.add(id(member))
                await self._authenticate(member, token, deadline=bound)
                continue
            self._leave(member, error)
            failures += 1
            if each_once:
                if failures >= len(self._members):
                    raise error
            elif not retry and not _not_sent(error):
                raise error
            if failures < len(self._members) and anyio.current_time() < deadline:
                logger.warning("retrying %s on etcd at %s: %s", path, self.member, error)
                continue
            failures = 0
            pauses = pauses or self._retries()
            pause = next(pauses)
            if anyio.current_time() + pause >= deadline:
                raise error
            logger.warning(
                "retrying %s on etcd at %s in %.2f s: %s", path, self.member, pause, error
            )
            await anyio.sleep(pause)

    async def call(
        self,
        path: str,
        payload: dict[str, Any],
        *,
        retry: bool = True,
        urgent: bool = False,
        each_once: bool = False,
    ) -> dict[str, Any]:
        """One unary call; return the answer's JSON object.

        :param retry: retry passing faults within the timeout; only for requests that
            may be applied twice without harm (others are sent again only when surely
            not applied)
        :param urgent: go ahead of the queued requests that are not urgent: for the
            writes of a member that already holds a lease, which must not wait behind a
            burst of others' grants
        :param each_once: try each member once, with no backoff
        :raises StoreError: a subclass for what went wrong
        """
        data = _wire.encode(payload)

        async def send(member: Member, deadline: float, waited: float) -> dict[str, Any]:
            status, content = await self.post(
                member, path, data, deadline=deadline, held=True, waited=waited
            )
            return _wire.read_answer(path, status, content, has_credentials=self.has_credentials)

        return await self._attempts(path, send, retry=retry, urgent=urgent, each_once=each_once)

    async def call_member(self, where: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """One unary call to the member named ``where``, once, with no retry and no
        failover: for reports on each member.

        :raises StoreError: a subclass for what went wrong
        """
        member = next(m for m in self._members if m.where == where)
        data = _wire.encode(payload)
        deadline = anyio.current_time() + self._member_timeout
        for _ in range(2):
            token = member.token
            if self.has_credentials and token is None:
                await self._authenticate(member, None, deadline=deadline)
            status, content = await self.post(member, path, data, deadline=deadline)
            try:
                return _wire.read_answer(
                    path, status, content, has_credentials=self.has_credentials
                )
            except _wire.InvalidToken:
                await self._authenticate(member, member.token, deadline=deadline)
        raise StoreProtocolError(f"etcd at {where} refused every auth token on {path}")

    async def renew(self, lease_ids: Collection[int]) -> dict[int, int]:
        """Renew many leases in one request; return the TTL etcd gave each it answered.

        The gateway's keep-alive endpoint takes a stream of requests and answers each.
        On HTTP/1 it may stop reading the body once it starts answering, so some
        leases can go unanswered: the caller sends those again.
        """
        data = "".join(f'{{"ID":"{lease_id}"}}' for lease_id in lease_ids).encode()

        async def send(member: Member, deadline: float, waited: float) -> dict[int, int]:
            status, content = await self.post(
                member, KEEPALIVE, data, deadline=deadline, held=True, waited=waited
            )
            if status != 200:
                _wire.read_answer(KEEPALIVE, status, content, has_credentials=self.has_credentials)
            renewed, error = _wire.renewals(
                content.decode("utf-8", "replace"), has_credentials=self.has_credentials
            )
            if error is not None and not renewed:
                raise error
            if not renewed:
                raise StoreConnectionError(f"etcd at {member.where} answered no keep-alive")
            return renewed

        if not self._several:
            return await self._attempts(KEEPALIVE, send, retry=True)
        deadline = anyio.current_time() + self.timeout
        pauses: Iterator[float] | None = None
        while True:
            try:
                return await self._race(KEEPALIVE, send, deadline)
            except StoreConnectionError as exc:
                pauses = pauses or self._retries()
                pause = next(pauses)
                if anyio.current_time() + pause >= deadline:
                    raise
                logger.warning(
                    "every etcd member failed %s; retrying in %.2f s: %s", KEEPALIVE, pause, exc
                )
                await anyio.sleep(pause)

    async def _race(
        self,
        path: str,
        send: Callable[[Member, float, float], Awaitable[_T]],
        deadline: float,
    ) -> _T:
        """Send an idempotent request to the member that requests go to; if it has not
        answered within the member timeout, send it to the next member too, and so on:
        the first answer wins, and the others are cancelled.

        A member that waits for a new leader answers once there is one, so the earlier
        tries keep waiting; a member that hangs is passed over. Requests go to the
        winner afterwards, and a member that failed is left. This is how keep-alives
        ride out the loss of the leader, or of the member they went to, within a lease.

        :raises StoreConnectionError: if every member failed, the last member's error
        """
        slots = self._slots(path)
        waited = await slots.acquire(self.timeout)
        deadline += waited
        answers: list[_T] = []
        winner: list[Member] = []
        errors: list[StoreConnectionError] = []
        fatal: list[StoreError] = []
        failed = anyio.Event()
        tried: list[Member] = []

        async def attempt(member: Member, scope: anyio.CancelScope) -> None:
            nonlocal failed
            renewed = False
            while True:
                token = member.token
                try:
                    if self.has_credentials and token is None:
                        # A member not used before: log in first (tokens are per member).
                        await self._authenticate(member, None, deadline=deadline)
                        token = member.token
                    answers.append(await send(member, deadline, waited))
                    winner.append(member)
                except _wire.InvalidToken as exc:
                    if renewed or not self.has_credentials:
                        fatal.append(exc)
                    else:
                        renewed = True
                        try:
                            await self._authenticate(member, token, deadline=deadline)
                        except StoreConnectionError as error:
                            errors.append(error)
                            self._leave(member, error)
                        except StoreError as error:
                            fatal.append(error)
                        else:
                            continue
                except StoreConnectionError as exc:
                    errors.append(exc)
                    self._leave(member, exc)
                except StoreError as exc:
                    fatal.append(exc)
                if answers or fatal:
                    scope.cancel()
                failed.set()
                failed = anyio.Event()
                return

        try:
            async with anyio.create_task_group() as tg:
                # Each member timeout with no answer, one more try goes out, to the next
                # member round the cluster, and again to a member already asked: a
                # follower that forwarded the first try to a leader that has since hung
                # forwards a fresh one to the new leader.
                index = self._current
                while not answers and not fatal and len(tried) < _RACE_TRIES * len(self._members):
                    member = self._members[index % len(self._members)]
                    index += 1
                    tried.append(member)
                    tg.start_soon(attempt, member, tg.cancel_scope)
                    with anyio.move_on_after(self._member_timeout) as wait:
                        await failed.wait()
                    if wait.cancelled_caught and not answers:
                        logger.warning(
                            "etcd at %s did not answer %s within %s s; asking another member too",
                            member.where,
                            path,
                            self._member_timeout,
                        )
        finally:
            slots.release()
        if winner:
            current = self._members[self._current]
            if current is not winner[0]:
                # The member requests went to was passed over: requests, and the watches
                # open on it, go to the one that answered.
                self._leave(current, f"{winner[0].where} answered {path} first", to=winner[0])
            return answers[0]
        if fatal:
            raise fatal[0]
        raise errors[-1]

    async def relogin(self, connection: WatchConnection) -> None:
        """Log in again, after etcd refused the token of a watch ``connection`` (once for
        many callers)."""
        await self._authenticate(
            connection.member,
            connection.token,
            deadline=anyio.current_time() + self._member_timeout,
        )

    @asynccontextmanager
    async def stream(self, path: str, payload: dict[str, Any]) -> AsyncIterator[WatchConnection]:
        """Open a streaming call on the member that requests go to now.

        The connection must be made and the answer's head arrive within the member
        timeout; after that, the lines come as they come. A connection error, here or
        in the caller's block, moves requests to the next member.

        :raises StoreError: a subclass for what went wrong
        """
        client = self._require_client()
        member = self._members[self._current]
        request = self._request(member, path, _wire.encode(payload), token=True)
        request.extensions["timeout"] = httpx.Timeout(self._member_timeout, read=None).as_dict()
        try:
            try:
                with anyio.fail_after(self._member_timeout):
                    response = await client.send(request, stream=True)
            except TimeoutError as exc:
                raise self.connection_error(exc, member=member) from exc
            except _TRANSPORT_ERRORS as exc:
                raise self.connection_error(exc, member=member) from exc
            lines = response.aiter_lines()
            try:
                if response.status_code != 200:
                    try:
                        with anyio.fail_after(self._member_timeout):
                            content = await response.aread()
                    except TimeoutError as exc:
                        raise self.connection_error(exc, member=member) from exc
                    _wire.read_answer(
                        path, response.status_code, content, has_credentials=self.has_credentials
                    )
                    raise StoreProtocolError(
                        f"HTTP {response.status_code} on {path} from {member.where}"
                    )
                yield WatchConnection(member, lines)
            except StoreError:
                raise  # ours already (they are OSErrors too: PermissionError, ConnectionError)
            except _TRANSPORT_ERRORS as exc:
                raise self.connection_error(exc, member=member) from exc
            finally:
                await _finish_generators(response, lines)
        except StoreConnectionError as exc:
            self._leave(member, exc)
            raise
