from __future__ import annotations

import base64
import copy
import json
import ssl as _ssl
from typing import TYPE_CHECKING, Any, final

import anyio
import httpx

from ._endpoint import Endpoint, parse_rendezvous_endpoint
from ._store import (
    EventType,
    Lease,
    LeaseExpired,
    StoreCompacted,
    StoreConnectionError,
    StoreError,
    StoreEvent,
    StorePermissionError,
    check_put,
    check_ttl,
)
from ._util import check_positive_finite, check_str

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Collection
    from types import TracebackType

ETCD_DEFAULT_PORT = 2379

# gRPC status codes that etcd's JSON gateway reports in {"code": ...}
_NOT_FOUND = 5
_PERMISSION_DENIED = 7
_UNAUTHENTICATED = 16
# etcd 3.4 reports these auth failures as InvalidArgument (code 3), so match the text.
_AUTH_MESSAGES = (
    "user name is empty",
    "authentication failed",
    "invalid auth token",
    "permission denied",
    "auth: revision",
)
_KEEPALIVE = "/v3/lease/keepalive"
# The most keep-alives one request to the gateway carries.
_MAX_RENEWALS = 1000
# How long a keep-alive waits for others to share its request, in seconds: 5 ms, on a
# lease of at least 1 s. With 1,000 leases renewed each second it makes requests of
# about 14 keep-alives instead of 1.35, and takes this process from 58 % of a core to
# 15 % (docs/benchmarks.md).
_RENEWAL_LINGER = 0.005
# The most requests in flight at once, watches aside: 4 for grants, puts and the like,
# and 2 more for keep-alives, so that a burst of joins never starves the heartbeats of
# the members already in. More do not get etcd's answers sooner, and they cost CPU
# here: httpcore's pool scans every connection and every queued request each time one
# starts or ends (a grant costs 1.3 ms of CPU with 50 in flight, 0.65 ms with 4).
_MAX_REQUESTS = 4
_MAX_RENEWAL_REQUESTS = 2


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _prefix_end(prefix: str) -> str:
    """The etcd ``range_end`` that selects every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return base64.b64encode(b"\0").decode()  # the whole key space
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


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


def _stream_error(message: object) -> dict[str, Any]:
    """The flat error body for a message in a gateway stream that is not a result."""
    error = message.get("error") if isinstance(message, dict) else None
    if isinstance(error, dict):
        return {"code": error.get("grpc_code"), "message": error.get("message")}
    return {"error": str(error if error is not None else message)[:200]}


def _parse_renewals(text: str) -> tuple[dict[int, int], dict[str, Any] | None]:
    """Read the gateway's answers to a batch of keep-alives, one JSON object a line.

    Return the TTL of each lease answered (0 for a gone lease), and the error body
    if a line is not an answer. The answers before such a line are kept.
    """
    renewed: dict[int, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            return renewed, {"error": line[:200]}
        result = message.get("result") if isinstance(message, dict) else None
        try:
            if not isinstance(result, dict):
                raise TypeError
            renewed[int(result["ID"])] = int(result.get("TTL", 0))
        except (KeyError, TypeError, ValueError):
            return renewed, _stream_error(message)
    return renewed, None


def _json_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"error": response.text[:200]}
    return body if isinstance(body, dict) else {"error": response.text[:200]}


@final
class _Renewal:
    """One caller's keep-alive, waiting to ride in a batch."""

    __slots__ = ("error", "lease_id", "sending", "ttl")

    def __init__(self, lease_id: int) -> None:
        self.lease_id = lease_id
        self.sending = False  # in a request now in flight
        self.ttl: int | None = None
        self.error: StoreError | None = None

    @property
    def answered(self) -> bool:
        return self.ttl is not None or self.error is not None


