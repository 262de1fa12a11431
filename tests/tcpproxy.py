"""A loopback TCP proxy whose connections a test can cut, or refuse for a while."""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import anyio
import anyio.abc
import anyio.streams.stapled

if TYPE_CHECKING:
    from types import TracebackType


@final
class TcpProxy:
    """Forward 127.0.0.1:<port> to ``target``; ``cut()`` drops every open connection,
    and while ``refusing`` is set, new connections are closed at once (an outage).
    While ``stalled`` is set, every connection, old or new, stays open but moves no
    data: a half-open link, as when a network path dies without a reset."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.refusing = False
        self.stalled = False
        self.port = 0
        self._scopes: set[anyio.CancelScope] = set()
        self._clients: set[anyio.abc.SocketStream] = set()
        self._tg: anyio.abc.TaskGroup | None = None
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> TcpProxy:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self._listener = listener
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._serve, listener)
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
        for client in self._clients:  # accepted, but cancelled before its handler ran
            await client.aclose()
        return result

    async def _serve(self, listener: anyio.abc.Listener[anyio.abc.SocketStream]) -> None:
        assert isinstance(listener, anyio.streams.stapled.MultiListener)
        (socket_listener,) = listener.listeners
        assert isinstance(socket_listener, anyio.abc.SocketListener)
        async with anyio.create_task_group() as tg:
            while True:
                client = await socket_listener.accept()
                self._clients.add(client)
                tg.start_soon(self._handle, client)

    def cut(self) -> None:
        for scope in list(self._scopes):
            scope.cancel()

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            self._clients.discard(client)
            if self.refusing:
                return
            try:
                upstream = await anyio.connect_tcp(*self.target)
            except OSError:
                return
            async with upstream:
                with anyio.CancelScope() as scope:
                    self._scopes.add(scope)
                    try:
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(self._pipe, client, upstream, tg.cancel_scope)
                            tg.start_soon(self._pipe, upstream, client, tg.cancel_scope)
                    finally:
                        self._scopes.discard(scope)

    async def _pipe(
        self,
        source: anyio.abc.SocketStream,
        sink: anyio.abc.SocketStream,
        scope: anyio.CancelScope,
    ) -> None:
        try:
            async for chunk in source:
                while self.stalled:  # noqa: ASYNC110 - a test flips it
                    await anyio.sleep(0.02)
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        scope.cancel()
