from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anyrdzv import parse_rendezvous_config

FORMAT_ERROR = (
    "The rendezvous configuration string must be in format <key1>=<value1>,...,<keyN>=<valueN>."
)


def option_error(key: str) -> str:
    return f"The rendezvous configuration option '{key}' must have a value specified."


class TestParseRendezvousConfig:
    @pytest.mark.parametrize("text", ["", "   ", "\t\n"])
    def test_blank_gives_empty_dict(self, text: str) -> None:
        assert parse_rendezvous_config(text) == {}

    def test_items_are_split_and_stripped(self) -> None:
        assert parse_rendezvous_config(" a = 1 , b=2,c =x y ") == {"a": "1", "b": "2", "c": "x y"}

    def test_split_at_first_equals_sign(self) -> None:
        assert parse_rendezvous_config("a=b=c") == {"a": "b=c"}

    def test_later_duplicate_wins(self) -> None:
        assert parse_rendezvous_config("a=1,b=2,a=3") == {"a": "3", "b": "2"}

    @pytest.mark.parametrize("text", ["a=1,", "a=1,,b=2", "=v", "a=1, ,b=2", ",a=1", " = "])
    def test_empty_key_is_a_format_error(self, text: str) -> None:
        with pytest.raises(ValueError, match="^" + re.escape(FORMAT_ERROR) + "$"):
            parse_rendezvous_config(text)

    @pytest.mark.parametrize(
        ("text", "key"), [("a", "a"), ("a=", "a"), ("a= ", "a"), ("x=1,b", "b")]
    )
    def test_missing_value_names_the_key(self, text: str, key: str) -> None:
        with pytest.raises(ValueError, match=f"^{re.escape(option_error(key))}$"):
            parse_rendezvous_config(text)

    @pytest.mark.parametrize("value", [None, 1, b"a=1", ["a=1"]])
    def test_non_str_is_type_error_naming_parameter(self, value: object) -> None:
        with pytest.raises(TypeError, match="config_str must be a str"):
            parse_rendezvous_config(value)  # type: ignore[arg-type]

    def test_one_megabyte_parses(self) -> None:
        text = ",".join(f"k{i}=v{i}" for i in range(100_000))
        assert len(text) > 1_000_000
        assert len(parse_rendezvous_config(text)) == 100_000


_keys = (
    st.text(min_size=1).map(str.strip).filter(lambda k: k != "" and "," not in k and "=" not in k)
)
_values = st.text(min_size=1).map(str.strip).filter(lambda v: v != "" and "," not in v)


class TestConfigProperties:
    @given(st.text())
    def test_any_str_parses_or_raises_value_error(self, text: str) -> None:
        try:
            result = parse_rendezvous_config(text)
        except ValueError:
            return
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in result.items())

    @given(st.dictionaries(_keys, _values, max_size=8))
    def test_formatted_dict_parses_back(self, config: dict[str, str]) -> None:
        text = ",".join(f"{k}={v}" for k, v in config.items())
        assert parse_rendezvous_config(text) == config
