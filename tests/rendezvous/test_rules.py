"""The pure rules of a rendezvous: the values of a run's keys, what a node does next,
what the coordinator decides, the reasons to leave a round, and what closes a run."""

from __future__ import annotations

import json
import zlib
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anyrdzv._rendezvous import _rules as rules

OPEN = rules.RunState(0, False, False, 2, 3, lease=9)


def view_of(
    state: rules.RunState | None,
    members: list[str],
    joins: dict[str, int],
    record: rules.Record | None = None,
) -> rules.View:
    """A coordinator's view with ``state`` at revision 7, these live members (each with
    its name as payload), and these joins, in order."""
    return rules.View(
        None if state is None else (state, 7),
        record,
        {name: rules.Member(2, 3, name.encode()) for name in members},
        {name: (round, revision) for revision, (name, round) in enumerate(joins.items(), 10)},
    )


def coordinate(view: rules.View, **kwargs: Any) -> rules.Create | rules.Swap | rules.Wait:
    options: dict[str, Any] = {
        "min_nodes": 2,
        "max_nodes": 3,
        "min_reached_at": None,
        "last_call_timeout": 30.0,
        "now": 100.0,
    }
    options.update(kwargs)
    return rules.coordinate(view, **options)


def step(
    state: rules.RunState | None, record: rules.Record | None, me: str, **kwargs: Any
) -> rules.Join | rules.Done | rules.Closed | rules.Wait:
    options: dict[str, Any] = {
        "joined": None,
        "handed_out": None,
        "min_nodes": 2,
        "max_nodes": 3,
    }
    options.update(kwargs)
    return rules.node_step(state, record, me, **options)


def completed(round: int, *names: str, closed: bool = False, **kwargs: Any) -> rules.RunState:
    return rules.RunState(round, True, closed, 2, 3, size=len(names), lease=9, **kwargs)


class TestNodeStep:
    """What a node does, from the control keys alone."""

    def test_no_state_waits_for_the_coordinator(self) -> None:
        assert step(None, None, "a") == rules.Wait()

    def test_an_open_round_is_joined_then_waited_on(self) -> None:
        assert step(OPEN, None, "a") == rules.Join(0)
        assert step(OPEN, None, "a", joined=0) == rules.Wait()

    def test_a_complete_round_with_this_node_is_done(self) -> None:
        done = completed(2, "a", "b")
        record = rules.Record(2, ("a", "b"))
        assert step(done, record, "a", joined=2) == rules.Done(done, record)
        # Not before its record is in: it comes with the state that completes the round.
        assert step(done, rules.Record(1, ("a", "b")), "a", joined=2) == rules.Wait()

    def test_a_node_left_out_at_max_nodes_joins_the_next_round(self) -> None:
        done = completed(2, "a", "b", "c")
        record = rules.Record(2, ("a", "b", "c"))
        assert step(done, record, "d", joined=2) == rules.Join(3)
        assert step(done, record, "d", joined=3) == rules.Wait()

    def test_a_participant_that_holds_its_round_asks_for_the_next(self) -> None:
        done = completed(2, "a", "b")
        record = rules.Record(2, ("a", "b"))
        assert step(done, record, "a", joined=2, handed_out=2) == rules.Join(3)

    def test_a_late_node_joins_the_next_round(self) -> None:
        done = completed(2, "a", "b")
        assert step(done, rules.Record(2, ("a", "b")), "c") == rules.Join(3)

    def test_closed_wins(self) -> None:
        closed = rules.RunState(0, False, True, 5, 6)
        assert step(closed, None, "a", joined=0) == rules.Closed()

    def test_disagreeing_min_or_max_nodes_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="max_nodes=4, but the run has"):
            step(OPEN, None, "a", max_nodes=4)


