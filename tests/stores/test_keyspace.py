"""KeySpace: MemoryStore's state machine, with the time passed in, so that lease expiry
is tested at exact times with no sleep. The contract suite (test_protocol.py) and the
differential test against etcd (test_protocol_stateful.py) cover the rest, through
MemoryStore."""

from __future__ import annotations

import math

import pytest

from anyrdzv import EventType, KeyValue, LeaseExpired, StoreEvent
from anyrdzv._stores._keyspace import KeySpace


def keyspace() -> tuple[KeySpace, list[int]]:
    """A key space, and the revisions at which it announced a change."""
    changes: list[int] = []
    keys = KeySpace(100, lambda: changes.append(keys.revision))
    return keys, changes


def test_a_lease_expires_at_its_deadline_with_its_keys_at_one_revision() -> None:
    keys, changes = keyspace()
    assert keys.expire(0.0) == math.inf
    lease = keys.grant(5, now=10.0)
    keys.put("/a", b"1", lease.id)
    keys.put("/b", b"2", lease.id)
    keys.put("/c", b"3", None)
    assert keys.expire(14.9) == 15.0  # not yet: the next deadline
    assert keys.time_to_live(lease.id, 14.9) == 0  # rounded down
    assert keys.expire(15.0) == math.inf
    assert keys.range("", True) == [KeyValue("/c", b"3", 4, 4, 1, None)]
    assert changes == [2, 3, 4, 5]
    assert keys.history.find(3, "") == (StoreEvent(EventType.DELETE, "/a", b"", 5), 4)
    assert keys.history.find(4, "") == (StoreEvent(EventType.DELETE, "/b", b"", 5), 5)
    assert keys.time_to_live(lease.id, 15.0) is None
    with pytest.raises(LeaseExpired, match=f"lease {lease.id} has expired or was revoked"):
        keys.keep_alive(lease.id, 15.0)


def test_keep_alive_moves_the_deadline() -> None:
    keys, _ = keyspace()
    lease = keys.grant(5, now=0.0)
    assert keys.keep_alive(lease.id, 4.0) == 5
    assert keys.expire(5.0) == 9.0  # the first deadline is stale: skipped
    assert keys.time_to_live(lease.id, 5.0) == 4
    keys.expire(9.0)
    assert keys.time_to_live(lease.id, 9.0) is None


def test_what_changes_nothing_keeps_the_revision_and_announces_nothing() -> None:
    keys, changes = keyspace()
    keys.put("/a", b"1", None)
    assert keys.delete("/absent", False) == 0
    assert keys.delete("/b/", True) == 0
    keys.revoke(12345)  # never granted
    lease = keys.grant(5, now=0.0)
    keys.revoke(lease.id)  # no key under it
    assert (keys.revision, changes) == (2, [2])
    assert keys.delete("/", True) == 1
    assert (keys.revision, changes) == (3, [2, 3])
