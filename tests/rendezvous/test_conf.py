"""The keys of a ``--rdzv-conf`` that a rendezvous reads: pure parsing, with torch's
defaults and wording, and ``Rendezvous.from_conf`` on top of it."""

from __future__ import annotations

import re

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from anyrdzv import MemoryStore, Rendezvous, RendezvousInfo
from anyrdzv._rendezvous._conf import DEFAULTS, parse_conf


class TestParseConf:
    def test_defaults_are_torchs(self) -> None:
        assert parse_conf("") == {
            "join_timeout": 600.0,
            "last_call_timeout": 30.0,
            "close_timeout": 30.0,
            "keep_alive_interval": 5.0,
            "keep_alive_max_attempt": 3,
            "max_rounds": None,
            "health_check": None,
            "health_check_timeout": 60.0,
            "rank_order": "natural",
            "topology": None,
        }
        assert parse_conf({}) == DEFAULTS

    def test_values_are_read_and_other_keys_ignored(self) -> None:
        values = parse_conf("join_timeout=60, keep_alive_max_attempt=2,unknown=x")
        assert values == {**DEFAULTS, "join_timeout": 60.0, "keep_alive_max_attempt": 2}
        assert isinstance(values["keep_alive_max_attempt"], int)
        assert parse_conf({"close_timeout": "7", "other": "y"})["close_timeout"] == 7.0

    @pytest.mark.parametrize(
        ("conf", "message"),
        [
            (
                "join_timeout=soon",
                "'join_timeout' does not represent a valid numeric value: 'soon'",
            ),
            (
                "keep_alive_max_attempt=2.5",
                "'keep_alive_max_attempt' does not represent a valid integer value: '2.5'",
            ),
            ("last_call_timeout=-1", "'last_call_timeout' must be positive, got '-1'"),
            ("close_timeout=nan", "'close_timeout' must be finite, got 'nan'"),
            ("join_timeout=1e9999", "'join_timeout' must be finite, got '1e9999'"),
            ("join_timeout=inf", "'join_timeout' must be finite, got 'inf'"),
            ("last_call_timeout=-inf", "'last_call_timeout' must be finite, got '-inf'"),
            ("keep_alive_max_attempt=0", "'keep_alive_max_attempt' must be positive, got '0'"),
        ],
    )
    def test_a_bad_value_is_named_in_torchs_words(self, conf: str, message: str) -> None:
        whole = f"The rendezvous configuration option {message}"
        with pytest.raises(ValueError, match=f"^{re.escape(whole)}$"):
            parse_conf(conf)

    def test_a_bad_string_is_torchs_error(self) -> None:
        with pytest.raises(ValueError, match="must be in format <key1>=<value1>"):
            parse_conf("=5")

    def test_a_long_bad_value_is_cut(self) -> None:
        with pytest.raises(ValueError, match="characters") as info:
            parse_conf("join_timeout=" + "x" * 100_000)
        assert len(str(info.value)) < 400

    def test_a_value_of_a_mapping_must_be_a_str(self) -> None:
        with pytest.raises(TypeError, match="the value of 'join_timeout' must be a str, got int"):
            parse_conf({"join_timeout": 5})  # type: ignore[dict-item]

    @given(st.text(max_size=80))
    def test_any_string_parses_or_raises_value_error(self, conf: str) -> None:
        try:
            values = parse_conf(conf)
        except ValueError:
            return
        assert set(values) == set(DEFAULTS)
        seconds = (values["join_timeout"], values["last_call_timeout"], values["close_timeout"])
        assert min(*seconds, values["keep_alive_interval"], values["keep_alive_max_attempt"]) > 0


class TestFromConf:
    def test_from_conf(self) -> None:
        store = MemoryStore()
        rdzv = Rendezvous.from_conf(store, "r", "", min_nodes=1, max_nodes=2)
        assert (rdzv.join_timeout, rdzv.last_call_timeout, rdzv.close_timeout) == (600, 30, 30)
        assert (rdzv.keep_alive_interval, rdzv.keep_alive_max_attempt) == (5, 3)
        rdzv = Rendezvous.from_conf(
            store,
            "r",
            "join_timeout=60, last_call_timeout=0.5,keep_alive_max_attempt=2,unknown=x",
            min_nodes=1,
            max_nodes=2,
            node="n",
        )
        assert (rdzv.join_timeout, rdzv.last_call_timeout, rdzv.node) == (60, 0.5, "n")
        assert rdzv.keep_alive_max_attempt == 2
        rdzv = Rendezvous.from_conf(store, "r", {"close_timeout": "7"}, min_nodes=1, max_nodes=2)
        assert rdzv.close_timeout == 7

    @pytest.mark.anyio
    async def test_from_conf_takes_the_payload_and_the_prefix(self) -> None:
        """As the constructor does: the payload reaches the other participants, and the
        run's keys live under the prefix."""
        store = MemoryStore()
        conf = "last_call_timeout=0.1,join_timeout=10"
        nodes = [
            Rendezvous.from_conf(
                store,
                "r",
                conf,
                min_nodes=2,
                max_nodes=2,
                node=name,
                payload=name.encode() * 2,
                prefix="/elsewhere",
            )
            for name in ("a", "b")
        ]
        infos: list[RendezvousInfo] = []

        async def join(rdzv: Rendezvous) -> None:
            infos.append(await rdzv.next_rendezvous())

        async with nodes[0] as a, nodes[1] as b:
            keys, _ = await store.get_prefix_kv("/elsewhere/r/")
            assert keys
            assert (await store.get_prefix_kv("/anyrdzv/"))[0] == []
            async with anyio.create_task_group() as tg:
                tg.start_soon(join, a)
                tg.start_soon(join, b)
        assert [info.payloads for info in infos] == [{"a": b"aa", "b": b"bb"}] * 2

    @pytest.mark.parametrize(
        ("conf", "key"),
        [
            ("join_timeout=soon", "join_timeout"),
            ("last_call_timeout=-1", "last_call_timeout"),
            ("close_timeout=inf", "close_timeout"),
            ("keep_alive_interval=0", "keep_alive_interval"),
            ("keep_alive_max_attempt=2.5", "keep_alive_max_attempt"),
        ],
    )
    def test_from_conf_names_the_bad_key(self, conf: str, key: str) -> None:
        with pytest.raises(ValueError, match=f"'{key}'"):
            Rendezvous.from_conf(MemoryStore(), "r", conf, min_nodes=1, max_nodes=2)

    def test_from_conf_min_max_still_checked(self) -> None:
        with pytest.raises(ValueError, match="min_nodes"):
            Rendezvous.from_conf(MemoryStore(), "r", "", min_nodes=3, max_nodes=2)