class TestCoordinate:
    """What the coordinator decides, one case each."""

    def test_no_state_creates_round_0(self) -> None:
        assert coordinate(view_of(None, ["a"], {})) == rules.Create(
            rules.RunState(0, False, False, 2, 3)
        )

    def test_too_few_joins_wait(self) -> None:
        assert coordinate(view_of(OPEN, ["a", "b"], {"a": 0})) == rules.Wait()

    def test_max_nodes_complete_with_the_earliest_joins(self) -> None:
        view = view_of(OPEN, ["d", "c", "b", "a"], {"d": 0, "c": 0, "a": 0, "b": 0})
        action = coordinate(view)
        assert isinstance(action, rules.Swap)
        assert action.expected == 7
        assert action.state == completed(0, "a", "c", "d")
        assert action.record == rules.Record(0, ("a", "c", "d"), payloads=True)

    def test_min_nodes_wait_for_the_last_call(self) -> None:
        view = view_of(OPEN, ["a", "b"], {"a": 0, "b": 0})
        assert coordinate(view, min_reached_at=90.0) == rules.Wait(120.0)
        action = coordinate(view, min_reached_at=70.0)
        assert isinstance(action, rules.Swap)
        assert action.record is not None
        assert action.record.participants == ("a", "b")

    def test_a_dead_node_does_not_count(self) -> None:
        view = view_of(OPEN, ["a"], {"a": 0, "b": 0})
        assert coordinate(view, min_reached_at=0.0) == rules.Wait()

    def test_d6_completes_once_every_live_node_of_the_last_round_is_back(self) -> None:
        state = rules.RunState(4, False, False, 2, 3, lease=9)
        last = rules.Record(3, ("a", "b", "c"))
        # c is dead; a and b are back, and d waited: no last call.
        action = coordinate(view_of(state, ["a", "b", "d"], {"a": 4, "b": 4, "d": 4}, last))
        assert isinstance(action, rules.Swap)
        assert action.record is not None
        assert action.record.participants == ("a", "b", "d")
        # b lives but is not back yet: the last call applies.
        view = view_of(state, ["a", "b", "d"], {"a": 4, "d": 4}, last)
        assert coordinate(view, min_reached_at=95.0) == rules.Wait(125.0)
        # Round 0 has no round before it: the last call applies.
        view = view_of(OPEN, ["a", "b"], {"a": 0, "b": 0})
        assert coordinate(view, min_reached_at=95.0) == rules.Wait(125.0)

    def test_a_participant_asks_for_a_new_round(self) -> None:
        done = completed(2, "a", "b")
        record = rules.Record(2, ("a", "b"))
        assert coordinate(view_of(done, ["a", "b"], {"a": 2, "b": 2}, record)) == rules.Wait()
        action = coordinate(view_of(done, ["a", "b"], {"a": 3, "b": 2}, record))
        assert isinstance(action, rules.Swap)
        assert action.state == rules.RunState(3, False, False, 2, 3, lease=9)
        assert action.record is None

    def test_a_late_node_is_counted_as_waiting(self) -> None:
        done = completed(2, "a", "b")
        record = rules.Record(2, ("a", "b"))
        view = view_of(done, ["a", "b", "c"], {"a": 2, "b": 2, "c": 3}, record)
        assert view.waiting() == 1
        action = coordinate(view)
        assert isinstance(action, rules.Swap)
        assert (action.state.round, action.state.waiting, action.state.lost) == (2, 1, False)
        full = rules.RunState(2, True, False, 1, 2, size=2)
        assert view_of(full, ["a", "b", "c"], {"c": 3}, record).waiting() == 0
        assert view_of(full, ["a", "c"], {"c": 3}, record).waiting() == 1

    def test_a_lost_participant_is_signalled(self) -> None:
        done = completed(2, "a", "b")
        view = view_of(done, ["a"], {"a": 2}, rules.Record(2, ("a", "b")))
        action = coordinate(view)
        assert isinstance(action, rules.Swap)
        assert action.state == completed(2, "a", "b", lost=True)
        signalled = view_of(action.state, ["a"], {"a": 2}, rules.Record(2, ("a", "b")))
        assert coordinate(signalled) == rules.Wait()

    def test_a_round_no_participant_holds_is_left_for_a_new_one(self) -> None:
        done = completed(2, "a", "b")
        action = coordinate(view_of(done, ["c"], {"c": 3}, rules.Record(2, ("a", "b"))))
        assert isinstance(action, rules.Swap)
        assert action.state == rules.RunState(3, False, False, 2, 3, lease=9)

    def test_a_closed_run_is_left_alone(self) -> None:
        closed = rules.RunState(0, False, True, 2, 3)
        assert coordinate(view_of(closed, ["a", "b"], {"a": 0, "b": 0})) == rules.Wait()

    @given(
        st.lists(
            st.tuples(
                st.booleans(),
                st.sampled_from("abcd"),
                st.none() | st.integers(0, 3),
            ),
            max_size=40,
        )
    )
    def test_the_view_counts_live_joins_as_it_changes(
        self, changes: list[tuple[bool, str, int | None]]
    ) -> None:
        view = rules.View(None, None, {}, {})
        for revision, (is_member, name, round) in enumerate(changes, 1):
            if is_member:
                view.set_member(name, None if round is None else rules.Member(1, 1, b""))
            else:
                view.set_join(name, None if round is None else (round, revision))
            for wanted in range(4):
                assert view.count_joined(wanted) == len(view.joined(wanted))


