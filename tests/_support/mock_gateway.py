"""etcd members that answer as a test says, with no socket: one ``httpx.MockTransport``,
passed to ``EtcdStore(transport=...)``, serves every member, each with a handler of
:class:`~tests._support.fake_gateway.FakeGateway`'s kind (``Request -> Answer``, or an
awaitable of one, which may sleep to stall).

Use the loopback :class:`FakeGateway` where the real socket matters (a refused
connection, a server that stops listening, a chunked stream held open on a socket).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import anyio
import httpx

from tests._support.fake_gateway import Answer, Request

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    Handler = Callable[[Request], Answer | Awaitable[Answer]]


@final
class MockMember:
    """One member: its endpoint, its handler, and the requests it got."""

    def __init__(self, port: int, handler: Handler) -> None:
        self.port = port
        self.endpoint = f"127.0.0.1:{port}"
        self.handler = handler
        self.requests: list[Request] = []

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]


@final
class _Lines(httpx.AsyncByteStream):
    """A streamed answer's lines; with ``hold``, then nothing until the client closes
    it, as a quiet watch; once closed, a read fails as on a closed socket."""

    def __init__(self, lines: list[bytes], hold: bool) -> None:
        self._lines = lines
        self._hold = hold
        self._closed: anyio.Event | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._closed = closed = anyio.Event()
        for line in self._lines:
            if closed.is_set():
                raise httpx.ReadError("the stream was closed")
            yield line + b"\n"
        if self._hold:
            await closed.wait()
            raise httpx.ReadError("the stream was closed")

    async def aclose(self) -> None:
        if self._closed is not None:
            self._closed.set()


@final
class MockGateways:
    """Members on ports 23791, 23792, ..., one per handler, behind :attr:`transport`."""

    def __init__(self, *handlers: Handler) -> None:
        self.members = [MockMember(23791 + i, handler) for i, handler in enumerate(handlers)]
        self._by_endpoint = {member.endpoint: member for member in self.members}
        self.transport = httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        member = self._by_endpoint[f"{request.url.host}:{request.url.port}"]
        headers = {name.lower(): value for name, value in request.headers.items()}
        # The store sends its body as a stream of its own, which ``request.content``
        # (read by MockTransport before this) does not hold.
        assert isinstance(request.stream, httpx.AsyncByteStream)
        body = b"".join([chunk async for chunk in request.stream])
        seen = Request(request.url.path, headers, body)
        member.requests.append(seen)
        answer = member.handler(seen)
        if not isinstance(answer, Answer):
            answer = await answer
        head = {"Content-Type": answer.content_type}
        if answer.lines is None:
            return httpx.Response(answer.status, headers=head, content=answer.body)
        return httpx.Response(answer.status, headers=head, stream=_Lines(answer.lines, answer.hold))
