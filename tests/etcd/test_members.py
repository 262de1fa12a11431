"""The member list: which member requests go to, moving on from one that failed (and
cancelling its watch reads), and moving to a member on purpose."""

from __future__ import annotations

import logging

import anyio
import pytest

from anyrdzv._etcd._members import Members

pytestmark = pytest.mark.anyio

NAMES = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]


def members() -> Members:
    return Members([(f"http://{name}", name) for name in NAMES])


def test_the_start_is_one_of_the_members() -> None:
    starts = {members().current.where for _ in range(200)}
    assert starts <= set(NAMES)
    assert len(starts) > 1  # random, so that processes spread over the cluster


async def test_leaving_moves_to_the_next_and_cancels_the_reads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = members()
    cluster.use(NAMES[2])
    left = cluster.current
    generation = left.generation
    with anyio.CancelScope() as read:
        left.reads.add(read)
        with caplog.at_level(logging.WARNING, logger="anyrdzv"):
            cluster.leave(left, "refused")
        await anyio.sleep(1)
    assert read.cancelled_caught
    assert left.generation == generation + 1
    assert cluster.current.where == NAMES[0]  # round the cluster
    assert caplog.messages == [
        f"leaving etcd member {NAMES[2]} (refused); requests go to {NAMES[0]} now"
    ]


def test_leaving_a_member_requests_no_longer_go_to_changes_nothing() -> None:
    cluster = members()
    cluster.use(NAMES[0])
    other = cluster.named(NAMES[1])
    generation = other.generation
    cluster.leave(other, "late answer")
    assert cluster.current.where == NAMES[0]
    assert other.generation == generation


def test_leaving_for_a_named_member() -> None:
    cluster = members()
    cluster.use(NAMES[0])
    cluster.leave(cluster.current, "B answered first", to=cluster.named(NAMES[1]))
    assert cluster.current.where == NAMES[1]


def test_one_member_is_never_left() -> None:
    alone = Members([("http://127.0.0.1:1", "127.0.0.1:1")])
    alone.leave(alone.current, "refused")
    assert alone.current.generation == 0


def test_using_a_member_moves_the_watches_too() -> None:
    cluster = members()
    cluster.use(NAMES[0])
    first = cluster.current
    generation = first.generation
    cluster.use(NAMES[0])  # already there: nothing moves
    assert first.generation == generation
    cluster.use(NAMES[1])
    assert first.generation == generation + 1
    with pytest.raises(ValueError, match="member must be one of"):
        cluster.use("127.0.0.1:4")
