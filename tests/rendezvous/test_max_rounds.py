"""max_rounds: the run-wide restart budget, counted in the store: the pure rule, the
state's compatible fields, the conf key, and nodes that meet a spent budget."""

from __future__ import annotations

import pytest

from anyrdzv import HeartbeatLost, LeaseStore, MemoryStore, Rendezvous, RendezvousClosed, read_run
from anyrdzv._rendezvous import _rules as rules
from anyrdzv._rendezvous._conf import parse_conf
from tests._support.rendezvous import PREFIX, all_next, check_agreement, kill, make

pytestmark = pytest.mark.anyio


def complete(round: int, *names: str, max_rounds: int | None) -> rules.View:
    state = rules.RunState(round, True, False, 2, 3, size=len(names), lease=9)
    state = rules.RunState(**{**state.__dict__, "max_rounds": max_rounds})
    members = {name: rules.Member(2, 3, b"") for name in names}
    return rules.View((state, 7), rules.Record(round, names), members, {})


def ask(view: rules.View, name: str, round: int) -> rules.View:
    view.set_join(name, (round, 8))
    return view


class TestRule:
    def test_a_round_within_the_budget_opens(self) -> None:
        view = ask(complete(0, "a", "b", max_rounds=1), "a", 1)
        action = rules.coordinate(
            view,
            min_nodes=2,
            max_nodes=3,
            min_reached_at=None,
            last_call_timeout=1,
            now=0,
        )
        assert isinstance(action, rules.Swap)
        assert (action.state.round, action.state.closed) == (1, False)
        assert action.state.max_rounds == 1  # the budget goes on with the state

    def test_the_round_past_the_budget_closes_the_run_with_the_reason(self) -> None:
        view = ask(complete(1, "a", "b", max_rounds=1), "b", 2)
        action = rules.coordinate(
            view, min_nodes=2, max_nodes=3, min_reached_at=None, last_call_timeout=1, now=0
        )
        assert isinstance(action, rules.Swap)
        assert action.state.closed
        assert action.state.round == 1
        assert action.state.reason is not None
        assert "max_rounds=1" in action.state.reason
        assert "round 2" in action.state.reason
        # Every node then meets the closed run, with the reason.
        step = rules.node_step(
            action.state, None, "a", joined=2, handed_out=1, min_nodes=2, max_nodes=3
        )
        assert step == rules.Closed(action.state.reason)

    def test_a_rejoin_after_every_participant_died_is_counted_too(self) -> None:
        view = complete(0, "a", "b", max_rounds=0)
        view.set_member("a", None)
        view.set_member("b", None)
        view.set_member("c", rules.Member(2, 3, b""))
        view.set_join("c", (1, 9))
        action = rules.coordinate(
            view, min_nodes=2, max_nodes=3, min_reached_at=None, last_call_timeout=1, now=0
        )
        assert isinstance(action, rules.Swap)
        assert action.state.closed
        assert action.state.reason is not None
        assert "max_rounds=0" in action.state.reason

    def test_no_budget_is_no_limit(self) -> None:
        view = ask(complete(1000, "a", "b", max_rounds=None), "a", 1001)
        action = rules.coordinate(
            view, min_nodes=2, max_nodes=3, min_reached_at=None, last_call_timeout=1, now=0
        )
        assert isinstance(action, rules.Swap)
        assert (action.state.round, action.state.closed) == (1001, False)

    def test_the_creator_puts_its_budget_in_the_state(self) -> None:
        action = rules.coordinate(
            rules.View(None, None, {}, {}),
            min_nodes=2,
            max_nodes=3,
            min_reached_at=None,
            last_call_timeout=1,
            now=0,
            max_rounds=4,
        )
        assert isinstance(action, rules.Create)
        assert action.state.max_rounds == 4