class TestValues:
    """The values of a run's keys: what a node writes reads back; anything else is a
    ValueError, never another error."""

    @given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
    def test_any_bytes_decode_or_raise_value_error(self, data: bytes) -> None:
        for decode in (
            rules.decode_state,
            rules.decode_record,
            rules.decode_member,
            rules.decode_join,
            rules.decode_coordinator,
        ):
            try:
                decode(data)
            except ValueError:
                pass

    @given(
        st.integers(0, 2**40),
        st.booleans(),
        st.booleans(),
        st.lists(st.text(min_size=1, max_size=8).filter(lambda s: "\n" not in s), unique=True),
        st.binary(max_size=20),
        st.none() | st.integers(0, 2**62),
    )
    def test_what_a_node_writes_reads_back(
        self,
        round: int,
        complete: bool,
        closed: bool,
        names: list[str],
        payload: bytes,
        lease: int | None,
    ) -> None:
        size = len(names)
        state = rules.RunState(round, complete, closed, 1, max(size, 1), size, 3, True, lease)
        assert rules.decode_state(rules.encode_state(state)) == state
        record = rules.Record(round, tuple(names), bool(payload))
        assert rules.decode_record(rules.encode_record(record)) == record
        member = rules.Member(1, 2, payload)
        assert rules.decode_member(rules.encode_member(member)) == member
        assert rules.decode_join(rules.encode_join(round)) == round
        for name in names:
            assert rules.decode_coordinator(rules.encode_coordinator(name)) == name

    def test_a_long_participant_list_is_compressed(self) -> None:
        record = rules.Record(5, tuple(f"host-{i:05d}_1234_0" for i in range(4096)))
        data = rules.encode_record(record)
        assert len(data) < len("\n".join(record.participants)) / 3
        assert json.loads(data)["zlib"]
        assert rules.decode_record(data) == record

    def test_a_compressed_list_that_is_no_list_of_names(self) -> None:
        bad = json.dumps({"round": 1, "payloads": False, "zlib": "bm90IHpsaWI="}).encode()
        with pytest.raises(ValueError, match="'zlib' does not hold compressed node names"):
            rules.decode_record(bad)
        import base64

        empty_name = base64.b64encode(zlib.compress(b"a\n\nb")).decode()
        with pytest.raises(ValueError, match="list of node names"):
            rules.decode_record(
                json.dumps({"round": 1, "payloads": False, "zlib": empty_name}).encode()
            )

    def test_the_state_names_its_layout_first(self) -> None:
        assert rules.encode_state(OPEN).startswith(b'{"layout":2,')

    @pytest.mark.parametrize(
        "value",
        [
            (
                b'{"round":0,"complete":false,"closed":false,"min_nodes":1,"max_nodes":2,'
                b'"participants":[],"payloads":{},"previous":null}'
            ),
            b'{"layout":3,"round":0}',
        ],
    )
    def test_another_layout_is_named(self, value: bytes) -> None:
        with pytest.raises(rules.OtherLayout, match="key layout (1|3).*key layout 2"):
            rules.decode_state(value)


