"""Renewing many leases in one keep-alive request: with one member, attempted like any
request; with several, raced: sent to one member, then to the next too each member
timeout with no answer, then afresh to each in turn at a faster pace, the first answer
winning. This is how keep-alives ride out the loss or the hang of the leader, or of the
member they went to, within a lease."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, TypeVar

import anyio

from .._exceptions import StoreConnectionError, StoreError
from . import _wire
from ._gateway import KEEPALIVE, retries

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Iterator

    from ._gateway import Gateway
    from ._members import Member, Members

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


async def renew(gateway: Gateway, lease_ids: Collection[int]) -> dict[int, int]:
    """Renew many leases in one request; return the TTL etcd gave each it answered.

    The gateway's keep-alive endpoint takes a stream of requests and answers each. On
    HTTP/1 it may stop reading the body once it starts answering, so some leases can go
    unanswered: the caller sends those again. With several members, the request races
    them (:func:`race`), with backoff until the timeout once every member failed.

    :raises StoreError: a subclass for what went wrong
    """
    data = "".join(f'{{"ID":"{lease_id}"}}' for lease_id in lease_ids).encode()
    has_credentials = gateway.has_credentials

    async def send(member: Member, deadline: float, waited: float) -> dict[int, int]:
        status, content = await gateway.post(
            member, KEEPALIVE, data, deadline=deadline, held=True, waited=waited
        )
        if status != 200:
            _wire.read_answer(KEEPALIVE, status, content, has_credentials=has_credentials)
        renewed, error = _wire.renewals(
            content.decode("utf-8", "replace"), has_credentials=has_credentials
        )
        if error is not None and not renewed:
            raise error
        if not renewed:
            raise StoreConnectionError(f"etcd at {member.where} answered no keep-alive")
        return renewed

    if not gateway.several:
        return await gateway.attempts(KEEPALIVE, send, retry=True)
    deadline = anyio.current_time() + gateway.timeout
    pauses: Iterator[float] | None = None
    while True:
        try:
            return await _race_in_a_slot(gateway, send, deadline)
        except StoreConnectionError as exc:
            pauses = pauses or retries()
            pause = next(pauses)
            if anyio.current_time() + pause >= deadline:
                raise
            logger.warning(
                "every etcd member failed %s; retrying in %.2f s: %s", KEEPALIVE, pause, exc
            )
            await anyio.sleep(pause)


async def _race_in_a_slot(
    gateway: Gateway, send: Callable[[Member, float, float], Awaitable[_T]], deadline: float
) -> _T:
    """One race, in a keep-alive request slot."""
    slots = gateway.slots(KEEPALIVE)
    waited = await slots.acquire(gateway.timeout)

    async def login(member: Member, stale: str | None, deadline: float) -> None:
        await gateway.login(member, stale, deadline=deadline)

    try:
        return await race(
            gateway.members,
            KEEPALIVE,
            send,
            deadline=deadline + waited,
            waited=waited,
            member_timeout=gateway.attempt_timeout,
            login=login if gateway.has_credentials else None,
        )
    finally:
        slots.release()


# How many tries a race sends per member at most.
RACE_TRIES = 3


async def race(
    members: Members,
    path: str,
    send: Callable[[Member, float, float], Awaitable[_T]],
    *,
    deadline: float,
    waited: float,
    member_timeout: float,
    login: Callable[[Member, str | None, float], Awaitable[None]] | None,
) -> _T:
    """Send ``send(member, deadline, waited)`` to the member that requests go to; if it
    has not answered within ``member_timeout``, send it to the next member too, and so
    on: the first answer wins, and the others are cancelled. Once every member has a try
    out and none has answered, each is sent a fresh try in turn, ``member_timeout``
    split between them apart, up to ``RACE_TRIES`` tries each.

    A member that waits for a new leader answers once there is one, so the earlier
    tries keep waiting; but a follower that forwarded a try to a leader that has since
    hung waits for that leader, and only a fresh try reaches the new one, so fresh
    tries go out soon after an election, wherever it falls. A member that hangs is
    passed over. Requests go to the winner afterwards, and a member that failed is left.

    :param login: logs in to a member (replacing a ``stale`` token), with credentials;
        ``None`` without
    :raises StoreConnectionError: if every member failed, the last member's error
    """
    answers: list[_T] = []
    winner: list[Member] = []
    errors: list[StoreConnectionError] = []
    fatal: list[StoreError] = []
    failed = anyio.Event()
    tried: list[Member] = []
    count = len(members.all)
    # The round starts at the member requests go to now, wherever failures move them.
    first = members.all.index(members.current)

    async def attempt(member: Member, scope: anyio.CancelScope) -> None:
        nonlocal failed
        renewed = False
        while True:
            token = member.token
            try:
                if login is not None and token is None:
                    # A member not used before: log in first (tokens are per member).
                    await login(member, None, deadline)
                    token = member.token
                answers.append(await send(member, deadline, waited))
                winner.append(member)
            except _wire.InvalidToken as exc:
                if renewed or login is None:
                    fatal.append(exc)
                else:
                    renewed = True
                    try:
                        await login(member, token, deadline)
                    except StoreConnectionError as error:
                        errors.append(error)
                        members.leave(member, error)
                    except StoreError as error:
                        fatal.append(error)
                    else:
                        continue
            except StoreConnectionError as exc:
                errors.append(exc)
                members.leave(member, exc)
            except StoreError as exc:
                fatal.append(exc)
            if answers or fatal:
                scope.cancel()
            failed.set()
            failed = anyio.Event()
            return

    async with anyio.create_task_group() as tg:
        # Each member timeout with no answer, one more try goes out, to the next member
        # round the cluster. Once every member has one out, fresh tries go round faster,
        # a member timeout split between the members apart: a follower that forwarded
        # its try to a leader that has since hung forwards a fresh one to the new leader.
        while not answers and not fatal and len(tried) < RACE_TRIES * count:
            member = members.all[(first + len(tried)) % count]
            tried.append(member)
            tg.start_soon(attempt, member, tg.cancel_scope)
            pace = member_timeout if len(tried) < count else member_timeout / count
            with anyio.move_on_after(pace) as wait:
                await failed.wait()
            if wait.cancelled_caught and not answers:
                if len(tried) < count:
                    logger.warning(
                        "etcd at %s did not answer %s within %s s; asking another member too",
                        member.where,
                        path,
                        member_timeout,
                    )
                elif len(tried) == count:
                    logger.warning(
                        "no etcd member answered %s, each asked once; asking each again, "
                        "one every %.2g s",
                        path,
                        pace,
                    )
    if winner:
        current = members.current
        if current is not winner[0]:
            # The member requests went to was passed over: requests, and the watches
            # open on it, go to the one that answered.
            members.leave(current, f"{winner[0].where} answered {path} first", to=winner[0])
        return answers[0]
    if fatal:
        raise fatal[0]
    raise errors[-1]