class TestStateKey:
    def test_the_fields_round_trip(self) -> None:
        state = rules.RunState(2, True, True, 1, 2, 2, lease=5, max_rounds=3, reason="spent")
        assert rules.decode_state(rules.encode_state(state)) == state

    def test_absent_fields_mean_no_budget_and_no_reason(self) -> None:
        data = (
            b'{"layout":2,"round":0,"complete":false,"closed":false,"min_nodes":1,'
            b'"max_nodes":2,"size":0,"waiting":0,"lost":false}'
        )
        state = rules.decode_state(data)
        assert (state.max_rounds, state.reason) == (None, None)
        assert b"max_rounds" not in rules.encode_state(state)
        assert b"reason" not in rules.encode_state(state)

    @pytest.mark.parametrize(
        ("field", "value"), [("max_rounds", "-1"), ("max_rounds", '"1"'), ("reason", "3")]
    )
    def test_a_malformed_field_is_a_value_error(self, field: str, value: str) -> None:
        data = (
            b'{"layout":2,"round":0,"complete":false,"closed":false,"min_nodes":1,'
            b'"max_nodes":2,"size":0,"waiting":0,"lost":false,"%s":%s}'
            % (field.encode(), value.encode())
        )
        with pytest.raises(ValueError, match=field):
            rules.decode_state(data)


class TestArguments:
    def test_the_conf_key(self) -> None:
        assert parse_conf("")["max_rounds"] is None
        assert parse_conf("max_rounds=0")["max_rounds"] == 0
        assert parse_conf({"max_rounds": "3"})["max_rounds"] == 3

    @pytest.mark.parametrize("text", ["-1", "x", "1.5", ""])
    def test_a_bad_conf_value_names_the_key(self, text: str) -> None:
        with pytest.raises(ValueError, match=r"'max_rounds'.*at least 0"):
            parse_conf({"max_rounds": text})

    def test_from_conf_reads_it(self) -> None:
        rdzv = Rendezvous.from_conf(MemoryStore(), "r", "max_rounds=2", min_nodes=1, max_nodes=1)
        assert rdzv.max_rounds == 2

    @pytest.mark.parametrize(
        ("value", "error"),
        [(-1, ValueError), (1.0, TypeError), ("2", TypeError), (True, TypeError)],
    )
    def test_a_bad_argument_names_it(self, value: object, error: type[Exception]) -> None:
        with pytest.raises(error, match="max_rounds"):
            Rendezvous(MemoryStore(), "r", min_nodes=1, max_nodes=1, max_rounds=value)  # type: ignore[arg-type]


class TestNodes:
    async def test_the_budget_spent_closes_the_run_for_every_node(self, store: LeaseStore) -> None:
        a = make(store, "budget", "a", min_nodes=2, max_nodes=2, max_rounds=1)
        b = make(store, "budget", "b", min_nodes=2, max_nodes=2, max_rounds=1)
        async with a, b:
            assert check_agreement(await all_next(a, b)).round == 0
            assert check_agreement(await all_next(a, b)).round == 1  # the one restart
            for rdzv in (a, b):
                with pytest.raises(RendezvousClosed, match=r"max_rounds=1.*round 2"):
                    await rdzv.next_rendezvous()
                assert await rdzv.is_closed()
                reason = await rdzv.closed_reason()
                assert reason is not None
                assert "max_rounds=1" in reason
            report = await read_run(store, "budget", prefix=PREFIX)
            assert report.closed
            assert report.round == 1

    async def test_a_quick_rejoin_cannot_bypass_it(self, store: LeaseStore) -> None:
        a = make(store, "rejoin", "a", min_nodes=2, max_nodes=2, max_rounds=0)
        b = make(store, "rejoin", "b", min_nodes=2, max_nodes=2, max_rounds=0)
        async with a:
            with pytest.raises(HeartbeatLost):
                async with b:
                    check_agreement(await all_next(a, b))
                    await kill(store, "rejoin", "b")  # b's process dies
                    await b.next_rendezvous()
            # b comes back at once, as a new process, with the budget unset.
            again = make(store, "rejoin", "b", min_nodes=2, max_nodes=2)
            async with again:
                with pytest.raises(RendezvousClosed, match="max_rounds=0"):
                    await again.next_rendezvous()
            with pytest.raises(RendezvousClosed, match="max_rounds=0"):
                await a.next_rendezvous()

    async def test_without_a_budget_rounds_go_on(self, store: LeaseStore) -> None:
        a = make(store, "free", "a", min_nodes=1, max_nodes=1)
        async with a:
            for round in range(4):
                assert (await a.next_rendezvous()).round == round
            assert await a.closed_reason() is None
