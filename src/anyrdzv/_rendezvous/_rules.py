"""The pure rules of a rendezvous: what its keys hold, what a node does next, and what
the run's coordinator decides.

No I/O and no event loop. A node follows only the run's control keys (its state, its
coordinator, the last round's record): :func:`node_step` says what it does next, and
:func:`changes` why it should leave the round it holds. The run's coordinator, one of
its nodes, follows every node's keys too: :func:`coordinate` says which round opens or
completes, and which signals (a participant lost, nodes waiting) the state carries.

The keys of run ``R`` under the prefix ``P`` (key layout 2; all JSON):

- ``P/R/state``: under the run's lease; ``{"layout": 2, "round": r, "complete": bool,
  "closed": bool, "min_nodes": m, "max_nodes": M, "size": n, "waiting": k, "lost":
  bool, "lease": id}``, a few dozen bytes, and optionally ``"max_rounds": b`` (the
  run's restart budget), ``"reason": "..."`` (why the run was closed, if not by a
  node's ``set_closed()``) and ``"rank_order": o`` (absent: ``"natural"``). Every write
  of it is a compare-and-swap.
- ``P/R/state.coordinator``: under the coordinator's lease; ``{"node": name}``.
- ``P/R/state.round``: under the run's lease; the last completed round's record,
  ``{"round": r, "participants": [...] in rank order, "payloads": bool}``, its list
  zlib-compressed (``"zlib": "<base64>"``) when long. Written with the state that
  completes the round, so a node receives it once per round, with that state.
- ``P/R/nodes/<node>``: a node's heartbeat key, under its lease; ``{"layout": 2,
  "min_nodes": m, "max_nodes": M, "payload": "<base64>", "topology": label}``
  (no ``topology``: no label).
- ``P/R/join/<node>``: under the same lease; ``{"round": r}``, the round it wants.
- ``P/R/store/…``: under the run's lease, the adapters' keys (the torchrun backend's
  torch ``Store``). The rendezvous never reads them.

Every node watches the prefix ``P/R/state`` (three keys, a few changes per round); only
the coordinator watches the nodes and their joins.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .._checks import is_int
from . import _ranks as ranks

#: The key layout this module reads and writes.
LAYOUT = 2
STATE = "state"
COORDINATOR = "state.coordinator"
RECORD = "state.round"
NODES = "nodes/"
JOIN = "join/"
#: The subtree of a run that adapters own: nodes skip its keys.
DATA = "store/"
#: A record's participant list is compressed from this many bytes on.
_COMPRESS_FROM = 1024

#: What :meth:`~anyrdzv.Rendezvous.changes` yields.
Change = Literal["waiting", "lost", "new_round", "closed"]


@dataclass(frozen=True)
class NodeKeys:
    """The keys of node ``node`` of the run whose keys start with ``run``
    (``<prefix>/<run_id>/``)."""

    run: str
    node: str

    @property
    def control(self) -> str:
        """The prefix of the run's control keys, which every node watches."""
        return self.run + STATE

    @property
    def state(self) -> str:
        """The run's state."""
        return self.run + STATE

    @property
    def coordinator(self) -> str:
        """The run's coordinator's key."""
        return self.run + COORDINATOR

    @property
    def record(self) -> str:
        """The last completed round's record."""
        return self.run + RECORD

    @property
    def nodes(self) -> str:
        """The prefix of the nodes' heartbeat keys."""
        return self.run + NODES

    @property
    def member(self) -> str:
        """The node's heartbeat key."""
        return self.run + NODES + self.node

    @property
    def joins(self) -> str:
        """The prefix of the nodes' join keys."""
        return self.run + JOIN

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
    """What ``P/R/state`` holds.

    :ivar size: the world size of a complete round
    :ivar waiting: how many nodes wait for the round after a complete one, while its
        live participants are fewer than ``max_nodes`` (``num_nodes_waiting()``)
    :ivar lost: whether a participant of the complete round has lost its lease
    :ivar lease: the run's lease, which the state, the record and the adapters' keys
        live under; ``None`` until it is granted
    :ivar max_rounds: the run's restart budget: how many rounds may follow the first
        (rounds ``0 … max_rounds``); ``None`` (absent from the key) for no limit
    :ivar reason: why the run is closed, when the coordinator closed it (its budget
        spent); ``None`` (absent) otherwise
    :ivar rank_order: how the coordinator ranks a round's participants, set by the
        node that created the run; every node must have the same
    """

    round: int
    complete: bool
    closed: bool
    min_nodes: int
    max_nodes: int
    size: int = 0
    waiting: int = 0
    lost: bool = False
    lease: int | None = None
    max_rounds: int | None = None
    reason: str | None = None
    rank_order: ranks.RankOrder = ranks.DEFAULT_ORDER


