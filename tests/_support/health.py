"""Health checks that a conf names as ``tests._support.health:<name>``."""

from __future__ import annotations

NOT_CALLABLE = 3


async def passing() -> None:
    """A check that passes."""


async def failing() -> None:
    """A check that fails, with a reason."""
    raise RuntimeError("GPU 3 does not answer")


#: Whether :func:`toggled` passes: a test sets it (monkeypatch).
toggled_passes = False


async def toggled() -> None:
    """A check that fails, with a reason, until :data:`toggled_passes` is set."""
    if not toggled_passes:
        raise RuntimeError("GPU 3 does not answer")
