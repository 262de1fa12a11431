"""History: the events a MemoryStore keeps for its watches, and its compaction."""

from __future__ import annotations

import pytest

from anyrdzv import EventType, StoreEvent
from anyrdzv._stores._history import History


def put(key: str, revision: int) -> StoreEvent:
    return StoreEvent(EventType.PUT, key, b"", revision)


def test_positions_stay_while_the_oldest_events_are_compacted() -> None:
    history = History(3)
    assert (history.oldest, history.position(1)) == (0, 0)
    history.record([put("/a", 2), put("/b", 2)])  # two events of one revision
    history.record([put("/a", 3)])
    assert history.position(3) == 2
    history.record([put("/b", 4), put("/a", 5)])
    assert history.oldest == 3
    assert history.position(2) is None  # compacted: revision 2 is gone
    assert history.position(3) == 2  # the same position as before
    assert history.position(6) == 5  # the end
    assert not history.holds(1)
    assert history.holds(2)


def test_find_skips_the_keys_outside_the_prefix() -> None:
    history = History(10)
    history.record([put("/a/1", 2), put("/b/1", 3), put("/a/2", 4)])
    assert history.find(0, "/a/") == (put("/a/1", 2), 1)
    assert history.find(1, "/a/") == (put("/a/2", 4), 3)
    assert history.find(3, "/a/") == (None, 3)
    assert history.find(0, "/c/") == (None, 3)
    assert history.find(0, "") == (put("/a/1", 2), 1)


def test_find_refuses_a_compacted_position() -> None:
    history = History(1)
    history.record([put("/a", 2)])
    history.record([put("/a", 3)])
    with pytest.raises(IndexError, match="position 0 has been compacted away"):
        history.find(0, "")
    assert history.find(1, "") == (put("/a", 3), 2)
