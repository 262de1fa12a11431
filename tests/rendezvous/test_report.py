"""read_run(): what a run's keys say, for an operator (the report behind ``anyrdzv
rendezvous``, whose output is tested in ``tests/cli/test_rendezvous.py``)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from anyrdzv import EtcdStore, Rendezvous
from anyrdzv._rendezvous._report import read_run

pytestmark = pytest.mark.anyio


@pytest.fixture
def run_id() -> str:
    """A run id no other test uses: the etcd store is shared."""
    return f"run-{uuid.uuid4().hex[:12]}"


async def test_the_adapters_keys_are_counted_not_malformed(etcd_server: Any, run_id: str) -> None:
    """read_run raises MalformedRun for a bad key of the rendezvous, not for these."""
    async with (
        EtcdStore(etcd_server.endpoint) as store,
        Rendezvous(
            store,
            run_id,
            node="a",
            min_nodes=2,
            max_nodes=3,
            last_call_timeout=0.3,
            keep_alive_interval=1,
            keep_alive_max_attempt=3,
            join_timeout=20,
            close_timeout=5,
        ) as a,
    ):
        await store.put(a.data_prefix + "k", b"\x80 not json")
        await store.put(a.data_prefix + "members/x", b"not a member")
        report = await read_run(store, run_id)
        assert report.data_keys == 2
        assert [n.node for n in report.others] == ["a"]  # a heartbeat, and no "x"
