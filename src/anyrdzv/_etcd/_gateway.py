"""The client of etcd's JSON gateway: each unary request's attempts, in request slots,
on the member that requests go to, with retries and failover within the timeout, and
which requests may be sent again.

It puts together the HTTP (:mod:`._transport`), the members and failover
(:mod:`._members`), the logins (:mod:`._auth`) and the slots (:mod:`._slots`).
Keep-alive requests (:mod:`._renew`) and watch streams (:mod:`._watch`) are sent
through it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, TypeVar, final

import anyio
import httpx

from .._core._delay import backoff
from .._exceptions import StoreConnectionError, StoreError
from . import _wire
from ._auth import AUTHENTICATE, Auth
from ._members import Member, Members
from ._slots import Slots
from ._transport import Transport, handshake_hint, is_tls_failure

if TYPE_CHECKING:
    import ssl as _ssl
    from collections.abc import Awaitable, Callable, Iterator, Sequence

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

KEEPALIVE = "/v3/lease/keepalive"
STATUS = "/v3/maintenance/status"
# The most requests in flight at once, watches aside: 4 for grants, puts and the like,
# and 2 more for keep-alives, so that a burst of joins never starves the heartbeats of
# the members already in. More do not get etcd's answers sooner, and they cost CPU
# here: httpcore's pool scans every connection and every queued request each time one
# starts or ends (a grant costs 1.3 ms of CPU with 50 in flight, 0.65 ms with 4).
MAX_REQUESTS = 4
MAX_RENEWAL_REQUESTS = 2

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


def retries() -> Iterator[float]:
    """The pauses between rounds of retries: from 0.05 s, doubling to 1 s at most, with
    full jitter."""
    return backoff(0.05, 1.0)


@final
class Gateway:
    """The JSON gateways of an etcd cluster's members, reached over HTTP(S).

    Requests go to one member at a time. When it is unreachable, does not answer within
    ``member_timeout``, or answers that it cannot serve requests now, they move on to
    the next member; so do the watch streams open on it.

    :param members: each member's ``(base_url, where)``: ``http(s)://host:port``, and
        how error messages name it
    :param ssl: the SSL context for HTTPS, or ``None`` for plain HTTP, or for the
        system's CAs with ``https://`` members
    :param username: the etcd user, or ``None`` without auth
    :param password: that user's password
    :param timeout: how long one request may wait for etcd, retries included
    :param member_timeout: with several members, how long one member may take to answer
        before the request moves on; ignored with one member
    :param transport: the httpx transport to send through; ``None`` for the network
    """

    def __init__(
        self,
        members: Sequence[tuple[str, str]],
        *,
        ssl: _ssl.SSLContext | None,
        username: str | None,
        password: str | None,
        timeout: float,
        member_timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.members = Members(members)
        #: how error messages name the cluster
        self.where = ",".join(where for _, where in members)
        self.timeout = timeout
        self._member_timeout = min(member_timeout, timeout) if self.members.several else timeout
        self._transport = Transport(
            ssl=ssl,
            tls=ssl is not None or any(url.startswith("https://") for url, _ in members),
            timeout=timeout,
            keepalive_connections=MAX_REQUESTS + MAX_RENEWAL_REQUESTS,
            transport=transport,
        )
        self._auth = Auth(username, password)
        self._requests: Slots | None = None
        self._renewal_requests: Slots | None = None

    @property
    def has_credentials(self) -> bool:
        return self._auth.has_credentials

    @property
    def username(self) -> str | None:
        """The etcd user, or ``None`` without auth."""
        return self._auth.username

    @property
    def is_open(self) -> bool:
        return self._transport.is_open

    @property
    def several(self) -> bool:
        """Whether there are several members to move between."""
        return self.members.several

    @property
    def transport(self) -> Transport:
        """The HTTP transport."""
        return self._transport

    @property
    def attempt_timeout(self) -> float:
        """How long one member may take to answer before a request moves on."""
        return self._member_timeout

    @property
    def member(self) -> str:
        """The member that requests go to now."""
        return self.members.current.where

    @property
    def names(self) -> tuple[str, ...]:
        """Every member, as error messages name them."""
        return tuple(member.where for member in self.members.all)

    async def open(self) -> None:
        """Make the HTTP client, and check that a member answers (logging in, with
        credentials), within the timeout.

        A member that is not up yet (it refuses the connection, or etcd cannot serve
        requests yet) is tried again, with backoff, as :meth:`attempts` says; a failed
        TLS handshake, or a server that does not speak the client's TLS or plain HTTP,
        fails at once, with an error that names the likely cause.

        :raises RuntimeError: if it is open already
        :raises StoreError: a subclass for what went wrong
        """
        context = await self._transport.context()
        if self._transport.is_open:
            raise RuntimeError(f"the store for etcd at {self.where} is open already")
        # Made here, not in __init__: they belong to the event loop that opens the store.
        self._requests = Slots(MAX_REQUESTS, "request")
        self._renewal_requests = Slots(MAX_RENEWAL_REQUESTS, "keep-alive request")
        for member in self.members.all:
            member.reset()
        self._transport.open(context)
        try:
            if self.has_credentials:

                async def login(member: Member, deadline: float, waited: float) -> None:
                    await self.login(member, None, deadline=deadline, held=True)

                await self.attempts(AUTHENTICATE, login, retry=True, opening=True)
            else:
                await self.call(STATUS, {}, opening=True)
        except StoreConnectionError as exc:
            await self.aclose()
            hint = handshake_hint(exc, where=self.member, tls=self._transport.tls)
            if hint is not None:
                raise hint from exc.__cause__
            raise
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._transport.aclose()

    def require_open(self) -> None:
        """:raises RuntimeError: if the store is not open"""
        self._transport.require_open()

    def slots(self, path: str) -> Slots:
        """The request slots for ``path``: keep-alives have their own."""
        self._transport.require_open()
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
        held: bool = False,
        waited: float = 0.0,
    ) -> tuple[int, bytes]:
        """Send one request to ``member`` in a slot; return the HTTP status and the body.

        Waiting for a slot is not counted against ``deadline``: etcd's answer is.

        :param token: send the member's auth token, if it has one
        :param held: the caller holds a slot for it already (and waited ``waited``)
        :raises StoreConnectionError: if etcd does not answer by ``deadline``
        """
        slots = self.slots(path)
        if not held:
            waited = await slots.acquire(self.timeout)
            deadline += waited
        try:
            answer = await self._transport.post(
                member.base_url + path,
                data,
                token=member.token if token else None,
                where=member.where,
                limit=max(deadline - anyio.current_time(), 0.001),
                waited=waited,
            )
            slots.answered()
            return answer
        finally:
            if not held:
                slots.release()

    async def attempts(
        self,
        path: str,
        send: Callable[[Member, float, float], Awaitable[_T]],
        *,
        retry: bool,
        urgent: bool = False,
        opening: bool = False,
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
        :param opening: the first contact, of :meth:`open`: ``send`` logs in itself, and
            a failed TLS handshake, or what a TLS mismatch looks like, is raised at once
            (no retry mends it); other passing faults, such as a refused connection from
            an etcd that is not up yet, are retried within the timeout
        """
        slots = self.slots(path)
        deadline = anyio.current_time() + self.timeout
        pauses: Iterator[float] | None = None
        renewed: set[int] = set()
        failures = 0  # since the last pause
        while True:
            waited = await slots.acquire(self.timeout, urgent=urgent)
            deadline += waited  # queueing behind our own requests is not etcd's delay
            member = self.members.current
            token = member.token
            # A request that may not be sent twice waits for its answer to the end: moving
            # on from a member that is merely slow would leave its outcome unknown.
            bound = (
                min(deadline, anyio.current_time() + self._member_timeout)
                if retry or opening
                else deadline
            )
            error: StoreError
            try:
                if self.has_credentials and member.token is None and not opening:
                    # A member moved to: log in first (etcd's simple tokens are per member).
                    await self.login(member, None, deadline=bound, held=True)
                return await send(member, bound, waited)
            except (_wire.InvalidToken, StoreConnectionError) as exc:
                error = exc
            finally:
                slots.release()
            if isinstance(error, _wire.InvalidToken):
                if id(member) in renewed or not self.has_credentials:
                    raise error
                renewed.add(id(member))
                await self.login(member, token, deadline=bound)
                continue
            self.members.leave(member, error)
            failures += 1
            if opening and is_tls_failure(error, tls=self._transport.tls):
                raise error
            if not retry and not _not_sent(error):
                raise error
            what = f"opening the store: {path}" if opening else path
            if failures < len(self.members.all) and anyio.current_time() < deadline:
                logger.warning("retrying %s on etcd at %s: %s", what, self.member, error)
                continue
            failures = 0
            pauses = pauses or retries()
            pause = next(pauses)
            if anyio.current_time() + pause >= deadline:
                raise error
            logger.warning(
                "retrying %s on etcd at %s in %.2f s: %s", what, self.member, pause, error
            )
            await anyio.sleep(pause)

    async def call(
        self,
        path: str,
        payload: dict[str, Any],
        *,
        retry: bool = True,
        urgent: bool = False,
        opening: bool = False,
    ) -> dict[str, Any]:
        """One unary call; return the answer's JSON object.

        :param retry: retry passing faults within the timeout; only for requests that
            may be applied twice without harm (others are sent again only when surely
            not applied)
        :param urgent: go ahead of the queued requests that are not urgent: for the
            writes of a member that already holds a lease, which must not wait behind a
            burst of others' grants
        :param opening: the first contact, of :meth:`open` (see :meth:`attempts`)
        :raises StoreError: a subclass for what went wrong
        """
        data = _wire.encode(payload)

        async def send(member: Member, deadline: float, waited: float) -> dict[str, Any]:
            status, content = await self.post(
                member, path, data, deadline=deadline, held=True, waited=waited
            )
            return _wire.read_answer(
                path,
                status,
                content,
                has_credentials=self.has_credentials,
                request=payload,
                user=self.username,
            )

        return await self.attempts(path, send, retry=retry, urgent=urgent, opening=opening)

    async def login(
        self, member: Member, stale: str | None, *, deadline: float, held: bool = False
    ) -> None:
        """Log in to ``member``, unless another caller already replaced its ``stale``
        token.

        :param held: the caller holds a request slot for the login already
        """

        async def send(data: bytes) -> tuple[int, bytes]:
            # A clean request: a stale token would fail the login.
            return await self.post(
                member, AUTHENTICATE, data, deadline=deadline, token=False, held=held
            )

        await self._auth.login(member, stale, send)
