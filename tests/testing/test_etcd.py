"""use_member: the member an EtcdStore talks to, chosen by a test, before it opens and
while it is open (its watches move along)."""

from __future__ import annotations

import json
import logging
from contextlib import aclosing

import anyio
import pytest

from anyrdzv import EtcdStore, MemoryStore, StoreEvent
from anyrdzv.testing import use_member
from tests._support.fake_gateway import Answer, Request
from tests._support.mock_gateway import MockGateways

pytestmark = pytest.mark.anyio

HEADER = {"header": {"member_id": "1", "revision": "4"}}
CREATED = json.dumps({"result": {**HEADER, "created": True}}).encode()


def healthy(request: Request) -> Answer:
    if request.path == "/v3/watch":
        return Answer(lines=[CREATED], hold=True)
    return Answer(body=json.dumps(HEADER).encode())


async def test_the_store_opens_on_the_member_named_first() -> None:
    mock = MockGateways(healthy, healthy, healthy)
    for member in mock.members:
        store = EtcdStore([m.endpoint for m in mock.members], transport=mock.transport)
        use_member(store, member.endpoint)
        async with store:
            assert store.member == member.endpoint
            await store.put("/k", b"v")
    # Each store opened on, and sent its put to, the member named.
    assert [m.paths() for m in mock.members] == [["/v3/maintenance/status", "/v3/kv/put"]] * 3


def event_at(revision: int) -> bytes:
    kv = {"key": "L3Avaw==", "value": "dg==", "create_revision": str(revision)}
    kv |= {"mod_revision": str(revision), "version": "1"}
    return json.dumps({"result": {**HEADER, "events": [{"kv": kv}]}}).encode()


async def test_an_open_store_moves_its_requests_and_watches(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def quiet(request: Request) -> Answer:
        return healthy(request)

    def with_an_event(request: Request) -> Answer:
        if request.path == "/v3/watch":
            return Answer(lines=[CREATED, event_at(5)], hold=True)
        return healthy(request)

    mock = MockGateways(quiet, with_an_event)
    a, b = mock.members
    store = EtcdStore([a.endpoint, b.endpoint], transport=mock.transport)
    use_member(store, a.endpoint)
    events: list[StoreEvent] = []
    async with (
        store,
        aclosing(store.watch_prefix("/p/", start_revision=5)) as watch,
        anyio.create_task_group() as tg,
    ):

        async def follow() -> None:
            events.append(await anext(watch))

        tg.start_soon(follow)
        await anyio.wait_all_tasks_blocked()  # the watch waits on A
        with caplog.at_level(logging.INFO, logger="anyrdzv"):
            use_member(store, b.endpoint)
        assert store.member == b.endpoint
        await store.put("/k", b"v")
    # The watch moved to B, from the revision it had asked A for.
    assert [(e.key, e.revision) for e in events] == [("/p/k", 5)]
    assert a.paths() == ["/v3/maintenance/status", "/v3/watch"]
    assert sorted(b.paths()) == ["/v3/kv/put", "/v3/watch"]
    assert (
        json.loads(b.requests[b.paths().index("/v3/watch")].body)["create_request"][
            "start_revision"
        ]
        == "5"
    )
    assert f"requests go to etcd member {b.endpoint} now, as asked" in caplog.messages


async def test_a_member_not_the_stores_is_refused() -> None:
    store = EtcdStore(["127.0.0.1:2379", "127.0.0.1:2380"])
    with pytest.raises(ValueError, match=r"member must be one of .*2380, got '127.0.0.1:2381'"):
        use_member(store, "127.0.0.1:2381")
    with pytest.raises(TypeError, match="member must be a str"):
        use_member(store, 2379)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="store must be an EtcdStore, got MemoryStore"):
        use_member(MemoryStore(), "127.0.0.1:2379")  # type: ignore[arg-type]
