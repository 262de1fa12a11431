"""What a command's failure is: a UsageError from bad input, a message of one bounded
line for a store failure, bad data or a network fault, and None for a bug. (Groups of
them, from a task group, are in test_store_command.py.)"""

from __future__ import annotations

import pytest

import anyrdzv
from anyrdzv._cli._errors import UsageError, describe_failure, is_interrupt, one_line, usage_errors


class TestOneLine:
    def test_control_characters_are_escaped(self) -> None:
        assert one_line("a\nb\tc\x00") == "a\\nb\\tc\\x00"

    def test_a_long_message_is_cut_with_its_length(self) -> None:
        line = one_line("x" * 100_000)
        assert len(line) < 1_100
        assert "100000 characters" in line


class TestUsageErrors:
    def test_a_value_error_is_a_usage_error_with_its_message(self) -> None:
        with pytest.raises(UsageError, match="^bad port$"), usage_errors():
            raise ValueError("bad port")

    def test_other_types_only_when_named(self) -> None:
        with pytest.raises(UsageError, match="^not a str$"), usage_errors(ValueError, TypeError):
            raise TypeError("not a str")
        with pytest.raises(TypeError), usage_errors():
            raise TypeError("a bug")


class TestDescribeFailure:
    def test_a_store_error_is_its_message_or_its_type(self) -> None:
        assert describe_failure(anyrdzv.StoreConnectionError("etcd went away")) == "etcd went away"
        assert describe_failure(anyrdzv.StoreError()) == "StoreError"

    def test_bad_data_and_network_faults_name_their_type(self) -> None:
        assert describe_failure(ValueError("bad")) == "ValueError: bad"
        assert describe_failure(ConnectionResetError("reset")) == "ConnectionResetError: reset"

    def test_a_bug_is_not_described(self) -> None:
        assert describe_failure(ZeroDivisionError("a bug")) is None
        assert describe_failure(KeyboardInterrupt()) is None

    def test_ctrl_c_is_an_interrupt(self) -> None:
        assert is_interrupt(KeyboardInterrupt())
        assert not is_interrupt(ValueError())