@dataclass(frozen=True)
class Record:
    """What ``P/R/state.round`` holds: a completed round.

    :ivar participants: the node names, in rank order
    :ivar payloads: whether a participant's payload is not empty
    """

    round: int
    participants: tuple[str, ...]
    payloads: bool = False


@dataclass(frozen=True)
class Member:
    """What ``P/R/nodes/<node>`` holds.

    :ivar topology: the node's topology label, or ``None``
    """

    min_nodes: int
    max_nodes: int
    payload: bytes
    topology: str | None = None


class MalformedValue(ValueError):
    """A value in a run's keys is not what a node writes (so not a type error of ours)."""


class OtherLayout(ValueError):
    """A run's state was written with another key layout, by another anyrdzv."""


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


def _bool(obj: dict[str, Any], name: str) -> bool:
    value = obj.get(name)
    if not isinstance(value, bool):
        raise MalformedValue(f"{name!r} must be a boolean")
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


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _check_layout(obj: dict[str, Any], what: str) -> None:
    layout = obj.get("layout", 1)
    if layout != LAYOUT:
        raise OtherLayout(
            f"{what} was written with key layout {echo_layout(layout)}, and this node "
            f"reads and writes key layout {LAYOUT}: every node of a run must run a "
            f"version of anyrdzv with the same key layout"
        )


def echo_layout(layout: object) -> str:
    """A layout number as a message shows it (1 is every anyrdzv before layout 2)."""
    if layout == 1:
        return "1 (anyrdzv before the rendezvous's key layout 2)"
    return repr(layout)[:40]


def encode_state(state: RunState) -> bytes:
    """The JSON of ``state``: the layout first, so that an older node's error shows it."""
    obj: dict[str, Any] = {
        "layout": LAYOUT,
        "round": state.round,
        "complete": state.complete,
        "closed": state.closed,
        "min_nodes": state.min_nodes,
        "max_nodes": state.max_nodes,
        "size": state.size,
        "waiting": state.waiting,
        "lost": state.lost,
    }
    if state.lease is not None:
        obj["lease"] = state.lease
    if state.max_rounds is not None:
        obj["max_rounds"] = state.max_rounds
    if state.reason is not None:
        obj["reason"] = state.reason
    if state.rank_order != ranks.DEFAULT_ORDER:
        obj["rank_order"] = state.rank_order
    return _json(obj)


def decode_state(data: bytes) -> RunState:
    """Read ``P/R/state``.

    :raises OtherLayout: if another key layout wrote it
    :raises ValueError: if it is not what :func:`encode_state` writes
    """
    obj = _object(data)
    _check_layout(obj, "the run's state")
    lease = obj.get("lease")
    if lease is not None and (not is_int(lease) or lease < 0):
        raise MalformedValue("'lease' must be a lease id")
    max_rounds = obj.get("max_rounds")
    if max_rounds is not None and (not is_int(max_rounds) or max_rounds < 0):
        raise MalformedValue("'max_rounds' must be an int of at least 0")
    reason = obj.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise MalformedValue("'reason' must be a string")
    try:
        rank_order = ranks.check_rank_order("'rank_order'", obj.get("rank_order", "natural"))
    except TypeError as exc:
        raise MalformedValue(str(exc)) from None
    state = RunState(
        round=_int(obj, "round", 0),
        complete=_bool(obj, "complete"),
        closed=_bool(obj, "closed"),
        min_nodes=_int(obj, "min_nodes", 1),
        max_nodes=_int(obj, "max_nodes", 1),
        size=_int(obj, "size", 0),
        waiting=_int(obj, "waiting", 0),
        lost=_bool(obj, "lost"),
        lease=lease,
        max_rounds=max_rounds,
        reason=reason,
        rank_order=rank_order,
    )
    if state.min_nodes > state.max_nodes:
        raise ValueError("'min_nodes' is greater than 'max_nodes'")
    if state.size > state.max_nodes:
        raise ValueError("'size' is greater than 'max_nodes'")
    return state


def encode_record(record: Record) -> bytes:
    """The JSON of ``record``, its names compressed when they are many."""
    names = "\n".join(record.participants).encode()
    obj: dict[str, Any] = {"round": record.round, "payloads": record.payloads}
    if len(names) >= _COMPRESS_FROM:
        obj["zlib"] = _b64(zlib.compress(names, 6))
    else:
        obj["participants"] = list(record.participants)
    return _json(obj)