class TestNodeKeys:
    def test_the_keys_of_a_node(self) -> None:
        keys = rules.NodeKeys("/p/run/", "n")
        assert (
            keys.control,
            keys.state,
            keys.coordinator,
            keys.record,
            keys.nodes,
            keys.member,
            keys.joins,
            keys.join,
            keys.data,
        ) == (
            "/p/run/state",
            "/p/run/state",
            "/p/run/state.coordinator",
            "/p/run/state.round",
            "/p/run/nodes/",
            "/p/run/nodes/n",
            "/p/run/join/",
            "/p/run/join/n",
            "/p/run/store/",
        )


class TestClosing:
    def test_no_state_is_created_closed(self) -> None:
        assert rules.closing(None, min_nodes=2, max_nodes=3) == rules.Create(
            rules.RunState(0, False, True, 2, 3)
        )

    def test_a_state_is_swapped_to_closed_as_it_is(self) -> None:
        done = completed(2, "a", "b", waiting=1)
        assert rules.closing((done, 7), min_nodes=2, max_nodes=3) == rules.Swap(
            completed(2, "a", "b", waiting=1, closed=True), 7, "closed"
        )

    def test_a_closed_run_needs_nothing(self) -> None:
        closed = rules.RunState(0, False, True, 2, 3)
        assert rules.closing((closed, 7), min_nodes=2, max_nodes=3) is None


class TestChanges:
    DONE = completed(2, "a", "b")

    def test_no_state_no_reason(self) -> None:
        assert rules.changes(None, 2) == []

    def test_before_a_round_is_held_only_closed(self) -> None:
        closed = completed(2, "a", "b", closed=True)
        assert rules.changes(closed, None) == ["closed"]
        assert rules.changes(self.DONE, None) == []

    def test_the_held_round_as_it_is(self) -> None:
        assert rules.changes(self.DONE, 2) == []

    def test_a_lost_participant_and_a_waiting_node(self) -> None:
        assert rules.changes(completed(2, "a", "b", lost=True, waiting=1), 2) == ["lost", "waiting"]

    def test_a_later_round(self) -> None:
        later = rules.RunState(3, False, True, 2, 3)
        assert rules.changes(later, 2) == ["closed", "new_round"]


