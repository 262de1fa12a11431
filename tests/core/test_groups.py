"""close_task_group and HostedTaskGroup: what leaves a context manager's task group is
the error itself, not a group of one, on every backend."""

from __future__ import annotations

import sys
import traceback

import anyio
import pytest

from anyrdzv._core._groups import HostedTaskGroup

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup  # type: ignore[import-not-found, unused-ignore]

pytestmark = pytest.mark.anyio


async def fail_soon(error: BaseException) -> None:
    await anyio.sleep(0.01)
    raise error


class TestBodyError:
    async def test_leaves_as_itself(self) -> None:
        error = ValueError("the block's own")
        with pytest.raises(ValueError, match="the block's own") as caught:
            async with HostedTaskGroup("test") as tg:
                tg.start_soon(anyio.sleep_forever)
                raise error
        assert caught.value is error

    async def test_keeps_its_traceback_cause_and_context(self) -> None:
        cause = KeyError("the cause")

        def raise_it() -> None:
            try:
                raise OSError("the context")
            except OSError:
                raise ValueError("the block's own") from cause

        with pytest.raises(ValueError, match="the block's own") as caught:
            async with HostedTaskGroup("test") as tg:
                tg.start_soon(anyio.sleep_forever)
                raise_it()
        assert caught.value.__cause__ is cause
        assert isinstance(caught.value.__context__, OSError)
        frames = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
        assert "raise_it" in frames  # where it was raised, not only where it left

    async def test_a_group_of_the_block_leaves_unchanged(self) -> None:
        group = ExceptionGroup("the block's own group", [KeyError("a"), KeyError("b")])
        with pytest.raises(ExceptionGroup) as caught:
            async with HostedTaskGroup("test") as tg:
                tg.start_soon(anyio.sleep_forever)
                raise group
        assert caught.value is group

    async def test_keyboard_interrupt_leaves_as_itself(self) -> None:
        with pytest.raises(KeyboardInterrupt):
            async with HostedTaskGroup("test") as tg:
                tg.start_soon(anyio.sleep_forever)
                raise KeyboardInterrupt


class TestBackgroundError:
    async def test_the_only_error_leaves_as_itself_and_cancels_the_block(self) -> None:
        error = KeyError("a task's")
        cancelled = False
        with pytest.raises(KeyError) as caught:
            async with HostedTaskGroup("test") as tg:
                tg.start_soon(fail_soon, error)
                try:
                    await anyio.sleep_forever()
                except anyio.get_cancelled_exc_class():
                    cancelled = True
                    raise
        assert caught.value is error
        assert cancelled
        # The block's cancellation is not chained to it as its context.
        assert caught.value.__context__ is None

    @pytest.mark.parametrize("anyio_backend", ["trio"])
    async def test_keyboard_interrupt_of_a_task_leaves_as_itself(self) -> None:
        """On trio, Ctrl-C may land in whatever task runs (on asyncio a task's
        KeyboardInterrupt leaves the event loop itself)."""
        with pytest.raises(KeyboardInterrupt):
            async with HostedTaskGroup("test") as tg:
                tg.start_soon(fail_soon, KeyboardInterrupt())
                await anyio.sleep_forever()

    async def test_one_error_raised_twice_is_one_error(self) -> None:
        error = KeyError("the one loss")
        with pytest.raises(KeyError) as caught:
            async with HostedTaskGroup("test") as tg:
                tg.start_soon(fail_soon, error)
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(0.05)
                raise error
        assert caught.value is error


class TestBoth:
    async def test_errors_at_once_leave_together_the_blocks_first(self) -> None:
        mine, theirs = ValueError("the block's own"), KeyError("a task's")
        with pytest.raises(ExceptionGroup) as caught:
            async with HostedTaskGroup("Thing 'x'") as tg:
                tg.start_soon(fail_soon, theirs)
                try:
                    await anyio.sleep_forever()
                finally:
                    raise mine  # while it handles the cancellation
        assert list(caught.value.exceptions) == [mine, theirs]
        assert str(caught.value).startswith(
            "Thing 'x': errors in the block and in its background tasks at once"
        )

    async def test_a_keyboard_interrupt_at_once_makes_a_base_group(self) -> None:
        theirs = KeyError("a task's")
        with pytest.raises(BaseExceptionGroup) as caught:
            async with HostedTaskGroup("test") as tg:
                tg.start_soon(fail_soon, theirs)
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(0.05)
                raise KeyboardInterrupt
        assert [type(e) for e in caught.value.exceptions] == [KeyboardInterrupt, KeyError]


class TestCancellation:
    async def test_an_outer_cancellation_passes_through(self) -> None:
        with anyio.move_on_after(0.05) as scope:
            async with HostedTaskGroup("test") as tg:
                tg.start_soon(anyio.sleep_forever)
                await anyio.sleep_forever()
        assert scope.cancelled_caught

    async def test_its_own_cancellation_is_no_error(self) -> None:
        async with HostedTaskGroup("test") as tg:
            tg.start_soon(anyio.sleep_forever)
            tg.cancel_scope.cancel()
            await anyio.sleep_forever()

    async def test_tasks_are_cancelled_on_exit(self) -> None:
        ended = anyio.Event()

        async def task() -> None:
            try:
                await anyio.sleep_forever()
            finally:
                ended.set()

        async with HostedTaskGroup("test") as tg:
            tg.start_soon(task)
            await anyio.wait_all_tasks_blocked()
        assert ended.is_set()