def decode_record(data: bytes) -> Record:
    """Read ``P/R/state.round``.

    :raises ValueError: if it is not what :func:`encode_record` writes
    """
    obj = _object(data)
    if "zlib" in obj:
        packed = _unb64(obj["zlib"], "'zlib'")
        try:
            # A bomb is bounded: no list of node names in one etcd value grows past this.
            text = zlib.decompressobj().decompress(packed, 64 * 1024 * 1024).decode()
        except (zlib.error, UnicodeDecodeError):
            raise ValueError("'zlib' does not hold compressed node names") from None
        participants = _names(text.split("\n") if text else [], "'zlib'")
    else:
        participants = _names(obj.get("participants"), "'participants'")
    if len(set(participants)) != len(participants):
        raise ValueError("'participants' must be distinct")
    return Record(_int(obj, "round", 0), participants, _bool(obj, "payloads"))


def encode_member(member: Member) -> bytes:
    """The JSON of a node's heartbeat key."""
    obj: dict[str, Any] = {
        "layout": LAYOUT,
        "min_nodes": member.min_nodes,
        "max_nodes": member.max_nodes,
        "payload": _b64(member.payload),
    }
    if member.topology is not None:
        obj["topology"] = member.topology
    return _json(obj)


def decode_member(data: bytes) -> Member:
    """Read ``P/R/nodes/<node>``.

    :raises ValueError: if it is not what :func:`encode_member` writes
    """
    obj = _object(data)
    _check_layout(obj, "the node's key")
    try:
        topology = ranks.check_topology("'topology'", obj.get("topology"))
    except TypeError as exc:
        raise MalformedValue(str(exc)) from None
    return Member(
        _int(obj, "min_nodes", 1),
        _int(obj, "max_nodes", 1),
        _unb64(obj.get("payload"), "'payload'"),
        topology,
    )


def encode_coordinator(node: str) -> bytes:
    """The JSON of the coordinator's key."""
    return _json({"node": node})


def decode_coordinator(data: bytes) -> str:
    """Read ``P/R/state.coordinator``: the coordinator's node name.

    :raises ValueError: if it is not what :func:`encode_coordinator` writes
    """
    return _names([_object(data).get("node")], "'node'")[0]


def encode_join(round: int) -> bytes:
    """The JSON of a node's join key."""
    return b'{"round":%d}' % round


def decode_join(data: bytes) -> int:
    """Read ``P/R/join/<node>``: the round the node wants to be in.

    :raises ValueError: if it is not what :func:`encode_join` writes
    """
    return _int(_object(data), "round", 0)


# -- a node -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Join:
    """Put this node's join key for ``round``."""

    round: int


@dataclass(frozen=True)
class Done:
    """The round is complete with this node in it."""

    state: RunState
    record: Record


@dataclass(frozen=True)
class Closed:
    """The run is closed; ``reason`` says why, if the coordinator closed it."""

    reason: str | None = None


@dataclass(frozen=True)
class Wait:
    """Nothing to do until the control keys change, or until ``until`` (a local time)."""

    until: float | None = None


def node_step(
    state: RunState | None,
    record: Record | None,
    me: str,
    *,
    joined: int | None,
    handed_out: int | None,
    min_nodes: int,
    max_nodes: int,
    rank_order: ranks.RankOrder = ranks.DEFAULT_ORDER,
) -> Join | Done | Closed | Wait:
    """What node ``me``, in ``next_rendezvous()``, does next.

    :param joined: the round this node's join key asks for, or ``None``
    :param handed_out: the last round ``next_rendezvous()`` returned to this node
    :param rank_order: this node's rank order
    :raises ValueError: if the run's ``min_nodes``/``max_nodes`` or rank order differ
        from ours
    """
    if state is None:
        return Wait()  # the coordinator creates it
    if state.closed:
        return Closed(state.reason)
    if (state.min_nodes, state.max_nodes) != (min_nodes, max_nodes):
        raise ValueError(
            f"this node has min_nodes={min_nodes}, max_nodes={max_nodes}, but the run "
            f"has min_nodes={state.min_nodes}, max_nodes={state.max_nodes}"
        )
    if state.rank_order != rank_order:
        raise ValueError(
            f"this node has rank_order={rank_order!r}, but the run has "
            f"rank_order={state.rank_order!r}"
        )
    if not state.complete:
        return Wait() if joined == state.round else Join(state.round)
    if joined == state.round and handed_out != state.round:
        if record is None or record.round != state.round:
            return Wait()  # the record comes with the completing state
        if me in record.participants:
            return Done(state, record)
    # A participant asks for a new round; a node too late for this one waits for it.
    return Wait() if joined == state.round + 1 else Join(state.round + 1)