class TestRankOrder:
    """The coordinator ranks a round's participants with the run's rank order, and the
    nodes' topology labels; the spares of a round do not displace its survivors."""

    def test_a_round_is_ranked_in_natural_order_by_default(self) -> None:
        view = view_of(
            OPEN, ["node66", "node7", "node100"], {"node66": 0, "node7": 0, "node100": 0}
        )
        action = coordinate(view)
        assert isinstance(action, rules.Swap)
        assert action.record is not None
        assert action.record.participants == ("node7", "node66", "node100")

    def test_name_is_torchs_order(self) -> None:
        state = replace(OPEN, rank_order="name")
        view = view_of(state, ["node66", "node7"], {"node66": 0, "node7": 0})
        action = coordinate(view, min_reached_at=0.0)
        assert isinstance(action, rules.Swap)
        assert action.record is not None
        assert action.record.participants == ("node66", "node7")
        assert action.state.rank_order == "name"

    def test_the_creator_sets_the_order_and_new_rounds_keep_it(self) -> None:
        assert coordinate(view_of(None, ["a"], {}), rank_order="stable") == rules.Create(
            rules.RunState(0, False, False, 2, 3, rank_order="stable")
        )
        done = completed(2, "a", "b", rank_order="stable")
        action = coordinate(view_of(done, ["a", "b"], {"a": 3}, rules.Record(2, ("a", "b"))))
        assert isinstance(action, rules.Swap)
        assert action.state.rank_order == "stable"

    def test_labels_group_ranks(self) -> None:
        view = view_of(OPEN, [], {"a": 0, "b": 0, "c": 0})
        view.set_member("a", rules.Member(2, 3, b"", "rack10"))
        view.set_member("b", rules.Member(2, 3, b"", "rack2"))
        view.set_member("c", rules.Member(2, 3, b"", "rack10"))
        action = coordinate(view)
        assert isinstance(action, rules.Swap)
        assert action.record is not None
        assert action.record.participants == ("b", "a", "c")

    def test_a_spare_takes_the_lost_rank_with_stable(self) -> None:
        state = rules.RunState(4, False, False, 2, 3, lease=9, rank_order="stable")
        last = rules.Record(3, ("node9", "node10", "node11"))
        view = view_of(
            state, ["node9", "node11", "spare"], {"spare": 4, "node11": 4, "node9": 4}, last
        )
        action = coordinate(view)
        assert isinstance(action, rules.Swap)
        assert action.record is not None
        assert action.record.participants == ("node9", "spare", "node11")

    def test_spares_do_not_take_the_place_of_a_slow_survivor(self) -> None:
        state = rules.RunState(4, False, False, 2, 3, lease=9)
        last = rules.Record(3, ("a", "b", "c"))
        members = ["a", "b", "s1", "s2"]
        # c is lost; the spares s1 and s2 joined long before the survivors, and b is not
        # back yet: max_nodes have joined, but the round waits for b (or the last call).
        view = view_of(state, members, {"s1": 4, "s2": 4, "a": 4}, last)
        assert coordinate(view, min_reached_at=95.0) == rules.Wait(125.0)
        # b is back: the survivors and the earliest spare, at once (D6).
        view = view_of(state, members, {"s1": 4, "s2": 4, "a": 4, "b": 4}, last)
        action = coordinate(view, min_reached_at=95.0)
        assert isinstance(action, rules.Swap)
        assert action.record is not None
        assert action.record.participants == ("a", "b", "s1")
        # The last call passed without b: the spares fill the round.
        view = view_of(state, members, {"s1": 4, "s2": 4, "a": 4}, last)
        action = coordinate(view, min_reached_at=60.0)
        assert isinstance(action, rules.Swap)
        assert action.record is not None
        assert action.record.participants == ("a", "s1", "s2")

    def test_a_node_with_another_order_is_refused(self) -> None:
        with pytest.raises(
            ValueError, match="rank_order='name', but the run has rank_order='natural'"
        ):
            step(OPEN, None, "a", rank_order="name")
        assert step(replace(OPEN, rank_order="name"), None, "a", rank_order="name") == rules.Join(0)

    def test_values_carry_the_order_and_the_label(self) -> None:
        state = replace(OPEN, rank_order="stable")
        assert json.loads(rules.encode_state(state))["rank_order"] == "stable"
        assert rules.decode_state(rules.encode_state(state)) == state
        assert "rank_order" not in json.loads(rules.encode_state(OPEN))
        member = rules.Member(1, 2, b"x", "rack3/switch12")
        assert rules.decode_member(rules.encode_member(member)) == member
        # A node without a label writes none, and reads as none.
        assert "topology" not in json.loads(rules.encode_member(rules.Member(1, 2, b"")))
        old = b'{"layout":2,"min_nodes":1,"max_nodes":2,"payload":""}'
        assert rules.decode_member(old).topology is None
        for bad in (b'"rank_order":"topology"', b'"rank_order":1'):
            value = rules.encode_state(OPEN)[:-1] + b"," + bad + b"}"
            with pytest.raises(ValueError, match="rank_order"):
                rules.decode_state(value)
        with pytest.raises(ValueError, match="topology"):
            rules.decode_member(old[:-1] + b',"topology":7}')
