"""A loopback TCP proxy whose connections a test can cut, or refuse for a while."""

from __future__ import annotations

from typing import final

import anyio
import anyio.abc

from tests._support.loopback import LoopbackServer


@final
class TcpProxy(LoopbackServer):
    """Forward 127.0.0.1:<port> to ``target``; ``cut()`` drops every open connection,
    and while ``refusing`` is set, new connections are closed at once (an outage).
    While ``stalled`` is set, every connection, old or new, stays open but moves no
    data: a half-open link, as when a network path dies without a reset."""

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__()
        self.target = (target_host, target_port)
        self.refusing = False
        self.stalled = False
        self._scopes: set[anyio.CancelScope] = set()

    def cut(self) -> None:
        for scope in list(self._scopes):
            scope.cancel()

    async def handle(self, client: anyio.abc.SocketStream) -> None:
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
