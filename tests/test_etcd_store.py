"""EtcdStore's own machinery: keep-alives from many callers share requests."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from anyrdzv import EtcdStore, Lease, StoreConnectionError, _etcd_store
from test_store_contract import renew_all

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection

    from etcd_server import EtcdServer

pytestmark = pytest.mark.anyio

KEEPALIVE = "/v3/lease/keepalive"


@pytest.fixture
async def etcd(etcd_server: EtcdServer) -> AsyncIterator[EtcdStore]:
    async with EtcdStore(etcd_server.endpoint, timeout=2) as store:
        yield store


async def test_concurrent_keep_alives_share_requests(
    etcd: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    leases = [await etcd.grant(10) for _ in range(100)]
    bodies: list[bytes] = []
    post = etcd._post

    async def counting_post(path: str, data: bytes) -> Any:
        if path == KEEPALIVE:
            bodies.append(data)
        return await post(path, data)

    monkeypatch.setattr(etcd, "_post", counting_post)
    monkeypatch.setattr(_etcd_store, "_RENEWAL_LINGER", 0.2)  # time for all to queue
    answers = await renew_all(etcd, leases)
    assert sorted(answers.values()) == [10] * 100  # type: ignore[type-var]
    # One request carries them all, or a few if the gateway stopped reading early.
    assert 1 <= len(bodies) <= 10
    assert sum(body.count(b'"ID"') for body in bodies) >= 100


async def test_unanswered_keep_alives_are_sent_again(
    etcd: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway may stop reading a request's body once it answers: resend the rest."""
    leases = [await etcd.grant(10) for _ in range(30)]
    sent: list[int] = []
    renew = etcd._renew

    async def answers_the_first_half(lease_ids: Collection[int]) -> dict[int, int]:
        ids = list(lease_ids)
        sent.append(len(ids))
        return await renew(ids[: max(1, len(ids) // 2)])

    monkeypatch.setattr(etcd, "_renew", answers_the_first_half)
    monkeypatch.setattr(_etcd_store, "_RENEWAL_LINGER", 0.2)  # time for all to queue
    answers = await renew_all(etcd, leases)
    assert sorted(answers.values()) == [10] * 30  # type: ignore[type-var]
    assert len(sent) >= 5  # 30, 15, 8, 4, 2, 1: halved each time
    assert sent[0] == 30


async def test_a_cancelled_sender_hands_its_batch_on(
    etcd: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller that sends a batch may be cancelled; the batch's others resend it."""
    monkeypatch.setattr(_etcd_store, "_RENEWAL_LINGER", 0.5)  # time for all to queue
    leases = [await etcd.grant(10) for _ in range(5)]
    renew = etcd._renew
    stuck = anyio.Event()
    sent: list[int] = []

    async def first_request_hangs(lease_ids: Collection[int]) -> dict[int, int]:
        sent.append(len(lease_ids))
        if len(sent) == 1:
            stuck.set()
            await anyio.sleep_forever()
        return await renew(lease_ids)

    monkeypatch.setattr(etcd, "_renew", first_request_hangs)
    sender = anyio.CancelScope()
    answers: dict[int, int | BaseException] = {}

    async def send_first() -> None:
        with sender:
            await etcd.keep_alive(leases[0])

    async def the_others() -> None:
        answers.update(await renew_all(etcd, leases[1:]))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(send_first)
            while not etcd._gathering:  # noqa: ASYNC110 - waiting on the store's state
                await anyio.sleep(0.001)
            tg.start_soon(the_others)
            await stuck.wait()
            sender.cancel()
    assert sender.cancelled_caught
    assert sent == [5, 4]
    assert sorted(answers.values()) == [10] * 4  # type: ignore[type-var]


async def test_a_failed_request_fails_each_caller_with_its_own_error(
    etcd: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    leases = [await etcd.grant(10) for _ in range(3)]

    async def refused(path: str, data: bytes) -> Any:
        raise StoreConnectionError("cannot reach etcd: refused")

    monkeypatch.setattr(etcd, "_post", refused)
    answers = await renew_all(etcd, leases)
    errors = list(answers.values())
    assert all(isinstance(error, StoreConnectionError) for error in errors)
    assert len({id(error) for error in errors}) == 3  # no exception object is shared


async def test_a_silent_keep_alive_times_out_within_timeout(
    etcd_server: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with EtcdStore(etcd_server.endpoint, timeout=0.5) as store:
        lease = await store.grant(10)

        async def silent(lease_ids: Collection[int]) -> dict[int, int]:
            await anyio.sleep_forever()
            raise AssertionError

        monkeypatch.setattr(store, "_renew", silent)
        start = anyio.current_time()
        with pytest.raises(StoreConnectionError, match="did not answer within 0.5 s"):
            await store.keep_alive(lease)
        assert anyio.current_time() - start < 2
        assert not store._renewals  # the caller that gave up left no trace
        assert not store._gathering


async def test_many_concurrent_requests_all_complete(etcd: EtcdStore) -> None:
    """Requests beyond the few in flight wait their turn; none is lost."""
    leases: list[Lease] = []

    async def grant() -> None:
        leases.append(await etcd.grant(10))

    async with anyio.create_task_group() as tg:
        for _ in range(60):
            tg.start_soon(grant)
    assert len({lease.id for lease in leases}) == 60


answers = st.lists(
    st.tuples(st.integers(1, 2**63 - 1), st.integers(0, 2**31 - 1)), unique_by=lambda a: a[0]
)


@given(st.text())
def test_parse_renewals_takes_any_text(text: str) -> None:
    renewed, error = _etcd_store._parse_renewals(text)
    assert isinstance(renewed, dict)
    assert error is None or isinstance(error, dict)


@given(answers, st.sampled_from(["\n", "\r\n", "\n\n"]))
def test_parse_renewals_reads_every_answer(pairs: list[tuple[int, int]], sep: str) -> None:
    lines = [json.dumps({"result": {"ID": str(i), "TTL": str(ttl)}}) for i, ttl in pairs]
    assert _etcd_store._parse_renewals(sep.join(lines)) == (dict(pairs), None)


@given(
    answers, st.sampled_from(['{"error":{"grpc_code":14,"message":"no leader"}}', "oops", "[1]"])
)
def test_parse_renewals_stops_at_an_error(pairs: list[tuple[int, int]], bad: str) -> None:
    lines = [json.dumps({"result": {"ID": str(i), "TTL": str(ttl)}}) for i, ttl in pairs]
    renewed, error = _etcd_store._parse_renewals("\n".join([*lines, bad, *lines]))
    assert renewed == dict(pairs)
    assert error is not None
    assert "no leader" in str(error) or bad in str(error)


def test_a_gone_lease_has_ttl_zero() -> None:
    text = '{"result":{"header":{},"ID":"123"}}'
    assert _etcd_store._parse_renewals(text) == ({123: 0}, None)


async def test_keep_alives_never_queue_behind_other_requests(etcd_server: EtcdServer) -> None:
    """A burst of joins (grants, puts) must not starve the heartbeats of members already in."""
    async with EtcdStore(etcd_server.endpoint, timeout=0.5) as store:
        lease = await store.grant(10)
        limiter = store._requests
        assert limiter is not None
        holders = [object() for _ in range(int(limiter.total_tokens))]
        for holder in holders:  # every slot for other requests is taken
            await limiter.acquire_on_behalf_of(holder)
        try:
            assert await store.keep_alive(lease) == 10
            with pytest.raises(StoreConnectionError, match="did not answer within"):
                await store.grant(10)
        finally:
            for holder in holders:
                limiter.release_on_behalf_of(holder)
        await store.revoke(lease)
