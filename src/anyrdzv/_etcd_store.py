from __future__ import annotations

import base64
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
    from collections.abc import AsyncGenerator, AsyncIterator
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

    def __repr__(self) -> str:
        return f"EtcdStore({str(self.endpoint)!r})"

    async def __aenter__(self) -> EtcdStore:
        self._client = httpx.AsyncClient(
            base_url=self._base_url,
            verify=self._ssl if self._ssl is not None else True,
            timeout=httpx.Timeout(self._timeout),
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

    def _request(self, path: str, payload: dict[str, Any]) -> httpx.Request:
        data = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
        if self._token:
            headers["Authorization"] = self._token
        request = self._require_client().build_request("POST", path, headers=headers)
        request.stream = _Body(data)
        return request

    async def _call(
        self, path: str, payload: dict[str, Any], *, authenticate: bool = True
    ) -> dict[str, Any]:
        client = self._require_client()
        for attempt in (1, 2):
            try:
                with anyio.fail_after(self._timeout):
                    response = await client.send(self._request(path, payload))
            except TimeoutError as exc:
                raise self._connection_error(httpx.TimeoutException(str(exc))) from exc
            except httpx.TransportError as exc:
                raise self._connection_error(exc) from exc
            try:
                body: dict[str, Any] = response.json()
            except ValueError:
                body = {"error": response.text[:200]}
            if response.status_code == 200 and "error" not in body:
                return body
            if (
                attempt == 1
                and authenticate
                and self._username is not None
                and "token" in str(body.get("message", body.get("error", "")))
            ):
                await self._authenticate()  # the auth token expired: log in again, once
                continue
            self._raise_for_error(path, response.status_code, body)
        raise AssertionError("unreachable")  # pragma: no cover

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

        :raises LeaseExpired: if the lease is gone
        """
        body = await self._call("/v3/lease/keepalive", {"ID": str(lease.id)})
        ttl = int(body.get("result", {}).get("TTL", 0))
        if ttl <= 0:
            raise LeaseExpired(f"lease {lease.id} has expired or was revoked")
        return ttl

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
        http_request = self._request("/v3/watch", request)
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
                    self._raise_for_error("/v3/watch", 200, message)
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
