"""``time_to_live``: a lease's remaining TTL, on both stores (not part of LeaseStore)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from anyrdzv import EtcdStore, Lease, LeaseStore, MemoryStore, StoreProtocolError
from anyrdzv._etcd._wire import time_to_live

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

pytestmark = pytest.mark.anyio


def _ttl(store: LeaseStore) -> Callable[[Lease | int], Awaitable[int | None]]:
    assert isinstance(store, MemoryStore | EtcdStore)
    return store.time_to_live


async def test_a_fresh_lease_has_its_ttl(store: LeaseStore) -> None:
    lease = await store.grant(10)
    remaining = await _ttl(store)(lease)
    assert remaining is not None
    assert 0 < remaining <= 10


async def test_takes_the_lease_id(store: LeaseStore) -> None:
    lease = await store.grant(10)
    await store.put("/ttl-test/by-id", b"x", lease=lease)
    kv = await store.get("/ttl-test/by-id")
    assert kv is not None
    assert kv.lease == lease.id
    remaining = await _ttl(store)(kv.lease)
    assert remaining is not None
    assert 0 < remaining <= 10
    await store.revoke(lease)


@pytest.mark.slow
async def test_keep_alive_restores_it(store: LeaseStore) -> None:
    lease = await store.grant(3)
    await anyio.sleep(1.1)
    before = await _ttl(store)(lease)
    assert before is not None
    assert before <= 2
    await store.keep_alive(lease)
    after = await _ttl(store)(lease)
    assert after is not None
    assert before < after <= 3


async def test_revoked_lease_is_none(store: LeaseStore) -> None:
    lease = await store.grant(10)
    await store.revoke(lease)
    assert await _ttl(store)(lease) is None


async def test_unknown_lease_is_none(store: LeaseStore) -> None:
    assert await _ttl(store)(0x7EADBEEF12345) is None


@pytest.mark.slow
async def test_expired_lease_is_none(store: LeaseStore) -> None:
    lease = await store.grant(1)  # etcd may raise it to its minimum TTL
    await anyio.sleep(lease.ttl + 1.5)
    assert await _ttl(store)(lease) is None


@pytest.mark.parametrize("bad", ["1", 1.5, True, None])
async def test_rejects_a_non_lease(store: LeaseStore, bad: object) -> None:
    with pytest.raises(TypeError, match="lease must be a Lease or an int"):
        await _ttl(store)(bad)  # type: ignore[arg-type]


def test_the_wire_answer() -> None:
    path = "/v3/lease/timetolive"
    assert time_to_live(path, {"ID": "7", "TTL": "5", "grantedTTL": "10"}) == 5
    assert time_to_live(path, {"ID": "7", "TTL": 0}) == 0
    assert time_to_live(path, {"ID": "7", "TTL": "-1"}) is None
    assert time_to_live(path, {"ID": "7"}) is None
    for bad in ("soon", True, 1.5, ["5"]):
        with pytest.raises(StoreProtocolError, match="TTL"):
            time_to_live(path, {"ID": "7", "TTL": bad})