@final
class EtcdStore:
    """A :class:`LeaseStore` on etcd (3.4+), through its v3 JSON gateway, with httpx.

    httpx runs on anyio, so this works on asyncio, uvloop and trio alike. Use it as an
    async context manager::

        async with EtcdStore("etcd1:2379", timeout=5) as store:
            ...

    :param endpoint: ``host[:port]``, parsed like torch's endpoints, default port 2379
    :param ssl: an SSL context for HTTPS; ``None`` means plain HTTP
    :param username: the etcd user, when etcd has auth enabled
    :param password: that user's password
    :param timeout: how long any one request may take, in seconds; an unreachable
        store raises :class:`StoreConnectionError` within it
    :raises ValueError: if the endpoint is malformed, or ``timeout`` is not positive
    :raises TypeError: if an argument has the wrong type
    """

    def __init__(
        self,
        endpoint: str = "localhost:2379",
        *,
        ssl: _ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.endpoint: Endpoint = parse_rendezvous_endpoint(endpoint, ETCD_DEFAULT_PORT)
        if ssl is not None and not isinstance(ssl, _ssl.SSLContext):
            raise TypeError(f"ssl must be an ssl.SSLContext or None, got {type(ssl).__qualname__}")
        if username is not None:
            check_str("username", username)
        if password is not None:
            check_str("password", password)
        if (username is None) != (password is None):
            raise ValueError("username and password go together: give both or neither")
        self._timeout = check_positive_finite("timeout", timeout)
        self._ssl = ssl
        self._username = username
        self._password = password
        host = self.endpoint.host
        if ":" in host:
            host = f"[{host.replace('%', '%25')}]"
        self._base_url = f"{'https' if ssl else 'http'}://{host}:{self.endpoint.port}"
        self._client: httpx.AsyncClient | None = None
        self._token: str | None = None
        # Keep-alives waiting for the next request; whether a caller is gathering them;
        # and an event set whenever either changes.
        self._renewals: list[_Renewal] = []
        self._gathering = False
        self._renewals_changed: anyio.Event | None = None
        self._requests: anyio.CapacityLimiter | None = None
        self._renewal_requests: anyio.CapacityLimiter | None = None

    def __repr__(self) -> str:
        return f"EtcdStore({str(self.endpoint)!r})"

    async def __aenter__(self) -> EtcdStore:
        # Made here, not in __init__: they belong to the event loop that opens the store.
        self._renewals, self._gathering, self._renewals_changed = [], False, None
        self._requests = anyio.CapacityLimiter(_MAX_REQUESTS)
        self._renewal_requests = anyio.CapacityLimiter(_MAX_RENEWAL_REQUESTS)
        self._client = httpx.AsyncClient(
            base_url=self._base_url,
            verify=self._ssl if self._ssl is not None else True,
            timeout=httpx.Timeout(self._timeout),
            # Each watch holds a connection; the requests beside them are few (above).
            limits=httpx.Limits(
                max_connections=None,
                max_keepalive_connections=_MAX_REQUESTS + _MAX_RENEWAL_REQUESTS,
            ),
            trust_env=False,
        )
        try:
            if self._username is not None:
                await self._authenticate()
            else:
                await self._call("/v3/maintenance/status", {})
        except BaseException:
            await self.aclose()
            raise
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
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- HTTP ---------------------------------------------------------------------------

    def _connection_error(self, exc: Exception) -> StoreConnectionError:
        text = str(exc) or type(exc).__name__
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, _ssl.SSLError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None or "CERTIFICATE_VERIFY_FAILED" in text:
            text = str(cause or text)
            return StoreConnectionError(
                f"TLS with etcd at {self.endpoint} failed: {text}. Pass ssl= an SSLContext "
                "that trusts the server's CA (ssl.create_default_context(cafile=...))"
            )
        if isinstance(exc, httpx.TimeoutException):
            return StoreConnectionError(
                f"etcd at {self.endpoint} did not answer within {self._timeout} s ({text})"
            )
        return StoreConnectionError(f"cannot reach etcd at {self.endpoint}: {text}")

    def _raise_for_error(self, path: str, status: int, body: dict[str, Any]) -> None:
        code = body.get("code")
        message = str(body.get("message") or body.get("error") or f"HTTP {status}")
        if (
            code in (_UNAUTHENTICATED, _PERMISSION_DENIED)
            or status in (401, 403)
            or any(text in message for text in _AUTH_MESSAGES)
        ):
            hint = "" if self._username else " (etcd has auth enabled: pass username and password)"
            raise StorePermissionError(f"etcd refused {path}: {message}{hint}")
        if code == _NOT_FOUND and "lease not found" in message:
            raise LeaseExpired(message)
        raise StoreError(f"etcd error on {path}: {message} (code {code}, HTTP {status})")

    async def _authenticate(self) -> None:
        body = await self._call(
            "/v3/auth/authenticate",
            {"name": self._username, "password": self._password},
            authenticate=False,
        )
        self._token = str(body["token"])

    def _request(self, path: str, data: bytes) -> httpx.Request:
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
        if self._token:
            headers["Authorization"] = self._token
        request = self._require_client().build_request("POST", path, headers=headers)
        request.stream = _Body(data)
        return request

    async def _post(self, path: str, data: bytes) -> httpx.Response:
        client = self._require_client()
        limiter = self._renewal_requests if path == _KEEPALIVE else self._requests
        assert limiter is not None
        try:
            with anyio.fail_after(self._timeout):
                async with limiter:
                    return await client.send(self._request(path, data))
        except TimeoutError as exc:
            raise self._connection_error(httpx.TimeoutException(str(exc))) from exc
        except httpx.TransportError as exc:
            raise self._connection_error(exc) from exc

    def _token_expired(self, body: dict[str, Any]) -> bool:
        return self._username is not None and "token" in str(
            body.get("message", body.get("error", ""))
        )

    async def _call(
        self, path: str, payload: dict[str, Any], *, authenticate: bool = True
    ) -> dict[str, Any]:
        data = json.dumps(payload).encode()
        for attempt in (1, 2):
            response = await self._post(path, data)
            body = _json_body(response)
            if response.status_code == 200 and "error" not in body:
                return body
            if attempt == 1 and authenticate and self._token_expired(body):
                await self._authenticate()  # the auth token expired: log in again, once
                continue
            self._raise_for_error(path, response.status_code, body)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _renew(self, lease_ids: Collection[int]) -> dict[int, int]:
        """Renew many leases in one request; return the TTL etcd gave each it answered.

        The gateway's keep-alive endpoint takes a stream of requests and answers each.
        On HTTP/1 it may stop reading the body once it starts answering, so some
        leases can go unanswered: the caller sends those again.
        """
        path = _KEEPALIVE
        data = "".join(f'{{"ID":"{lease_id}"}}' for lease_id in lease_ids).encode()
        for attempt in (1, 2):
            response = await self._post(path, data)
            if response.status_code == 200:
                renewed, error = _parse_renewals(response.text)
            else:
                renewed, error = {}, _json_body(response)
            if error is None:
                return renewed
            if attempt == 1 and self._token_expired(error):
                await self._authenticate()
                continue
            self._raise_for_error(path, response.status_code, error)
        raise AssertionError("unreachable")  # pragma: no cover

    def _notify_renewals(self) -> None:
        changed, self._renewals_changed = self._renewals_changed, anyio.Event()
        if changed is not None:
            changed.set()

    async def _send_renewals(self) -> None:
        """Gather the keep-alives that come within a moment, send them, hand out answers.

        One caller gathers at a time; its request then flies while the next one gathers.
        """
        self._gathering = True
        try:
            await anyio.sleep(_RENEWAL_LINGER)  # let the keep-alives due about now join in
        finally:
            self._gathering = False
            self._notify_renewals()
        batch = self._renewals[:_MAX_RENEWALS]
        if not batch:
            return  # every caller gave up meanwhile
        del self._renewals[:_MAX_RENEWALS]
        for renewal in batch:
            renewal.sending = True
        try:
            try:
                renewed = await self._renew(dict.fromkeys(r.lease_id for r in batch))
                if not renewed:
                    raise StoreError(f"etcd at {self.endpoint} answered no keep-alive")
            except StoreError as exc:
                for renewal in batch:
                    renewal.error = exc
            else:
                for renewal in batch:
                    renewal.ttl = renewed.get(renewal.lease_id)
        finally:
            # Unanswered ones (the gateway stopped reading, or this task was cancelled)
            # go first in the next request.
            unanswered = [r for r in batch if not r.answered]
            for renewal in unanswered:
                renewal.sending = False
            self._renewals[:0] = unanswered
            self._notify_renewals()

    def _require_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("EtcdStore is not open: use it as 'async with EtcdStore(...)'")
        return self._client

    # -- the LeaseStore protocol ------------------------------------------------------------

    async def grant(self, ttl: int) -> Lease:
        """Grant a lease that lives ``ttl`` seconds unless kept alive.

        etcd may raise a very short TTL to its minimum; the lease says what was granted.
        """
        check_ttl(ttl)
        body = await self._call("/v3/lease/grant", {"TTL": str(ttl)})
        return Lease(int(body["ID"]), int(body.get("TTL", ttl)))

    async def keep_alive(self, lease: Lease) -> int:
        """Renew ``lease`` and return its remaining TTL.

        Keep-alives from concurrent callers share requests, as etcd's own client shares
        one keep-alive stream: the calls that come within 5 ms ride in one request, and
        the next ones gather while it flies.

        :raises LeaseExpired: if the lease is gone
        """
        self._require_client()
        renewal = _Renewal(lease.id)
        self._renewals.append(renewal)
        try:
            with anyio.fail_after(self._timeout):
                while not renewal.answered:
                    if renewal.sending or self._gathering:
                        if self._renewals_changed is None:
                            self._renewals_changed = anyio.Event()
                        await self._renewals_changed.wait()
                    else:
                        await self._send_renewals()
        except TimeoutError as exc:
            raise self._connection_error(httpx.TimeoutException(str(exc))) from exc
        finally:
            if not renewal.answered and not renewal.sending:
                self._renewals.remove(renewal)
        if renewal.error is not None:
            raise copy.copy(renewal.error) from renewal.error
        if not renewal.ttl or renewal.ttl <= 0:
            raise LeaseExpired(f"lease {lease.id} has expired or was revoked")
        return renewal.ttl

    async def revoke(self, lease: Lease) -> None:
        """Revoke ``lease`` now, deleting its keys. A gone lease is not an error."""
        try:
            await self._call("/v3/lease/revoke", {"ID": str(lease.id)})
        except LeaseExpired:
            pass

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        """Set ``key`` to ``value``, under ``lease`` if given; return the new revision.

        :raises LeaseExpired: if ``lease`` is gone
        """
        check_put(key, value)
        payload: dict[str, Any] = {"key": _b64(key), "value": base64.b64encode(value).decode()}
        if lease is not None:
            payload["lease"] = str(lease.id)
        body = await self._call("/v3/kv/put", payload)
        return int(body["header"]["revision"])

    async def get_prefix(self, prefix: str) -> tuple[dict[str, bytes], int]:
        """Return every key under ``prefix`` with its value, and the store revision."""
        check_str("prefix", prefix)
        body = await self._call(
            "/v3/kv/range", {"key": _b64(prefix), "range_end": _prefix_end(prefix)}
        )
        found = {
            _unb64(kv["key"]).decode(): _unb64(kv.get("value", "")) for kv in body.get("kvs", [])
        }
        return found, int(body["header"]["revision"])

    async def watch_prefix(
        self, prefix: str, *, start_revision: int
    ) -> AsyncGenerator[StoreEvent, None]:
        """Yield every change under ``prefix`` from ``start_revision`` on, in order.

        :raises StoreCompacted: if ``start_revision`` has been compacted
        :raises StoreConnectionError: if the stream breaks; resume from the next revision
        """
        check_str("prefix", prefix)
        client = self._require_client()
        request = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _prefix_end(prefix),
                "start_revision": str(start_revision),
            }
        }
        http_request = self._request("/v3/watch", json.dumps(request).encode())
        # A quiet watch is not an error: no read timeout on the stream.
        http_request.extensions["timeout"] = httpx.Timeout(self._timeout, read=None).as_dict()
        try:
            response = await client.send(http_request, stream=True)
        except httpx.TransportError as exc:
            raise self._connection_error(exc) from exc
        lines = response.aiter_lines()
        try:
            if response.status_code != 200:
                await response.aread()
                self._raise_for_error("/v3/watch", response.status_code, response.json())
            async for line in lines:
                if not line.strip():
                    continue
                message = json.loads(line)
                if "error" in message:
                    self._raise_for_error("/v3/watch", 200, _stream_error(message))
                result = message.get("result", {})
                if result.get("compact_revision"):
                    compacted = int(result["compact_revision"])
                    raise StoreCompacted(
                        f"revision {start_revision} has been compacted; "
                        f"the oldest kept is {compacted}",
                        compacted,
                    )
                if result.get("canceled"):
                    raise StoreConnectionError(
                        f"etcd cancelled the watch: {result.get('cancel_reason', '')}"
                    )
                for event in result.get("events", []):
                    kv = event["kv"]
                    kind = EventType.DELETE if event.get("type") == "DELETE" else EventType.PUT
                    yield StoreEvent(
                        kind,
                        _unb64(kv["key"]).decode(),
                        _unb64(kv.get("value", "")),
                        int(kv["mod_revision"]),
                    )
        except httpx.TransportError as exc:
            raise self._connection_error(exc) from exc
        finally:
            await _finish_generators(response, lines)
        raise StoreConnectionError(f"etcd at {self.endpoint} closed the watch stream")
