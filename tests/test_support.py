"""The EtcdCluster test harness: a real 3-member etcd on loopback, and its faults."""

from __future__ import annotations

import base64
import os
import time
from typing import TYPE_CHECKING

import httpx
import pytest

from tests._support.etcd_server import plain_verify

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests._support.etcd_cluster import EtcdCluster

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path, need_etcd: None) -> Iterator[EtcdCluster]:
    from tests._support.etcd_cluster import EtcdCluster

    with EtcdCluster(tmp_path) as cluster:
        cluster.start()
        yield cluster


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def put(cluster: EtcdCluster, i: int, key: str, value: str) -> None:
    response = httpx.post(
        f"{cluster.members[i].url}/v3/kv/put",
        json={"key": _b64(key), "value": _b64(value)},
        timeout=10,
        verify=plain_verify(),
    )
    assert response.status_code == 200, response.text


def get(cluster: EtcdCluster, i: int, key: str) -> str | None:
    response = httpx.post(
        f"{cluster.members[i].url}/v3/kv/range",
        json={"key": _b64(key)},
        timeout=10,
        verify=plain_verify(),
    )
    assert response.status_code == 200, response.text
    kvs = response.json().get("kvs", [])
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def named_leaders(cluster: EtcdCluster) -> set[int]:
    """The member ids that the members who answer name as their leader."""
    statuses = [cluster.status(i) for i in range(cluster.size)]
    return {int(status.get("leader", 0)) for status in statuses if status is not None}


def member_id(cluster: EtcdCluster, i: int) -> int:
    status = cluster.status(i)
    assert status is not None
    return int(status["header"]["member_id"])


def test_three_members_one_leader(cluster: EtcdCluster) -> None:
    assert cluster.size == 3
    assert [m.name for m in cluster.members] == ["m0", "m1", "m2"]
    assert len(set(cluster.endpoints)) == 3
    assert all(e.startswith("127.0.0.1:") for e in cluster.endpoints)
    assert cluster.endpoint_list == ",".join(cluster.endpoints)
    leader = cluster.leader_index()
    assert named_leaders(cluster) == {member_id(cluster, leader)}
    assert len({member_id(cluster, i) for i in range(3)}) == 3
    put(cluster, 0, "/k", "v")
    assert get(cluster, 2, "/k") == "v"


def test_a_killed_leader_is_replaced_and_rejoins_as_a_follower(cluster: EtcdCluster) -> None:
    old = cluster.leader_index()
    old_id = member_id(cluster, old)
    cluster.kill(old)
    assert cluster.members[old].process is None
    assert cluster.status(old) is None
    new = cluster.wait_leader(timeout=10, other_than=old)
    assert new != old
    follower = ({0, 1, 2} - {old, new}).pop()
    put(cluster, follower, "/while-down", "yes")

    cluster.restart(old)
    assert member_id(cluster, old) == old_id  # the same member, from its data dir
    assert cluster.leader_index() == new  # a restarted member does not take over
    assert get(cluster, old, "/while-down") == "yes"  # it caught up from the leader


def test_a_stopped_follower_hangs_and_continues(cluster: EtcdCluster) -> None:
    leader = cluster.leader_index()
    follower = (leader + 1) % 3
    cluster.stop(follower)
    assert cluster.status(follower) is None
    with pytest.raises(httpx.TimeoutException):  # it takes the connection, and says nothing
        httpx.get(f"{cluster.members[follower].url}/health", timeout=0.5, verify=plain_verify())
    assert cluster.leader_index() == leader
    put(cluster, leader, "/while-stopped", "yes")
    cluster.cont(follower)
    assert cluster.status(follower) is not None
    assert get(cluster, follower, "/while-stopped") == "yes"


def test_a_stopped_leader_is_replaced_and_follows_once_continued(cluster: EtcdCluster) -> None:
    old = cluster.leader_index()
    cluster.stop(old)
    new = cluster.wait_leader(timeout=10, other_than=old)
    cluster.cont(old)
    new_id = member_id(cluster, new)
    # it wakes up believing it leads, until the new leader's term reaches it
    for _ in range(100):
        if named_leaders(cluster) == {new_id}:
            break
        time.sleep(0.05)
    assert named_leaders(cluster) == {new_id}
    assert cluster.leader_index() == new


def test_close_ends_stopped_members_too(tmp_path: Path, need_etcd: None) -> None:
    from tests._support.etcd_cluster import EtcdCluster

    cluster = EtcdCluster(tmp_path, size=3)
    cluster.start()
    pids = [cluster.pid(i) for i in range(3)]
    cluster.stop(0)
    cluster.stop(1)
    cluster.close()
    assert all(m.process is None for m in cluster.members)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped, not a zombie either


def test_size_must_be_positive(tmp_path: Path, need_etcd: None) -> None:
    from tests._support.etcd_cluster import EtcdCluster

    with pytest.raises(ValueError, match="size must be at least 1, got 0"):
        EtcdCluster(tmp_path, size=0)
