"""A TCP server on 127.0.0.1 for the tests' stand-ins (a proxy, a fake gateway): it runs
one handler task per connection, and closes every connection it accepted when it stops,
even one whose handler was cancelled before it ran."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.abc

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self


class LoopbackServer:
    """Subclasses implement ``handle(client)``; use the server as an async context manager."""

    def __init__(self) -> None:
        self.port = 0
        self._clients: set[anyio.abc.SocketStream] = set()
        self._tg: anyio.abc.TaskGroup | None = None
        self._listener: anyio.abc.SocketListener | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def handle(self, client: anyio.abc.SocketStream) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        multi = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        (listener,) = multi.listeners
        assert isinstance(listener, anyio.abc.SocketListener)
        self._listener = listener
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._accept, listener)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        assert self._listener is not None
        self._tg.cancel_scope.cancel()
        result = await self._tg.__aexit__(exc_type, exc, tb)
        await self._listener.aclose()
        for client in self._clients:
            await client.aclose()
        return result

    async def _accept(self, listener: anyio.abc.SocketListener) -> None:
        async with anyio.create_task_group() as tg:
            while True:
                client = await listener.accept()
                self._clients.add(client)
                tg.start_soon(self._run, client)

    async def _run(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            try:
                await self.handle(client)
            finally:
                self._clients.discard(client)
