"""The pure rules of a rendezvous: the values of a run's keys, what a node does next,
the reasons to leave a round, and what closes a run."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anyrdzv._rendezvous import _rules as rules


def view_of(state: rules.RunState | None, members: list[str], joins: dict[str, int]) -> rules.View:
    """A view with ``state`` at revision 7, these live members, and these joins, in order."""
    return rules.View(
        None if state is None else (state, 7),
        {name: rules.Member(2, 3, name.encode()) for name in members},
        {name: (round, revision) for revision, (name, round) in enumerate(joins.items(), 10)},
    )


def decide(view: rules.View, me: str, **kwargs: Any) -> rules.Action:
    options: dict[str, Any] = {
        "min_nodes": 2,
        "max_nodes": 3,
        "handed_out": None,
        "min_reached_at": None,
        "last_call_timeout": 30.0,
        "now": 100.0,
    }
    options.update(kwargs)
    return rules.decide(view, me, **options)


class TestDecide:
    """The pure rules, one case each."""

    OPEN = rules.RunState(0, False, False, 2, 3)

    def test_no_state_creates_round_0(self) -> None:
        assert decide(view_of(None, ["a"], {}), "a") == rules.Create(self.OPEN)

    def test_an_open_round_is_joined_then_waited_on(self) -> None:
        assert decide(view_of(self.OPEN, ["a"], {}), "a") == rules.Join(0)
        assert decide(view_of(self.OPEN, ["a"], {"a": 0}), "a") == rules.Wait()

    def test_max_nodes_complete_with_the_earliest_joins(self) -> None:
        view = view_of(self.OPEN, ["d", "c", "b", "a"], {"d": 0, "c": 0, "a": 0, "b": 0})
        action = decide(view, "a")
        assert isinstance(action, rules.Swap)
        assert action.expected == 7
        assert action.state.complete
        assert action.state.participants == ("a", "c", "d")
        assert action.state.payloads == {"a": b"a", "c": b"c", "d": b"d"}

    def test_min_nodes_wait_for_the_last_call(self) -> None:
        view = view_of(self.OPEN, ["a", "b"], {"a": 0, "b": 0})
        assert decide(view, "a", min_reached_at=90.0) == rules.Wait(120.0)
        action = decide(view, "a", min_reached_at=70.0)
        assert isinstance(action, rules.Swap)
        assert action.state.participants == ("a", "b")

    def test_a_dead_node_does_not_count(self) -> None:
        view = view_of(self.OPEN, ["a"], {"a": 0, "b": 0})
        assert decide(view, "a", min_reached_at=0.0) == rules.Wait()

    def test_d6_completes_once_every_live_node_of_the_last_round_is_back(self) -> None:
        state = rules.RunState(4, False, False, 2, 3, previous=("a", "b", "c"))
        # c is dead; a and b are back, and d waited: no last call.
        view = view_of(state, ["a", "b", "d"], {"a": 4, "b": 4, "d": 4})
        action = decide(view, "a")
        assert isinstance(action, rules.Swap)
        assert action.state.participants == ("a", "b", "d")
        # b lives but is not back yet: the last call applies.
        view = view_of(state, ["a", "b", "d"], {"a": 4, "d": 4})
        assert decide(view, "a", min_reached_at=95.0) == rules.Wait(125.0)

    def test_a_participant_asks_for_a_new_round(self) -> None:
        done = rules.RunState(2, True, False, 2, 3, ("a", "b"), {"a": b"", "b": b""})
        view = view_of(done, ["a", "b"], {"a": 2, "b": 2})
        assert decide(view, "a", handed_out=None) == rules.Done(done)
        action = decide(view, "a", handed_out=2)
        assert isinstance(action, rules.Swap)
        assert action.state == rules.RunState(3, False, False, 2, 3, previous=("a", "b"))

    def test_a_late_node_joins_the_next_round_and_is_counted(self) -> None:
        done = rules.RunState(2, True, False, 2, 3, ("a", "b"), {"a": b"", "b": b""})
        view = view_of(done, ["a", "b", "c"], {"a": 2, "b": 2})
        assert decide(view, "c") == rules.Join(3)
        view = view_of(done, ["a", "b", "c"], {"a": 2, "b": 2, "c": 3})
        assert decide(view, "c") == rules.Wait()
        assert view.waiting() == 1
        full = rules.RunState(2, True, False, 1, 2, ("a", "b"), {"a": b"", "b": b""})
        assert view_of(full, ["a", "b", "c"], {"c": 3}).waiting() == 0
        assert view_of(full, ["a", "c"], {"c": 3}).waiting() == 1

    def test_a_round_no_participant_holds_is_left_for_a_new_one(self) -> None:
        done = rules.RunState(2, True, False, 2, 3, ("a", "b"), {"a": b"", "b": b""})
        action = decide(view_of(done, ["c"], {"c": 3}), "c")
        assert isinstance(action, rules.Swap)
        assert action.state == rules.RunState(3, False, False, 2, 3, previous=())

    def test_closed_wins(self) -> None:
        closed = rules.RunState(0, False, True, 5, 6)
        assert decide(view_of(closed, ["a"], {"a": 0}), "a") == rules.Closed()

    def test_disagreeing_min_or_max_nodes_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="max_nodes=4, but the run has"):
            decide(view_of(self.OPEN, ["a"], {}), "a", max_nodes=4)

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
        view = rules.View(None, {}, {})
        for revision, (is_member, name, round) in enumerate(changes, 1):
            if is_member:
                view.set_member(name, None if round is None else rules.Member(1, 1, b""))
            else:
                view.set_join(name, None if round is None else (round, revision))
            for wanted in range(4):
                assert view.count_joined(wanted) == len(view.joined(wanted))


class TestStateValues:
    """The values of a run's keys: what a node writes reads back; anything else is a
    ValueError, never another error."""

    @given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
    def test_any_bytes_decode_or_raise_value_error(self, data: bytes) -> None:
        for decode in (rules.decode_state, rules.decode_member, rules.decode_join):
            try:
                decode(data)
            except ValueError:
                pass

    @given(
        st.integers(0, 2**40),
        st.booleans(),
        st.booleans(),
        st.lists(st.text(min_size=1, max_size=5), max_size=5, unique=True),
        st.binary(max_size=20),
    )
    def test_what_a_node_writes_reads_back(
        self, round: int, complete: bool, closed: bool, names: list[str], payload: bytes
    ) -> None:
        participants = tuple(sorted(names))
        state = rules.RunState(
            round,
            complete,
            closed,
            1,
            max(len(names), 1),
            participants,
            {name: payload for name in participants},
            participants[:1],
        )
        assert rules.decode_state(rules.encode_state(state)) == state
        member = rules.Member(1, 2, payload)
        assert rules.decode_member(rules.encode_member(member)) == member
        assert rules.decode_join(rules.encode_join(round)) == round


class TestNodeKeys:
    def test_the_keys_of_a_node(self) -> None:
        keys = rules.NodeKeys("/p/run/", "n")
        assert (keys.state, keys.member, keys.join, keys.data) == (
            "/p/run/state",
            "/p/run/members/n",
            "/p/run/join/n",
            "/p/run/store/",
        )


class TestClosing:
    def test_no_state_is_created_closed(self) -> None:
        view = view_of(None, ["a"], {})
        assert rules.closing(view, min_nodes=2, max_nodes=3) == rules.Create(
            rules.RunState(0, False, True, 2, 3)
        )

    def test_a_state_is_swapped_to_closed_as_it_is(self) -> None:
        done = rules.RunState(2, True, False, 1, 4, ("a", "b"), {"a": b"x", "b": b""}, ("a",))
        action = rules.closing(view_of(done, ["a", "b"], {}), min_nodes=2, max_nodes=3)
        assert action == rules.Swap(
            rules.RunState(2, True, True, 1, 4, ("a", "b"), {"a": b"x", "b": b""}, ("a",)),
            7,
            "closed",
        )

    def test_a_closed_run_needs_nothing(self) -> None:
        closed = rules.RunState(0, False, True, 2, 3)
        assert rules.closing(view_of(closed, [], {}), min_nodes=2, max_nodes=3) is None


class TestChanges:
    DONE = rules.RunState(2, True, False, 2, 3, ("a", "b"), {"a": b"", "b": b""})

    def test_no_state_no_reason(self) -> None:
        assert rules.changes(view_of(None, ["a"], {}), 2) == []

    def test_before_a_round_is_held_only_closed(self) -> None:
        closed = rules.RunState(2, True, True, 2, 3, ("a", "b"), {"a": b"", "b": b""})
        view = view_of(closed, ["c"], {"c": 3})
        assert rules.changes(view, None) == ["closed"]
        assert rules.changes(view_of(self.DONE, ["c"], {"c": 3}), None) == []

    def test_the_held_round_as_it_is(self) -> None:
        assert rules.changes(view_of(self.DONE, ["a", "b"], {"a": 2, "b": 2}), 2) == []

    def test_a_lost_participant_and_a_waiting_node(self) -> None:
        view = view_of(self.DONE, ["a", "c"], {"a": 2, "c": 3})
        assert rules.changes(view, 2) == ["lost", "waiting"]

    def test_a_later_round(self) -> None:
        later = rules.RunState(3, False, True, 2, 3, previous=("a", "b"))
        assert rules.changes(view_of(later, ["a", "b"], {"a": 3}), 2) == ["closed", "new_round"]
