"""Every public name of ``anyrdzv`` and ``anyrdzv.testing`` is importable, documented and
shows its public home."""

from __future__ import annotations

import importlib

import pytest

import anyrdzv
import anyrdzv.testing

PUBLIC = [("anyrdzv", name) for name in anyrdzv.__all__] + [
    ("anyrdzv.testing", name) for name in anyrdzv.testing.__all__
]


@pytest.mark.parametrize("module", [anyrdzv, anyrdzv.testing])
def test_all_is_a_sorted_tuple(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert isinstance(names, tuple)
    assert list(names) == sorted(names)


@pytest.mark.parametrize(("module_name", "name"), PUBLIC)
def test_exported_name_is_importable_documented_and_public(module_name: str, name: str) -> None:
    module = importlib.import_module(module_name)
    obj = getattr(module, name)
    assert obj.__doc__, f"{module_name}.{name} has no docstring"
    if hasattr(obj, "__module__"):
        assert obj.__module__ == module_name
