from __future__ import annotations

import inspect
import sys
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

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


@pytest.fixture
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves a task running after it has returned.

    An autouse fixture below requests it for every async anyio test.
    """
    before = {task.id for task in anyio.get_running_tasks()}
    yield
    await anyio.lowlevel.checkpoint()
    me = anyio.get_current_task().id  # the plugin may tear fixtures down in a new task
    leaked = [
        task.name
        for task in anyio.get_running_tasks()
        if task.id not in before
        and task.id != me
        and not getattr(task.coro, "__qualname__", "").startswith("TestRunner.")  # anyio's own
    ]
    assert not leaked, f"tasks outlived the test: {leaked}"


@pytest.fixture(autouse=True)
def _every_async_test_leaks_no_task(request: pytest.FixtureRequest) -> None:
    function = getattr(request.node, "function", None)
    if request.node.get_closest_marker("anyio") and inspect.iscoroutinefunction(function):
        request.getfixturevalue("no_leaked_tasks")
