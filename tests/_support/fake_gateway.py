"""A loopback HTTP/1.1 server that answers as a test says: for answers no real etcd can
be made to give (a server that is not etcd, a gateway with no leader)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, final

import anyio
import anyio.abc

from tests._support.loopback import LoopbackServer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


@dataclass
class Answer:
    """What the server sends back: a whole body, or lines sent as a stream (chunked).

    With ``hold``, a streamed answer is left open after its lines, as a quiet watch.
    """

    status: int = 200
    body: bytes = b""
    lines: list[bytes] | None = None
    hold: bool = False
    content_type: str = "application/json"


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 502: "Bad Gateway"}


@final
class FakeGateway(LoopbackServer):
    """Serve ``handler(request) -> Answer`` on 127.0.0.1; ``requests`` records each request."""

    def __init__(self, handler: Callable[[Request], Answer | Awaitable[Answer]]) -> None:
        super().__init__()
        self.handler = handler
        self.requests: list[Request] = []

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]

    async def handle(self, client: anyio.abc.SocketStream) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    buffer += await client.receive()
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                while len(buffer) < length:
                    buffer += await client.receive()
                body, buffer = buffer[:length], buffer[length:]
                request = Request(path, headers, body)
                self.requests.append(request)
                answer = self.handler(request)
                if not isinstance(answer, Answer):
                    answer = await answer
                if not await self._answer(client, answer):
                    return
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return

    @staticmethod
    async def _answer(client: anyio.abc.SocketStream, answer: Answer) -> bool:
        """Send ``answer``; return whether the connection can take another request."""
        reason = _REASONS.get(answer.status, "Status")
        head = f"HTTP/1.1 {answer.status} {reason}\r\nContent-Type: {answer.content_type}\r\n"
        if answer.lines is None:
            await client.send(
                f"{head}Content-Length: {len(answer.body)}\r\n\r\n".encode() + answer.body
            )
            return True
        await client.send(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
        for line in answer.lines:
            chunk = line + b"\n"
            await client.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        if answer.hold:
            await anyio.sleep_forever()
        await client.send(b"0\r\n\r\n")
        return True
