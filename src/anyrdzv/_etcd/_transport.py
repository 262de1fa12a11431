"""The HTTP transport under etcd's JSON gateway: the httpx client's lifetime, posting one
request, opening one stream, and the one map from httpx's, the OS's and TLS's errors to
:class:`~anyrdzv.StoreError`\\ s, with the TLS diagnosis.

It knows URLs and deadlines, not members, slots or retries: those are the gateway's.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import os
import ssl as _ssl
import threading
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, final

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx

from .._checks import cut
from .._exceptions import StoreConnectionError, StoreError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

# Imported now, once: httpx imports httpcore when the first client is made, and httpcore
# its network backend at the first connection; 0.1 s of imports that would otherwise
# stall the event loop when the first store of a process opens. (A worker thread would
# not do: an import holds the GIL for most of its time.)
for _lazy in ("httpcore", "httpcore._backends.anyio", "httpcore._backends.trio"):
    with contextlib.suppress(ImportError):  # trio's backend, without trio
        importlib.import_module(_lazy)

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


async def _finish_generators(response: httpx.Response, lines: AsyncIterator[str] | None) -> None:
    """Close a streamed response so that httpx's chain of async generators ends now.

    ``aiter_lines()`` reads through half a dozen nested async generators in httpx and
    httpcore. Leaving it mid-stream leaves them all suspended, for the event loop's
    garbage-collection hooks to finalise later, in stray tasks. Closing the response
    and then advancing the iterator once makes the innermost read fail, and that error
    unwinds, and so finishes, every generator in the chain.
    """
    with anyio.CancelScope(shield=True):
        await response.aclose()
        if lines is None:
            return  # no line was asked for: there is no chain to unwind
        try:
            await lines.__anext__()
        except (httpx.HTTPError, httpx.StreamError, StopAsyncIteration):
            pass  # the closed stream's ReadError: the chain has unwound


_context_made = threading.Lock()


@functools.cache
def _made_context() -> _ssl.SSLContext:
    return _ssl.create_default_context()


def _default_context() -> _ssl.SSLContext:
    # One thread makes it; stores that open at once wait for it in their worker threads
    # (functools.cache alone lets each of them make one, and starve the loop).
    with _context_made:
        return _made_context()


async def default_context() -> _ssl.SSLContext:
    """The SSL context with the system's CAs: for ``https://`` members without ``ssl=``,
    and for a client that only speaks plain HTTP (httpx would load certifi's whole bundle
    for each new client, for a context never used).

    Made once a process, in a worker thread: loading the CAs takes 20 to 50 ms, which
    would stall the event loop.
    """
    if _made_context.cache_info().currsize:
        return _made_context()
    return await anyio.to_thread.run_sync(_default_context)


def _ssl_error(exc: BaseException) -> _ssl.SSLError | None:
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, _ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    return cause


def _is_tls(exc: BaseException) -> bool:
    """Whether ``exc`` is, or comes from, a TLS failure."""
    return _ssl_error(exc) is not None or "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _seconds(limit: float) -> str:
    """A request's time limit for a message, rounded up to the hundredth: what is left of
    a 0.5-s timeout when the request goes out is 0.4994 s, and the user set 0.5."""
    return f"{math.ceil(limit * 100 - 1e-6) / 100:g}"


def connection_error(
    exc: BaseException, *, where: str, limit: float, waited: float = 0.0
) -> StoreError:
    """Our error for a transport failure from ``where``: httpx's exceptions, an OSError,
    a TLS failure, or a timeout after ``limit`` seconds (``waited`` of them queued)."""
    text = cut(str(exc) or type(exc).__name__)
    if _is_tls(exc):
        reason = cut(str(_ssl_error(exc) or text))
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
            f"etcd at {where} did not answer within {_seconds(limit)} s{queued} ({text})"
        )
    return StoreConnectionError(f"cannot reach etcd at {where}: {text}")


@contextmanager
def map_errors(where: str, *, limit: float, waited: float = 0.0) -> Iterator[None]:
    """Turn what a request to ``where`` may raise into a :class:`StoreError`: the one
    place where httpx's, the OS's and TLS's errors, and our timeouts, become ours.

    :param limit: how long the request had, for the message of a timeout
    :param waited: how long it queued for a request slot first, likewise
    """
    try:
        yield
    except StoreError:
        raise  # ours already (they are OSErrors too: PermissionError, ConnectionError)
    except (TimeoutError, *_TRANSPORT_ERRORS) as exc:
        raise connection_error(exc, where=where, limit=limit, waited=waited) from exc
    except AttributeError as exc:
        if not _socket_gone(exc):
            raise
        raise StoreConnectionError(
            f"cannot reach etcd at {where}: the connection closed as it was made ({cut(str(exc))})"
        ) from exc


def _socket_gone(exc: AttributeError) -> bool:
    """Whether ``exc`` is anyio's socket stream finding no socket: on uvloop, a
    connection that the server closes as it is made (a member killed that moment) has
    none, and httpcore's first look at the stream's attributes fails so."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}anyio{os.sep}" in tb.tb_frame.f_code.co_filename


