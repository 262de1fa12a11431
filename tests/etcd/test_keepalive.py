"""The keep-alive batcher, through a fake ``send``: concurrent keep-alives share requests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest

from anyrdzv import LeaseExpired, StoreConnectionError, StoreError
from anyrdzv._etcd._keepalive import KeepAliveBatcher

if TYPE_CHECKING:
    from collections.abc import Collection

pytestmark = pytest.mark.anyio


class FakeSend:
    """Renews every lease it is given with TTL 10, except those in ``gone``; records batches."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gone: set[int] = set()
        self.answer_only: int | None = None  # answer only this many of each batch
        self.hang_first = False
        self.error: StoreError | None = None
        self.stuck = anyio.Event()

    async def __call__(self, lease_ids: Collection[int]) -> dict[int, int]:
        ids = list(lease_ids)
        self.batches.append(ids)
        await anyio.lowlevel.checkpoint()
        if self.hang_first and len(self.batches) == 1:
            self.stuck.set()
            await anyio.sleep_forever()
        if self.error is not None:
            raise self.error
        if self.answer_only is not None:
            ids = ids[: max(1, min(self.answer_only, len(ids) // 2))]
        return {i: 0 if i in self.gone else 10 for i in ids}


async def renew_all(batcher: KeepAliveBatcher, ids: list[int]) -> dict[int, int | BaseException]:
    answers: dict[int, int | BaseException] = {}

    async def renew(lease_id: int) -> None:
        try:
            answers[lease_id] = await batcher.keep_alive(lease_id)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            answers[lease_id] = exc

    async with anyio.create_task_group() as tg:
        for lease_id in ids:
            tg.start_soon(renew, lease_id)
    return answers


async def test_concurrent_keep_alives_share_one_request() -> None:
    send = FakeSend()
    batcher = KeepAliveBatcher(send, timeout=5, where="fake", linger=0.05)
    answers = await renew_all(batcher, list(range(1, 101)))
    assert answers == dict.fromkeys(range(1, 101), 10)
    assert len(send.batches) == 1


async def test_batches_are_capped() -> None:
    send = FakeSend()
    batcher = KeepAliveBatcher(send, timeout=5, where="fake", linger=0.05, max_batch=30)
    answers = await renew_all(batcher, list(range(1, 101)))
    assert set(answers.values()) == {10}
    assert [len(b) for b in send.batches] == [30, 30, 30, 10]


async def test_a_gone_lease_expires_alone() -> None:
    send = FakeSend()
    send.gone = {3}
    batcher = KeepAliveBatcher(send, timeout=5, where="fake", linger=0.05)
    answers = await renew_all(batcher, [1, 2, 3, 4])
    assert isinstance(answers.pop(3), LeaseExpired)
    assert set(answers.values()) == {10}


async def test_unanswered_leases_are_sent_again_first() -> None:
    send = FakeSend()
    send.answer_only = 1000  # each request answers half of its leases
    batcher = KeepAliveBatcher(send, timeout=5, where="fake", linger=0.05)
    answers = await renew_all(batcher, list(range(1, 31)))
    assert set(answers.values()) == {10}
    assert [len(b) for b in send.batches][:3] == [30, 15, 8]
    assert send.batches[1] == send.batches[0][15:]  # the unanswered ones, in order


async def test_a_cancelled_sender_hands_its_batch_on() -> None:
    send = FakeSend()
    send.hang_first = True
    batcher = KeepAliveBatcher(send, timeout=5, where="fake", linger=0.2)
    sender = anyio.CancelScope()
    answers: dict[int, int | BaseException] = {}

    async def send_first() -> None:
        with sender:
            await batcher.keep_alive(1)

    async def the_others() -> None:
        answers.update(await renew_all(batcher, [2, 3, 4, 5]))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(send_first)
            await anyio.sleep(0.05)  # the first caller is gathering
            tg.start_soon(the_others)
            await send.stuck.wait()
            sender.cancel()
    assert sender.cancelled_caught
    assert [len(b) for b in send.batches] == [5, 4]
    assert answers == dict.fromkeys([2, 3, 4, 5], 10)


async def test_each_caller_gets_its_own_error() -> None:
    send = FakeSend()
    send.error = StoreConnectionError("cannot reach etcd: refused")
    batcher = KeepAliveBatcher(send, timeout=5, where="fake", linger=0.05)
    answers = await renew_all(batcher, [1, 2, 3])
    errors = list(answers.values())
    assert all(isinstance(error, StoreConnectionError) for error in errors)
    assert len({id(error) for error in errors}) == 3


async def test_a_silent_send_times_out_and_leaves_nothing_queued() -> None:
    async def silent(lease_ids: Collection[int]) -> dict[int, int]:
        await anyio.sleep_forever()
        raise AssertionError

    batcher = KeepAliveBatcher(silent, timeout=0.3, where="fake")
    start = anyio.current_time()
    with pytest.raises(StoreConnectionError, match=r"did not renew lease 7 within 0\.3 s"):
        await batcher.keep_alive(7)
    assert anyio.current_time() - start < 2
    assert batcher.waiting == 0
    assert not batcher.gathering
