"""An httpx transport for ``EtcdStore(transport=...)`` that sends through the network as
the store's own would, and lets a test watch and steer the boundary: it records each
request's path, holds the requests of chosen paths until they are cancelled, and counts
how often it was closed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import httpx

if TYPE_CHECKING:
    from collections.abc import Collection


class RecordingTransport(httpx.AsyncBaseTransport):
    """A network transport that records, and can hold, requests.

    :param hold: the paths whose requests never get an answer (until cancelled)
    """

    def __init__(self, *, hold: Collection[str] = ()) -> None:
        self.hold = frozenset(hold)
        self.paths: list[str] = []
        self.closed = 0
        self._network = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.path in self.hold:
            await anyio.sleep_forever()
        return await self._network.handle_async_request(request)

    async def aclose(self) -> None:
        self.closed += 1
        await self._network.aclose()
