from __future__ import annotations

import importlib

import pytest

import anyrdzv


def test_all_is_a_sorted_tuple() -> None:
    assert isinstance(anyrdzv.__all__, tuple)
    assert list(anyrdzv.__all__) == sorted(anyrdzv.__all__)


@pytest.mark.parametrize("name", anyrdzv.__all__)
def test_exported_name_is_importable_documented_and_public(name: str) -> None:
    module = importlib.import_module("anyrdzv")
    obj = getattr(module, name)
    assert obj.__doc__, f"anyrdzv.{name} has no docstring"
    if hasattr(obj, "__module__"):
        assert obj.__module__ == "anyrdzv"
