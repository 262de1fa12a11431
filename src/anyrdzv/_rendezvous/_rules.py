"""The pure rules of a rendezvous: what its keys hold, and what a node does next.

No I/O and no event loop: the :class:`~anyrdzv.Rendezvous` feeds a :class:`View` of its
run's keys, as its watch sees them, to :func:`decide` (or :func:`closing`), and carries
out the answer; :func:`changes` says why a node should leave the round it holds.

The keys of run ``R`` under the prefix ``P``:

- ``P/R/members/<node>``: the node's heartbeat key, under its lease; JSON
  ``{"min_nodes": m, "max_nodes": M, "payload": "<base64>"}``.
- ``P/R/join/<node>``: under the same lease; JSON ``{"round": r}``: the round the node
  wants to be in.
- ``P/R/state``: no lease; JSON ``{"round": r, "complete": bool, "closed": bool,
  "min_nodes": m, "max_nodes": M, "participants": [...], "payloads": {node: b64},
  "previous": [...] | null}``. Every write of it is a compare-and-swap.
- ``P/R/store/…``: reserved for adapters (the torchrun backend keeps torch's ``Store``
  keys there). The rendezvous never reads it, and deletes it with the state when the
  run's last node leaves.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .._checks import is_int

STATE = "state"
MEMBERS = "members/"
JOIN = "join/"
#: The subtree of a run that adapters own: nodes skip its keys.
DATA = "store/"

#: What :meth:`~anyrdzv.Rendezvous.changes` yields.
Change = Literal["waiting", "lost", "new_round", "closed"]


@dataclass(frozen=True)
class NodeKeys:
    """The keys of node ``node`` of the run whose keys start with ``run``
    (``<prefix>/<run_id>/``)."""

    run: str
    node: str

    @property
    def state(self) -> str:
        """The run's state."""
        return self.run + STATE

    @property
    def member(self) -> str:
        """The node's heartbeat key."""
        return self.run + MEMBERS + self.node

    @property
    def join(self) -> str:
        """The node's join key."""
        return self.run + JOIN + self.node

    @property
    def data(self) -> str:
        """The adapters' subtree."""
        return self.run + DATA


@dataclass(frozen=True)
class RunState:
    """What ``P/R/state`` holds."""

    round: int
    complete: bool
    closed: bool
    min_nodes: int
    max_nodes: int
    participants: tuple[str, ...] = ()
    payloads: dict[str, bytes] = field(default_factory=dict)
    previous: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Member:
    """What ``P/R/members/<node>`` holds."""

    min_nodes: int
    max_nodes: int
    payload: bytes


class MalformedValue(ValueError):
    """A value in a run's keys is not what a node writes (so not a type error of ours)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise MalformedValue(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError(f"{what} is not valid base64") from None


def _int(obj: dict[str, Any], name: str, least: int) -> int:
    value = obj.get(name)
    if not is_int(value) or value < least:
        raise ValueError(f"{name!r} must be an int of at least {least}")
    return value


def _names(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{what} must be a list of node names")
    return tuple(value)


def _object(data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not a JSON document") from None
    if not isinstance(obj, dict):
        raise MalformedValue("not a JSON object")
    return obj


def encode_state(state: RunState) -> bytes:
    """The JSON of ``state``."""
    return json.dumps(
        {
            "round": state.round,
            "complete": state.complete,
            "closed": state.closed,
            "min_nodes": state.min_nodes,
            "max_nodes": state.max_nodes,
            "participants": list(state.participants),
            "payloads": {name: _b64(data) for name, data in state.payloads.items()},
            "previous": None if state.previous is None else list(state.previous),
        },
        separators=(",", ":"),
    ).encode()


def decode_state(data: bytes) -> RunState:
    """Read ``P/R/state``.

    :raises ValueError: if it is not what :func:`encode_state` writes
    """
    obj = _object(data)
    complete, closed = obj.get("complete"), obj.get("closed")
    if not isinstance(complete, bool) or not isinstance(closed, bool):
        raise MalformedValue("'complete' and 'closed' must be booleans")
    payloads = obj.get("payloads")
    if not isinstance(payloads, dict):
        raise MalformedValue("'payloads' must be an object")
    previous = obj.get("previous")
    state = RunState(
        round=_int(obj, "round", 0),
        complete=complete,
        closed=closed,
        min_nodes=_int(obj, "min_nodes", 1),
        max_nodes=_int(obj, "max_nodes", 1),
        participants=_names(obj.get("participants"), "'participants'"),
        payloads={str(k): _unb64(v, f"the payload of {k!r}") for k, v in payloads.items()},
        previous=None if previous is None else _names(previous, "'previous'"),
    )
    if state.min_nodes > state.max_nodes:
        raise ValueError("'min_nodes' is greater than 'max_nodes'")
    if list(state.participants) != sorted(set(state.participants)):
        raise ValueError("'participants' must be sorted and distinct")
    if len(state.participants) > state.max_nodes:
        raise ValueError("more 'participants' than 'max_nodes'")
    return state


def encode_member(member: Member) -> bytes:
    """The JSON of a node's heartbeat key."""
    return json.dumps(
        {
            "min_nodes": member.min_nodes,
            "max_nodes": member.max_nodes,
            "payload": _b64(member.payload),
        },
        separators=(",", ":"),
    ).encode()