def handshake_hint(
    exc: StoreConnectionError, *, where: str, tls: bool
) -> StoreConnectionError | None:
    """A clearer error for a first contact that failed as a TLS mismatch does, or
    ``None``: a TLS client whose handshake was broken off, or a plain HTTP client that
    a TLS port hung up on.

    :param tls: whether the client spoke TLS
    """
    cause = exc.__cause__
    if (
        tls
        and isinstance(cause, httpx.ConnectError | httpx.ReadError)
        and (not str(cause) or "reset" in str(cause) or "broken" in str(cause))
    ):
        # uvloop and trio may report a failed handshake this way, with no SSL error to
        # say why, or as a reset connection: name both likely causes.
        return StoreConnectionError(
            f"TLS with etcd at {where} failed: the handshake was broken off, "
            "with no reason given. Pass ssl= an SSLContext that trusts the "
            "server's CA; or, if it serves plain HTTP, use an http:// endpoint "
            "and no ssl="
        )
    if not tls and isinstance(cause, httpx.RemoteProtocolError | httpx.ReadError):
        # What a TLS port does to plain HTTP: it hangs up without a word.
        return StoreConnectionError(
            f"etcd at {where} closed the connection without answering "
            f"({cut(str(cause)) or type(cause).__name__}). If it serves TLS, "
            "use an https:// endpoint or pass ssl="
        )
    return None


def is_tls_failure(exc: StoreConnectionError, *, tls: bool) -> bool:
    """Whether ``exc`` is a failed TLS handshake, or what a TLS mismatch looks like on
    first contact (see :func:`handshake_hint`): a failure that no retry mends.

    :param tls: whether the client spoke TLS
    """
    cause = exc.__cause__
    return (cause is not None and _is_tls(cause)) or handshake_hint(
        exc, where="", tls=tls
    ) is not None


@final
class StreamedAnswer:
    """The head of a streamed answer, and its lines as they come."""

    def __init__(self, response: httpx.Response, limit: float) -> None:
        self._response = response
        self._limit = limit
        self._lines: AsyncIterator[str] | None = None

    @property
    def lines(self) -> AsyncIterator[str]:
        """The answer's lines, as they come. Made when first asked for: an error answer
        whose body is read whole (:meth:`read`) leaves no chain of generators behind."""
        if self._lines is None:
            self._lines = self._response.aiter_lines()
        return self._lines

    @property
    def status(self) -> int:
        return self._response.status_code

    async def read(self) -> bytes:
        """The whole body (of an error answer), within the head's time limit.

        :raises TimeoutError: if it does not come in time
        """
        with anyio.fail_after(self._limit):
            return await self._response.aread()


@final
class Transport:
    """An httpx client for the members' gateways, open while the store is.

    :param ssl: the SSL context for HTTPS, or ``None`` for plain HTTP, or for the
        system's CAs
    :param tls: whether it speaks TLS (to a member at least)
    :param timeout: httpx's own bound on each request, a backstop behind our deadlines
    :param keepalive_connections: how many idle connections to keep
    :param transport: the httpx transport to send through; ``None`` for the network
    """

    def __init__(
        self,
        *,
        ssl: _ssl.SSLContext | None,
        tls: bool,
        timeout: float,
        keepalive_connections: int,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.tls = tls
        self._ssl = ssl
        self._timeout = timeout
        self._keepalive_connections = keepalive_connections
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    @property
    def is_open(self) -> bool:
        return self._client is not None

    async def context(self) -> _ssl.SSLContext:
        """The SSL context to open with: the one given, or else the system's."""
        if self._ssl is not None:
            await anyio.lowlevel.checkpoint()
            return self._ssl
        return await default_context()

    def open(self, context: _ssl.SSLContext) -> None:
        """Make the HTTP client (no connection yet), with ``context`` (:meth:`context`)."""
        self._client = httpx.AsyncClient(
            verify=context,
            timeout=httpx.Timeout(self._timeout),
            # Each watch holds a connection; the requests beside them are few.
            limits=httpx.Limits(
                max_connections=None, max_keepalive_connections=self._keepalive_connections
            ),
            trust_env=False,
            transport=self._transport,
        )

    async def aclose(self) -> None:
        """Close the HTTP connections (and an injected transport, as httpx does)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def require_open(self) -> httpx.AsyncClient:
        """:raises RuntimeError: if the store is not open"""
        if self._client is None:
            raise RuntimeError("EtcdStore is not open: use it as 'async with EtcdStore(...)'")
        return self._client

    def _request(self, url: str, data: bytes, token: str | None) -> httpx.Request:
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
        if token:
            headers["Authorization"] = token
        request = self.require_open().build_request("POST", url, headers=headers)
        request.stream = _Body(data)
        return request

    async def post(
        self,
        url: str,
        data: bytes,
        *,
        token: str | None,
        where: str,
        limit: float,
        waited: float = 0.0,
    ) -> tuple[int, bytes]:
        """POST ``data`` to ``url``; return the HTTP status and the body.

        :param token: the auth token to send, if any
        :param where: how error messages name the member
        :param limit: how long the answer may take, in seconds
        :param waited: how long the request queued for a slot, for the timeout's message
        :raises StoreConnectionError: if it fails, or no answer comes within ``limit``
        """
        client = self.require_open()
        with map_errors(where, limit=limit, waited=waited), anyio.fail_after(limit):
            response = await client.send(self._request(url, data, token))
        return response.status_code, response.content

    @asynccontextmanager
    async def stream(
        self, url: str, data: bytes, *, token: str | None, where: str, limit: float
    ) -> AsyncIterator[StreamedAnswer]:
        """POST ``data`` to ``url`` and stream the answer.

        The connection must be made and the answer's head arrive within ``limit``
        seconds, and an error answer's body too; after that, the lines come as they
        come. Transport errors in the caller's block become ours as well.

        :raises StoreConnectionError: if it fails, or the head is late
        """
        client = self.require_open()
        request = self._request(url, data, token)
        request.extensions["timeout"] = httpx.Timeout(limit, read=None).as_dict()
        with map_errors(where, limit=limit):
            with anyio.fail_after(limit):
                response = await client.send(request, stream=True)
            answer = StreamedAnswer(response, limit)
            try:
                yield answer
            finally:
                await _finish_generators(response, answer._lines)
