"""Helpers for testing your own agents: stores that inject faults, and that count, and
the choice of the etcd member a store talks to.

Like :mod:`trio.testing`, this is public API, meant for the test suites of code built on
anyrdzv.
"""

from .._core._public import fixup_module_metadata as _fixup_module_metadata
from .._stores._wrapper import StoreWrapper as StoreWrapper
from ._counting import CountingStore as CountingStore
from ._etcd import use_member as use_member
from ._faulty import FaultyStore as FaultyStore

__all__ = ("CountingStore", "FaultyStore", "StoreWrapper", "use_member")

_fixup_module_metadata(__name__, globals())
del _fixup_module_metadata