def decode_member(data: bytes) -> Member:
    """Read ``P/R/members/<node>``.

    :raises ValueError: if it is not what :func:`encode_member` writes
    """
    obj = _object(data)
    return Member(
        _int(obj, "min_nodes", 1),
        _int(obj, "max_nodes", 1),
        _unb64(obj.get("payload"), "'payload'"),
    )


def encode_join(round: int) -> bytes:
    """The JSON of a node's join key."""
    return b'{"round":%d}' % round


def decode_join(data: bytes) -> int:
    """Read ``P/R/join/<node>``: the round the node wants to be in.

    :raises ValueError: if it is not what :func:`encode_join` writes
    """
    return _int(_object(data), "round", 0)


@dataclass
class View:
    """A node's picture of its run, as its watch has seen it.

    Change its members and joins with :meth:`set_member` and :meth:`set_join`, which keep
    the count of live joins of each round.

    :ivar state: the run's state and its ``mod_revision``, or ``None``
    :ivar members: the live nodes
    :ivar joins: for each node, the round it wants to be in, and the ``mod_revision`` of
        that wish
    """

    state: tuple[RunState, int] | None
    members: dict[str, Member]
    joins: dict[str, tuple[int, int]]
    _counts: Counter[int] = field(default_factory=Counter, init=False, repr=False)
    # joined() of each round asked since the last change: the nodes of a process that
    # wake together at a round's end sort its joins once, not once each.
    _joined: dict[int, list[str]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for name, (wanted, _) in self.joins.items():
            if name in self.members:
                self._counts[wanted] += 1

    def _count(self, name: str, step: int) -> None:
        join = self.joins.get(name)
        if join is not None and name in self.members:
            self._counts[join[0]] += step

    def set_member(self, name: str, member: Member | None) -> None:
        """Put (or with ``None`` drop) a live node."""
        self._joined.clear()
        self._count(name, -1)
        self.members.pop(name, None)
        if member is not None:
            self.members[name] = member
        self._count(name, 1)

    def set_join(self, name: str, join: tuple[int, int] | None) -> None:
        """Put (or with ``None`` drop) a node's wish: ``(round, mod_revision)``."""
        self._joined.clear()
        self._count(name, -1)
        self.joins.pop(name, None)
        if join is not None:
            self.joins[name] = join
        self._count(name, 1)

    def count_joined(self, round: int) -> int:
        """How many live nodes want to be in ``round``."""
        return self._counts[round]

    def joined(self, round: int) -> list[str]:
        """The live nodes that want to be in ``round``, earliest first (do not change the
        list: it is kept until the next change of the view)."""
        cached = self._joined.get(round)
        if cached is not None:
            return cached
        if not self._counts[round]:
            return []
        found = [
            (revision, name)
            for name, (wanted, revision) in self.joins.items()
            if wanted == round and name in self.members
        ]
        names = self._joined[round] = [name for _, name in sorted(found)]
        return names

    def live_participants(self) -> list[str]:
        """The participants of the state's round whose lease is alive."""
        if self.state is None:
            return []
        return [name for name in self.state[0].participants if name in self.members]

    def waiting(self) -> int:
        """How many nodes wait for the round after a complete one, while its live
        participants are fewer than ``max_nodes``: what ``num_nodes_waiting()`` answers."""
        if self.state is None:
            return 0
        state = self.state[0]
        if not state.complete or not self._counts[state.round + 1]:
            return 0
        live = self.live_participants()
        if len(live) >= state.max_nodes:
            return 0
        # The live nodes that joined the next round, less the participants among them.
        joins = self.joins
        back = sum(1 for name in live if joins.get(name, (-1, 0))[0] == state.round + 1)
        return self._counts[state.round + 1] - back


def previous_back(view: View, state: RunState) -> bool:
    """Whether every live node of the round before ``state``'s has joined it (D6)."""
    if state.previous is None:
        return False
    joins, members = view.joins, view.members
    return all(
        joins.get(name, (-1, 0))[0] == state.round for name in state.previous if name in members
    )


# The answers of decide().
@dataclass(frozen=True)
class Create:
    """Create the state (it is absent): a fresh round 0."""

    state: RunState


@dataclass(frozen=True)
class Swap:
    """Compare-and-swap the state, from the ``mod_revision`` seen, to ``state``."""

    state: RunState
    expected: int
    why: str


@dataclass(frozen=True)
class Join:
    """Put this node's join key for ``round``."""

    round: int


@dataclass(frozen=True)
class Done:
    """The round is complete with this node in it."""

    state: RunState


@dataclass(frozen=True)
class Closed:
    """The run is closed."""


@dataclass(frozen=True)
class Wait:
    """Nothing to do until the view changes, or until ``until`` (a local time), if set."""

    until: float | None = None


Action = Create | Swap | Join | Done | Closed | Wait


def decide(
    view: View,
    me: str,
    *,
    min_nodes: int,
    max_nodes: int,
    handed_out: int | None,
    min_reached_at: float | None,
    last_call_timeout: float,
    now: float,
) -> Action:
    """What node ``me``, in ``next_rendezvous()``, does next.

    :param handed_out: the last round ``next_rendezvous()`` returned to this node
    :param min_reached_at: when this node saw the state's open round reach
        ``min_nodes`` joins, or ``None``
    :raises ValueError: if the run's ``min_nodes``/``max_nodes`` differ from ours
    """
    if view.state is None:
        return Create(RunState(0, False, False, min_nodes, max_nodes))
    state, revision = view.state
    if state.closed:
        return Closed()
    if (state.min_nodes, state.max_nodes) != (min_nodes, max_nodes):
        raise ValueError(
            f"this node has min_nodes={min_nodes}, max_nodes={max_nodes}, but the run "
            f"has min_nodes={state.min_nodes}, max_nodes={state.max_nodes}"
        )
    wanted = view.joins.get(me, (None, 0))[0]
    if state.complete:
        if wanted == state.round and handed_out != state.round and me in state.participants:
            return Done(state)
        live = view.live_participants()
        if me in state.participants or not live:
            # A participant asks for a new round; or no participant is alive to ask.
            fresh = RunState(
                state.round + 1, False, False, min_nodes, max_nodes, previous=tuple(live)
            )
            why = "a participant asked for it" if me in state.participants else "none is alive"
            return Swap(fresh, revision, f"round {state.round + 1} opens: {why}")
        if wanted != state.round + 1:
            return Join(state.round + 1)
        return Wait()
    # The round is open.
    if wanted != state.round:
        return Join(state.round)
    count = view.count_joined(state.round)
    if count < min_nodes:
        return Wait()
    joined = view.joined(state.round)
    chosen: list[str] | None = None
    why = ""
    if count >= max_nodes:
        chosen, why = joined[:max_nodes], "max_nodes joined"
    elif count >= min_nodes:
        if state.previous is not None and previous_back(view, state):
            chosen, why = joined, "every live node of the last round, and every waiting node"
        elif min_reached_at is not None and now >= min_reached_at + last_call_timeout:
            chosen, why = joined, "the last call passed"
        else:
            return Wait(None if min_reached_at is None else min_reached_at + last_call_timeout)
    if chosen is None:
        return Wait()
    names = tuple(sorted(chosen))
    done = replace(
        state,
        complete=True,
        participants=names,
        payloads={name: view.members[name].payload for name in names},
    )
    return Swap(done, revision, f"round {state.round} completes: {why} ({len(names)} nodes)")


def closing(view: View, *, min_nodes: int, max_nodes: int) -> Create | Swap | None:
    """What closes the run: a closed state, created or swapped in; ``None`` if the run
    is closed already."""
    if view.state is None:
        return Create(RunState(0, False, True, min_nodes, max_nodes))
    state, revision = view.state
    if state.closed:
        return None
    return Swap(replace(state, closed=True), revision, "closed")


def changes(view: View, held: int | None) -> list[Change]:
    """The reasons a node that holds round ``held`` (``None``: none yet) has to leave
    it: the run is ``"closed"``; a later round is asked for (``"new_round"``); a
    participant's lease is gone (``"lost"``); nodes wait to join (``"waiting"``)."""
    if view.state is None:
        return []
    state = view.state[0]
    reasons: list[Change] = []
    if state.closed:
        reasons.append("closed")
    if held is None:
        return reasons
    if state.round > held:
        reasons.append("new_round")
    elif state.round == held:
        if any(name not in view.members for name in state.participants):
            reasons.append("lost")
        if view.waiting():
            reasons.append("waiting")
    return reasons
