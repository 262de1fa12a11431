"""The health of an etcd cluster's members, as :meth:`EtcdStore.cluster_status` reports
it: each member asked for its status at once, and the quorum judged from the answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from .._exceptions import StoreError, StoreProtocolError
from . import _wire
from ._gateway import STATUS

if TYPE_CHECKING:
    from ._gateway import Gateway


@dataclass(frozen=True)
class MemberStatus:
    """What one etcd member says of itself, as :meth:`EtcdStore.cluster_status` asks.

    :ivar endpoint: the member, as ``host:port``
    :ivar reachable: whether it answered
    :ivar latency: how long its answer took, in seconds (``None`` if none came)
    :ivar version: its etcd version
    :ivar member_id: its id in the cluster
    :ivar leader_id: the id of the leader it knows, or ``None`` if it knows none
    :ivar is_leader: whether it is the leader
    :ivar raft_term: its raft term
    :ivar db_size: the size of its database, in bytes
    :ivar errors: the alarms and errors it reports (``etcdserver: no leader``, ...)
    :ivar error: why it did not answer, if it did not
    """

    endpoint: str
    reachable: bool
    latency: float | None = None
    version: str | None = None
    member_id: int | None = None
    leader_id: int | None = None
    is_leader: bool = False
    raft_term: int | None = None
    db_size: int | None = None
    errors: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class ClusterStatus:
    """Every listed member's :class:`MemberStatus`, and whether they have a quorum.

    :ivar members: each member's status, in the order they were listed
    :ivar quorum: whether a majority of the listed members answer and name one leader
    :ivar leader: the leader's endpoint, if a listed member leads
    """

    members: tuple[MemberStatus, ...]
    quorum: bool
    leader: str | None


async def _ask(gateway: Gateway, where: str) -> dict[str, Any]:
    """Ask the member named ``where`` for its status, once, with no retry and no
    failover (logging in first, with credentials).

    :raises StoreError: a subclass for what went wrong
    """
    member = gateway.members.named(where)
    deadline = anyio.current_time() + gateway.attempt_timeout
    for _ in range(2):
        if gateway.has_credentials and member.token is None:
            await gateway.login(member, None, deadline=deadline)
        status, content = await gateway.post(member, STATUS, _wire.encode({}), deadline=deadline)
        try:
            return _wire.read_answer(
                STATUS, status, content, has_credentials=gateway.has_credentials
            )
        except _wire.InvalidToken:
            await gateway.login(member, member.token, deadline=deadline)
    raise StoreProtocolError(f"etcd at {where} refused every auth token on {STATUS}")


async def cluster_status(gateway: Gateway) -> ClusterStatus:
    """Ask every member of ``gateway``, at once, for its status; once each, no retry.

    The quorum is judged from the listed members: a majority of them must answer, with
    no error, and name the same leader.
    """
    gateway.require_open()
    found: dict[str, MemberStatus] = {}

    async def ask(where: str) -> None:
        started = anyio.current_time()
        try:
            body = await _ask(gateway, where)
            raw = _wire.status(STATUS, body)
        except StoreError as exc:
            found[where] = MemberStatus(where, reachable=False, error=str(exc))
            return
        found[where] = MemberStatus(
            where,
            reachable=True,
            latency=anyio.current_time() - started,
            version=raw.version or None,
            member_id=raw.member_id,
            leader_id=raw.leader or None,
            is_leader=raw.leader != 0 and raw.leader == raw.member_id,
            raft_term=raw.raft_term,
            db_size=raw.db_size,
            errors=raw.errors,
        )

    async with anyio.create_task_group() as tg:
        for where in gateway.names:
            tg.start_soon(ask, where)
    statuses = tuple(found[where] for where in gateway.names)
    votes: dict[int, int] = {}
    for member in statuses:
        if member.reachable and member.leader_id is not None and not member.errors:
            votes[member.leader_id] = votes.get(member.leader_id, 0) + 1
    majority = len(statuses) // 2 + 1
    quorum = any(count >= majority for count in votes.values())
    leader = next((m.endpoint for m in statuses if m.is_leader), None)
    return ClusterStatus(statuses, quorum, leader)
