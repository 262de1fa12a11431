from __future__ import annotations

import sys
from typing import Any

import pytest

_BACKENDS: list[Any] = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(
        ("asyncio", {"use_uvloop": True}),
        id="asyncio+uvloop",
        marks=pytest.mark.skipif(sys.platform == "win32", reason="uvloop does not run on Windows"),
    ),
    pytest.param(("trio", {}), id="trio"),
]


@pytest.fixture(params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Run every ``@pytest.mark.anyio`` test on asyncio, asyncio+uvloop and trio."""
    backend: tuple[str, dict[str, Any]] = request.param
    return backend
