"""Rank order and topology labels in a Rendezvous: every node of a round reads the same
ranks, from the one record; the run's creator sets the order; bad values are refused
before any I/O."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import pytest

from anyrdzv import LeaseStore, MemoryStore, Rendezvous, RendezvousError
from tests._support.rendezvous import PREFIX, all_next, make

if TYPE_CHECKING:
    from anyrdzv import RendezvousInfo

pytestmark = pytest.mark.anyio


def agreed(infos: dict[str, RendezvousInfo]) -> tuple[str, ...]:
    """The participants of the one round every node of ``infos`` holds, in rank order,
    checked against each node's rank."""
    first = next(iter(infos.values()))
    for node, info in infos.items():
        assert (info.round, info.participants) == (first.round, first.participants)
        assert info.participants[info.rank] == node
    return first.participants


async def one_round(
    store: LeaseStore, run_id: str, nodes: dict[str, dict[str, Any]]
) -> tuple[str, ...]:
    """Nodes ``nodes`` (name: extra arguments) meet in one round of them all."""
    n = len(nodes)
    async with AsyncExitStack() as stack:
        entered = [
            await stack.enter_async_context(
                make(store, run_id, name, min_nodes=n, max_nodes=n, **options)
            )
            for name, options in nodes.items()
        ]
        return agreed(await all_next(*entered))


class TestRankOrder:
    async def test_natural_is_the_default(self, store: LeaseStore, run_id: str) -> None:
        names: dict[str, dict[str, Any]] = {"node66": {}, "node7": {}, "node100": {}, "gpu2": {}}
        assert await one_round(store, run_id, names) == ("gpu2", "node7", "node66", "node100")

    async def test_name_is_torchs_sorted_order(self, store: LeaseStore, run_id: str) -> None:
        names: dict[str, dict[str, Any]] = {n: {"rank_order": "name"} for n in ("node66", "node7")}
        assert await one_round(store, run_id, names) == ("node66", "node7")

    async def test_topology_labels_make_contiguous_ranks(
        self, store: LeaseStore, run_id: str
    ) -> None:
        nodes: dict[str, dict[str, Any]] = {
            "node1": {"topology": "rack10/sw1"},
            "node2": {"topology": "rack2/sw1"},
            "node3": {"topology": "rack10/sw1"},
            "node4": {"topology": "rack2/sw0"},
            "node5": {},
        }
        assert await one_round(store, run_id, nodes) == (
            "node5",
            "node4",
            "node2",
            "node1",
            "node3",
        )
        kvs, _ = await store.get_prefix_kv(f"{PREFIX}/{run_id}/")
        assert kvs == []  # the run ended with its last node

    async def test_a_node_with_another_order_is_refused(
        self, store: LeaseStore, run_id: str
    ) -> None:
        async with make(store, run_id, "a", rank_order="stable") as a:
            async with make(store, run_id, "b") as b:
                with pytest.raises(
                    RendezvousError,
                    match="rank_order='natural', but the run has rank_order='stable'",
                ):
                    await b.next_rendezvous()
            async with make(store, run_id, "b", rank_order="stable") as b:
                assert agreed(await all_next(a, b)) == ("a", "b")

    async def test_from_conf_reads_the_keys(self, store: LeaseStore, run_id: str) -> None:
        nodes = [
            Rendezvous.from_conf(
                store,
                run_id,
                f"rank_order=name,topology=rack{rack},last_call_timeout=0.3,keep_alive_interval=0.2",
                min_nodes=2,
                max_nodes=2,
                node=name,
            )
            for name, rack in (("node7", 1), ("node66", 0))
        ]
        assert (nodes[0].rank_order, nodes[0].topology) == ("name", "rack1")
        async with nodes[0] as a, nodes[1] as b:
            assert agreed(await all_next(a, b)) == ("node66", "node7")


class TestBadValues:
    @pytest.mark.parametrize(
        ("options", "error", "message"),
        [
            (
                {"rank_order": "topology"},
                ValueError,
                r"rank_order must be one of natural, stable, name, got 'topology'",
            ),
            ({"rank_order": None}, TypeError, r"rank_order must be a str, got NoneType None"),
            ({"topology": ""}, ValueError, r"topology must not be empty"),
            ({"topology": 3}, TypeError, r"topology must be a str or None, got int 3"),
            ({"topology": "a\tb"}, ValueError, r"topology must hold no control character"),
        ],
    )
    async def test_are_refused_before_any_io(
        self, options: dict[str, Any], error: type[Exception], message: str
    ) -> None:
        store = MemoryStore()
        with pytest.raises(error, match=message):
            Rendezvous(store, "run", min_nodes=1, max_nodes=1, **options)
        kvs, _ = await store.get_prefix_kv("")
        assert kvs == []

    @pytest.mark.parametrize(
        ("conf", "message"),
        [
            (
                "rank_order=sorted",
                r"'rank_order' must be one of natural, stable, name, got 'sorted'",
            ),
            ({"topology": "a\nb"}, r"'topology' must hold no control character"),
        ],
    )
    def test_conf_values_name_the_key(self, conf: Any, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            Rendezvous.from_conf(MemoryStore(), "run", conf, min_nodes=1, max_nodes=1)

    def test_an_empty_conf_topology_is_none(self) -> None:
        conf = {"topology": ""}
        rdzv = Rendezvous.from_conf(MemoryStore(), "run", conf, min_nodes=1, max_nodes=1)
        assert rdzv.topology is None
        assert rdzv.rank_order == "natural"
