"""The client of etcd's JSON gateway: HTTP through httpx, request slots, auth with its
token, timeouts and retries, and watch streams with a liveness bound."""

from __future__ import annotations

import logging
import ssl as _ssl
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, final

import anyio
import httpx

from .._delay import backoff
from .._exceptions import StoreConnectionError, StoreError, StoreProtocolError
from .._util import MAX_ECHO, echo
from . import _wire
from ._slots import Slots

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection, Iterator

logger = logging.getLogger(__name__)

KEEPALIVE = "/v3/lease/keepalive"
AUTHENTICATE = "/v3/auth/authenticate"
# The most requests in flight at once, watches aside: 4 for grants, puts and the like,
# and 2 more for keep-alives, so that a burst of joins never starves the heartbeats of
# the members already in. More do not get etcd's answers sooner, and they cost CPU
# here: httpcore's pool scans every connection and every queued request each time one
# starts or ends (a grant costs 1.3 ms of CPU with 50 in flight, 0.65 ms with 4).
MAX_REQUESTS = 4
MAX_RENEWAL_REQUESTS = 2
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


@final
class Gateway:
    """One etcd member's JSON gateway, reached over HTTP(S).

    :param base_url: ``http://host:port`` or ``https://host:port``
    :param where: how error messages name the server
    :param ssl: the SSL context for HTTPS, or ``None`` for plain HTTP
    :param username: the etcd user, or ``None`` without auth
    :param password: that user's password
    :param timeout: how long one request may wait for etcd, retries included
    """

    def __init__(
        self,
        base_url: str,
        where: str,
        *,
        ssl: _ssl.SSLContext | None,
        username: str | None,
        password: str | None,
        timeout: float,
    ) -> None:
        self.where = where
        self.timeout = timeout
        self._base_url = base_url
        self._ssl = ssl
        self._username = username
        self._password = password
        self._client: httpx.AsyncClient | None = None
        self._token: str | None = None
        self._login: anyio.Lock | None = None
        self._requests: Slots | None = None
        self._renewal_requests: Slots | None = None

    @property
    def has_credentials(self) -> bool:
        return self._username is not None

    @property
    def is_open(self) -> bool:
        return self._client is not None

    async def open(self) -> None:
        """Make the HTTP client, and log in if there are credentials.

        :raises RuntimeError: if it is open already
        """
        if self._client is not None:
            raise RuntimeError(f"the store for etcd at {self.where} is open already")
        # Made here, not in __init__: they belong to the event loop that opens the store.
        self._requests = Slots(MAX_REQUESTS, "request")
        self._renewal_requests = Slots(MAX_RENEWAL_REQUESTS, "keep-alive request")
        self._login = anyio.Lock()
        self._token = None
        self._client = httpx.AsyncClient(
            base_url=self._base_url,
            verify=self._ssl if self._ssl is not None else True,
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
                await self._authenticate(None)
            else:
                await self.call("/v3/maintenance/status", {}, retry=False)
        except StoreConnectionError as exc:
            await self.aclose()
            cause = exc.__cause__
            if (
                self._ssl is not None
                and isinstance(cause, httpx.ConnectError | httpx.ReadError)
                and not str(cause)
            ):
                # uvloop and trio may report a failed handshake this way, with no SSL
                # error to say why: name both likely causes.
                raise StoreConnectionError(
                    f"TLS with etcd at {self.where} failed: the handshake was broken off, "
                    "with no reason given. Pass ssl= an SSLContext that trusts the "
                    "server's CA; or, if it serves plain HTTP, use an http:// endpoint "
                    "and no ssl="
                ) from cause
            if self._ssl is None and isinstance(
                exc.__cause__, httpx.RemoteProtocolError | httpx.ReadError
            ):
                # What a TLS port does to plain HTTP: it hangs up without a word.
                raise StoreConnectionError(
                    f"etcd at {self.where} closed the connection without answering "
                    f"({exc.__cause__ or type(exc.__cause__).__name__}). If it serves TLS, "
                    "use an https:// endpoint or pass ssl="
                ) from exc.__cause__
            raise
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _require_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("EtcdStore is not open: use it as 'async with EtcdStore(...)'")
        return self._client

    # -- errors ---------------------------------------------------------------------------

    def connection_error(self, exc: BaseException, *, waited: float = 0.0) -> StoreError:
        """Our error for an HTTP transport failure (httpx's exceptions, or a timeout)."""
        text = (str(exc) or type(exc).__name__)[:MAX_ECHO]
        tls = _ssl_error(exc)
        if tls is not None or "CERTIFICATE_VERIFY_FAILED" in text:
            reason = str(tls or text)[:MAX_ECHO]
            if "CERTIFICATE_VERIFY_FAILED" in reason or "certificate" in reason.lower():
                return StoreConnectionError(
                    f"TLS with etcd at {self.where} failed: {reason}. Pass ssl= an "
                    "SSLContext that trusts the server's CA "
                    "(ssl.create_default_context(cafile=...))"
                )
            return StoreConnectionError(
                f"TLS with etcd at {self.where} failed: {reason}. Does it serve plain "
                "HTTP? Then use an http:// endpoint and no ssl="
            )
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            queued = f", after {waited:.1f} s waiting for a request slot" if waited > 0.05 else ""
            return StoreConnectionError(
                f"etcd at {self.where} did not answer within {self.timeout} s{queued} ({text})"
            )
        return StoreConnectionError(f"cannot reach etcd at {self.where}: {text}")

    # -- requests -------------------------------------------------------------------------

    def _request(self, path: str, data: bytes, *, token: bool = True) -> httpx.Request:
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
        if token and self._token:
            headers["Authorization"] = self._token
        request = self._require_client().build_request("POST", path, headers=headers)
        request.stream = _Body(data)
        return request

    async def post(
        self, path: str, data: bytes, *, deadline: float, token: bool = True, urgent: bool = False
    ) -> tuple[int, bytes]:
        """Send one request in a slot; return the HTTP status and the body.

        Waiting for a slot is not counted against ``deadline``: etcd's answer is.

        :raises StoreConnectionError: if etcd does not answer by ``deadline``
        """
        client = self._require_client()
        slots = self._renewal_requests if path == KEEPALIVE else self._requests
        assert slots is not None
        waited = await slots.acquire(self.timeout, urgent=urgent)
        deadline += waited
        try:
            with anyio.fail_after(max(deadline - anyio.current_time(), 0.001)):
                response = await client.send(self._request(path, data, token=token))
            slots.answered()
            return response.status_code, response.content
        except TimeoutError as exc:
            raise self.connection_error(exc, waited=waited) from exc
        except _TRANSPORT_ERRORS as exc:
            raise self.connection_error(exc) from exc
        finally:
            slots.release()

    async def _authenticate(self, stale: str | None) -> None:
        """Log in, unless another caller already replaced the ``stale`` token."""
        assert self._login is not None
        async with self._login:
            if self._token is not None and self._token != stale:
                return  # someone else logged in meanwhile
            if stale is not None:
                logger.info("etcd at %s refused the auth token; logging in again", self.where)
            self._token = None
            status, content = await self.post(
                AUTHENTICATE,
                _wire.encode({"name": self._username, "password": self._password}),
                deadline=anyio.current_time() + self.timeout,
                token=False,  # a clean request: a stale token would fail the login
            )
            body = _wire.read_answer(AUTHENTICATE, status, content, has_credentials=True)
            token = body.get("token")
            if not isinstance(token, str) or not token:
                raise StoreProtocolError(
                    f"etcd's answer to {AUTHENTICATE} has no token: {echo(body)}"
                )
            self._token = token
            logger.debug("logged in to etcd at %s as %r", self.where, self._username)

    def _retries(self) -> Iterator[float]:
        return backoff(0.05, 1.0)

    async def _attempts(self, path: str, send: Any, *, retry: bool) -> Any:
        """Run ``send()`` until it succeeds, retrying passing faults within the timeout.

        A refused connection, a timeout and an answer that etcd cannot serve the request
        now (no leader, stopping, unavailable) are retried with backoff until the
        timeout; a stale auth token is renewed once. Anything else is raised at once.
        """
        deadline = anyio.current_time() + self.timeout
        pauses: Iterator[float] | None = None
        renewed = False
        while True:
            token = self._token
            try:
                return await send(deadline)
            except _wire.InvalidToken:
                if renewed or not self.has_credentials:
                    raise
                renewed = True
                await self._authenticate(token)
            except StoreConnectionError as exc:
                if not retry:
                    raise
                pauses = pauses or self._retries()
                pause = next(pauses)
                if anyio.current_time() + pause >= deadline:
                    raise
                logger.warning(
                    "retrying %s on etcd at %s in %.2f s: %s", path, self.where, pause, exc
                )
                await anyio.sleep(pause)

    async def call(
        self, path: str, payload: dict[str, Any], *, retry: bool = True, urgent: bool = False
    ) -> dict[str, Any]:
        """One unary call; return the answer's JSON object.

        :param retry: retry passing faults within the timeout; only for requests that
            may be applied twice without harm
        :param urgent: go ahead of the queued requests that are not urgent: for the
            writes of a member that already holds a lease, which must not wait behind a
            burst of others' grants
        :raises StoreError: a subclass for what went wrong
        """
        data = _wire.encode(payload)

        async def send(deadline: float) -> dict[str, Any]:
            status, content = await self.post(path, data, deadline=deadline, urgent=urgent)
            return _wire.read_answer(path, status, content, has_credentials=self.has_credentials)

        result: dict[str, Any] = await self._attempts(path, send, retry=retry)
        return result

    async def renew(self, lease_ids: Collection[int]) -> dict[int, int]:
        """Renew many leases in one request; return the TTL etcd gave each it answered.

        The gateway's keep-alive endpoint takes a stream of requests and answers each.
        On HTTP/1 it may stop reading the body once it starts answering, so some
        leases can go unanswered: the caller sends those again.
        """
        data = "".join(f'{{"ID":"{lease_id}"}}' for lease_id in lease_ids).encode()

        async def send(deadline: float) -> dict[int, int]:
            status, content = await self.post(KEEPALIVE, data, deadline=deadline)
            if status != 200:
                _wire.read_answer(KEEPALIVE, status, content, has_credentials=self.has_credentials)
            renewed, error = _wire.renewals(
                content.decode("utf-8", "replace"), has_credentials=self.has_credentials
            )
            if error is not None and not renewed:
                raise error
            if not renewed:
                raise StoreConnectionError(f"etcd at {self.where} answered no keep-alive")
            return renewed

        result: dict[int, int] = await self._attempts(KEEPALIVE, send, retry=True)
        return result

    @property
    def token(self) -> str | None:
        """The auth token in use, if any."""
        return self._token

    async def relogin(self, stale: str | None) -> None:
        """Log in again, after etcd refused the ``stale`` token (once for many callers)."""
        await self._authenticate(stale)

    @asynccontextmanager
    async def stream(self, path: str, payload: dict[str, Any]) -> AsyncIterator[AsyncIterator[str]]:
        """Open a streaming call; yield its lines.

        The connection must be made and the answer's head arrive within the timeout;
        after that, the lines come as they come.

        :raises StoreError: a subclass for what went wrong
        """
        client = self._require_client()
        request = self._request(path, _wire.encode(payload))
        request.extensions["timeout"] = httpx.Timeout(self.timeout, read=None).as_dict()
        try:
            with anyio.fail_after(self.timeout):
                response = await client.send(request, stream=True)
        except TimeoutError as exc:
            raise self.connection_error(exc) from exc
        except _TRANSPORT_ERRORS as exc:
            raise self.connection_error(exc) from exc
        lines = response.aiter_lines()
        try:
            if response.status_code != 200:
                try:
                    with anyio.fail_after(self.timeout):
                        content = await response.aread()
                except TimeoutError as exc:
                    raise self.connection_error(exc) from exc
                _wire.read_answer(
                    path, response.status_code, content, has_credentials=self.has_credentials
                )
                raise StoreProtocolError(f"HTTP {response.status_code} on {path} from {self.where}")
            yield lines
        except StoreError:
            raise  # ours already (they are OSErrors too: PermissionError, ConnectionError)
        except _TRANSPORT_ERRORS as exc:
            raise self.connection_error(exc) from exc
        finally:
            await _finish_generators(response, lines)