def changes(state: RunState | None, held: int | None) -> list[Change]:
    """The reasons a node that holds round ``held`` (``None``: none yet) has to leave
    it: the run is ``"closed"``; a later round is asked for (``"new_round"``); a
    participant's lease is gone (``"lost"``); nodes wait to join (``"waiting"``)."""
    if state is None:
        return []
    reasons: list[Change] = []
    if state.closed:
        reasons.append("closed")
    if held is None:
        return reasons
    if state.round > held:
        reasons.append("new_round")
    elif state.round == held and state.complete:
        if state.lost:
            reasons.append("lost")
        if state.waiting:
            reasons.append("waiting")
    return reasons


# -- the coordinator ---------------------------------------------------------------------


@dataclass
class View:
    """The coordinator's picture of its run, as its watch has seen it.

    Change its members and joins with :meth:`set_member` and :meth:`set_join`, which keep
    the count of live joins of each round.

    :ivar state: the run's state and its ``mod_revision``, or ``None``
    :ivar record: the last completed round's record, or ``None``
    :ivar members: the live nodes
    :ivar joins: for each node, the round it wants to be in, and the ``mod_revision`` of
        that wish
    """

    state: tuple[RunState, int] | None
    record: Record | None
    members: dict[str, Member]
    joins: dict[str, tuple[int, int]]
    _counts: Counter[int] = field(default_factory=Counter, init=False, repr=False)

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
        self._count(name, -1)
        self.members.pop(name, None)
        if member is not None:
            self.members[name] = member
        self._count(name, 1)

    def set_join(self, name: str, join: tuple[int, int] | None) -> None:
        """Put (or with ``None`` drop) a node's wish: ``(round, mod_revision)``."""
        self._count(name, -1)
        self.joins.pop(name, None)
        if join is not None:
            self.joins[name] = join
        self._count(name, 1)

    def count_joined(self, round: int) -> int:
        """How many live nodes want to be in ``round``."""
        return self._counts[round]

    def joined(self, round: int) -> list[str]:
        """The live nodes that want to be in ``round``, earliest first."""
        if not self._counts[round]:
            return []
        found = [
            (revision, name)
            for name, (wanted, revision) in self.joins.items()
            if wanted == round and name in self.members
        ]
        return [name for _, name in sorted(found)]

    def participants_of(self, round: int) -> tuple[str, ...] | None:
        """The participants of ``round``, if it is the recorded one."""
        record = self.record
        return None if record is None or record.round != round else record.participants

    def waiting(self) -> int:
        """How many nodes wait for the round after a complete one, while its live
        participants are fewer than ``max_nodes``: what ``num_nodes_waiting()`` answers."""
        if self.state is None:
            return 0
        state = self.state[0]
        if not state.complete or not self._counts[state.round + 1]:
            return 0
        participants = self.participants_of(state.round) or ()
        live = [name for name in participants if name in self.members]
        if len(live) >= state.max_nodes:
            return 0
        # The live nodes that joined the next round, less the participants among them.
        back = sum(1 for name in live if self.joins.get(name, (-1, 0))[0] == state.round + 1)
        return self._counts[state.round + 1] - back

    def lost(self) -> bool:
        """Whether a participant of the state's complete round has lost its lease."""
        if self.state is None or not self.state[0].complete:
            return False
        participants = self.participants_of(self.state[0].round) or ()
        return any(name not in self.members for name in participants)


def previous_back(view: View, round: int) -> bool | None:
    """Whether every live participant of the round before ``round`` has joined it (D6);
    ``None`` if that round is not recorded (round 0, or a record already replaced)."""
    previous = view.participants_of(round - 1)
    if previous is None:
        return None
    joins, members = view.joins, view.members
    return all(joins.get(name, (-1, 0))[0] == round for name in previous if name in members)


@dataclass(frozen=True)
class Create:
    """Create the state (it is absent): ``state``, under a new run lease."""

    state: RunState


@dataclass(frozen=True)
class Swap:
    """Compare-and-swap the state, from the ``mod_revision`` seen, to ``state``; with
    ``record``, put it too, in the same txn."""

    state: RunState
    expected: int
    why: str
    record: Record | None = None


