"""What the examples share: pick a backend by name, and stop cleanly on Ctrl-C."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

BACKENDS = ("asyncio", "uvloop", "trio")


def interruptible(call: Callable[[], object]) -> int:
    """Call ``call()``; return 0, or 130 after Ctrl-C, with one line and no traceback."""
    try:
        call()
    except KeyboardInterrupt:
        print("interrupted: stopped cleanly", file=sys.stderr)
        return 130
    return 0


def run(func: Callable[..., Awaitable[Any]], *args: Any, backend: str = "asyncio") -> int:
    """Run ``func(*args)`` on ``backend``; return 0, or 130 after Ctrl-C."""
    options = {"use_uvloop": True} if backend == "uvloop" else {}
    name = "trio" if backend == "trio" else "asyncio"
    return interruptible(lambda: anyio.run(func, *args, backend=name, backend_options=options))
