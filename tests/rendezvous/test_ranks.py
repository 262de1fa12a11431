"""The rank orders: natural, stable, name, and topology labels (pure)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anyrdzv._rendezvous._ranks import (
    RANK_ORDERS,
    check_rank_order,
    check_topology,
    label_key,
    natural_key,
    order,
)

#: Node names with digit runs, such as ``node7``, ``rack2-node066``.
names = st.from_regex(r"[a-c]{0,2}[0-9]{0,3}(-[a-c]?[0-9]{1,2})?", fullmatch=True).filter(bool)
name_sets = st.lists(names, min_size=1, max_size=12, unique=True)
labels = st.one_of(st.none(), st.from_regex(r"r[0-9]{1,2}(/s[0-9]{1,2})?", fullmatch=True))
orders = st.sampled_from(RANK_ORDERS)


class TestNatural:
    def test_digit_runs_compare_as_numbers(self) -> None:
        assert order(["node66", "node7", "node100"], "natural") == ("node7", "node66", "node100")
        assert sorted(["node66", "node7"]) == ["node66", "node7"]  # what torch does

    def test_examples(self) -> None:
        got = order(["n10-gpu2", "n2-gpu10", "n2-gpu2", "n1", "a", "node07", "node7"], "natural")
        assert got == ("a", "n1", "n2-gpu2", "n2-gpu10", "n10-gpu2", "node07", "node7")

    @given(name_sets)
    def test_the_key_is_a_total_order_of_distinct_names(self, chosen: list[str]) -> None:
        keys = {natural_key(name) for name in chosen}
        assert len(keys) == len(chosen)  # distinct names never tie

    def test_numbers_of_any_length(self) -> None:
        long = "node" + "9" * 5000  # more digits than int() takes from a str
        assert order([long, "node10", "node0" + "9" * 5000], "natural") == (
            "node10",
            "node0" + "9" * 5000,
            long,
        )

    @given(st.integers(0, 10**6), st.integers(0, 10**6))
    def test_numbers_order_as_numbers(self, a: int, b: int) -> None:
        assert (natural_key(f"node{a}") < natural_key(f"node{b}")) == (a < b)


class TestName:
    def test_is_torchs_sorted_order(self) -> None:
        assert order(["node7", "node66", "b"], "name") == ("b", "node66", "node7")


class TestEveryOrder:
    @given(name_sets, orders, st.data())
    def test_is_a_permutation_the_same_whatever_the_input_order(
        self, chosen: list[str], rank_order: str, data: st.DataObject
    ) -> None:
        tagged = {name: data.draw(labels) for name in chosen}
        previous = data.draw(st.permutations(chosen)) if data.draw(st.booleans()) else []
        first = order(chosen, check_rank_order("o", rank_order), labels=tagged, previous=previous)
        assert sorted(first) == sorted(chosen)
        shuffled = list(chosen)
        random.Random(len(chosen)).shuffle(shuffled)
        # Every node computes the same: the order never depends on how names arrive.
        again = order(
            shuffled, check_rank_order("o", rank_order), labels=dict(tagged), previous=previous
        )
        assert again == first

    @given(name_sets, st.sampled_from(["natural", "name"]), st.data())
    def test_a_label_gets_contiguous_ranks_labels_in_natural_order(
        self, chosen: list[str], rank_order: str, data: st.DataObject
    ) -> None:
        tagged = {name: data.draw(labels) for name in chosen}
        ranked = order(chosen, check_rank_order("o", rank_order), labels=tagged)
        seen = [tagged[name] for name in ranked]
        runs = [label for index, label in enumerate(seen) if index == 0 or seen[index - 1] != label]
        assert len(runs) == len(set(runs))  # each label is one run of ranks
        keys = [label_key(label) for label in runs]
        assert keys == sorted(keys)
        for rack in {label.split("/")[0] for label in seen if label}:
            at = [i for i, label in enumerate(seen) if label and label.split("/")[0] == rack]
            assert at == list(range(at[0], at[-1] + 1))  # and so is each rack

    def test_topology_example(self) -> None:
        tagged = {"n1": "rack2/sw1", "n2": "rack10/sw1", "n3": "rack2/sw1", "n4": "rack2/sw0"}
        tagged["n0"] = None  # type: ignore[assignment]
        assert order(tagged, "natural", labels=tagged) == ("n0", "n4", "n1", "n3", "n2")


class TestStable:
    def test_without_a_last_round_it_is_natural(self) -> None:
        assert order(["node66", "node7"], "stable") == ("node7", "node66")

    def test_a_spare_takes_the_lost_rank(self) -> None:
        previous = ("n1", "n2", "n3", "n4")
        assert order(["n1", "n2", "n4", "spare"], "stable", previous=previous) == (
            "n1",
            "n2",
            "spare",
            "n4",
        )
        # natural would move n4 and shift spare to the end
        assert order(["n1", "n2", "n4", "spare"], "natural") == ("n1", "n2", "n4", "spare")

    def test_survivors_beyond_the_new_size_fill_holes(self) -> None:
        previous = ("a", "b", "c", "d")
        # d's old rank 3 is beyond the new size 3: it fills b's hole.
        assert order(["a", "c", "d"], "stable", previous=previous) == ("a", "d", "c")

    @given(name_sets, st.data())
    def test_replacing_one_node_changes_exactly_one_rank(
        self, chosen: list[str], data: st.DataObject
    ) -> None:
        previous = tuple(data.draw(st.permutations(chosen)))
        lost = data.draw(st.sampled_from(chosen))
        spare = "spare-" + lost
        now = [name for name in chosen if name != lost] + [spare]
        ranked = order(data.draw(st.permutations(now)), "stable", previous=previous)
        changed = [rank for rank, name in enumerate(ranked) if previous[rank] != name]
        assert changed == [previous.index(lost)]
        assert ranked[previous.index(lost)] == spare

    @given(name_sets, st.data())
    def test_survivors_below_the_size_keep_their_ranks(
        self, chosen: list[str], data: st.DataObject
    ) -> None:
        previous = tuple(data.draw(st.permutations(chosen)))
        now = data.draw(st.lists(st.sampled_from(chosen), unique=True, min_size=1))
        newcomers = data.draw(st.lists(names.filter(lambda n: n not in chosen), unique=True))
        ranked = order(now + newcomers, "stable", previous=previous)
        for rank, name in enumerate(previous[: len(ranked)]):
            if name in now:
                assert ranked[rank] == name


class TestChecks:
    @pytest.mark.parametrize("value", ["natural", "stable", "name"])
    def test_orders(self, value: str) -> None:
        assert check_rank_order("rank_order", value) == value

    def test_bad_order(self) -> None:
        with pytest.raises(
            ValueError, match=r"rank_order must be one of natural, stable, name, got 'topology'"
        ):
            check_rank_order("rank_order", "topology")
        with pytest.raises(TypeError, match=r"rank_order must be a str, got int 3"):
            check_rank_order("rank_order", 3)

    def test_labels(self) -> None:
        assert check_topology("topology", None) is None
        assert check_topology("topology", "rack3/switch12") == "rack3/switch12"
        with pytest.raises(ValueError, match=r"topology must not be empty"):
            check_topology("topology", "")
        with pytest.raises(ValueError, match=r"topology must hold no control character"):
            check_topology("topology", "rack\n1")
        with pytest.raises(ValueError, match=r"at most 1024 characters, got 1025"):
            check_topology("topology", "r" * 1025)
        with pytest.raises(TypeError, match=r"topology must be a str or None, got bytes"):
            check_topology("topology", b"rack")