def coordinate(
    view: View,
    *,
    min_nodes: int,
    max_nodes: int,
    min_reached_at: float | None,
    last_call_timeout: float,
    now: float,
    max_rounds: int | None = None,
    rank_order: ranks.RankOrder = ranks.DEFAULT_ORDER,
) -> Create | Swap | Wait:
    """What the coordinator does next: create the state, open or complete a round, or
    update the signals the state carries (a participant lost, nodes waiting).

    :param min_nodes: the coordinator's own, for a state it creates
    :param max_nodes: likewise
    :param min_reached_at: when the coordinator saw the state's open round reach its
        ``min_nodes`` joins, or ``None``
    :param max_rounds: the coordinator's restart budget, for a state it creates; the
        state's own is the run's
    :param rank_order: the coordinator's own, for a state it creates
    """
    if view.state is None:
        return Create(
            RunState(
                0,
                False,
                False,
                min_nodes,
                max_nodes,
                max_rounds=max_rounds,
                rank_order=rank_order,
            )
        )
    state, revision = view.state
    if state.closed:
        return Wait()
    if state.complete:
        next_round = state.round + 1
        participants = view.participants_of(state.round) or ()
        live = [name for name in participants if name in view.members]
        asked = [name for name in live if view.joins.get(name, (-1, 0))[0] == next_round]
        if asked or (not live and view.count_joined(next_round)):
            why = "a participant asked for it" if asked else "none is alive"
            spent = budget_spent(state, next_round, why)
            if spent is not None:
                return Swap(replace(state, closed=True, reason=spent), revision, spent)
            fresh = RunState(
                next_round,
                False,
                False,
                state.min_nodes,
                state.max_nodes,
                lease=state.lease,
                max_rounds=state.max_rounds,
                rank_order=state.rank_order,
            )
            return Swap(fresh, revision, f"round {next_round} opens: {why}")
        signals = (view.lost(), view.waiting())
        if signals != (state.lost, state.waiting):
            lost, waiting = signals
            why = f"round {state.round}: lost={lost}, {waiting} node(s) waiting"
            return Swap(replace(state, lost=lost, waiting=waiting), revision, why)
        return Wait()
    count = view.count_joined(state.round)
    if count < state.min_nodes:
        return Wait()
    joined = view.joined(state.round)
    back = previous_back(view, state.round)
    last_call = min_reached_at is not None and now >= min_reached_at + last_call_timeout
    if count >= state.max_nodes and back is not False:
        chosen, why = joined, "max_nodes joined"
    elif back:
        chosen, why = joined, "every live node of the last round, and every waiting node"
    elif last_call:
        chosen, why = joined, "the last call passed"
    else:
        # Spares that wait do not complete a round before the last round's live nodes
        # are back: they would take the places of nodes that are only slower to rejoin.
        return Wait(None if min_reached_at is None else min_reached_at + last_call_timeout)
    if len(chosen) > state.max_nodes:
        # The last round's live nodes keep their places; the others come earliest first.
        stay = set(view.participants_of(state.round - 1) or ())
        chosen = [n for n in chosen if n in stay] + [n for n in chosen if n not in stay]
        chosen = chosen[: state.max_nodes]
    record = view.record
    names = ranks.order(
        chosen,
        state.rank_order,
        labels={name: view.members[name].topology for name in chosen},
        previous=() if record is None else record.participants,
    )
    done = replace(state, complete=True, size=len(names), waiting=0, lost=False)
    record = Record(state.round, names, any(view.members[name].payload for name in names))
    return Swap(
        done, revision, f"round {state.round} completes: {why} ({len(names)} nodes)", record
    )


def budget_spent(state: RunState, next_round: int, why: str) -> str | None:
    """Why round ``next_round`` may not open, if it would spend more than the run's
    restart budget (rounds ``0 … max_rounds``, counted run-wide by round number); else
    ``None``.

    :param why: why the round was asked for
    """
    if state.max_rounds is None or next_round <= state.max_rounds:
        return None
    return (
        f"the run's restart budget is spent: max_rounds={state.max_rounds} allows "
        f"{state.max_rounds} round(s) after the first, and round {next_round} was asked "
        f"for ({why})"
    )


def closing(
    state: tuple[RunState, int] | None, *, min_nodes: int, max_nodes: int
) -> Create | Swap | None:
    """What closes the run: a closed state, created or swapped in; ``None`` if the run
    is closed already."""
    if state is None:
        return Create(RunState(0, False, True, min_nodes, max_nodes))
    current, revision = state
    if current.closed:
        return None
    return Swap(replace(current, closed=True), revision, "closed")
