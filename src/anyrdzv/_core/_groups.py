"""The task group a context manager hosts, closed so that exceptions leave as themselves.

An anyio task group wraps every exception that leaves it in an exception group, even a
lone one, even the ``async with`` body's own: ``except RendezvousTimeout:`` around
``async with Rendezvous(...)`` would catch nothing. Every anyrdzv context manager that
hosts a task group (``Heartbeat``, ``Rendezvous``, ``PeriodicTimer``) closes it with
:func:`close_task_group` instead, which unwraps what the task group added:

- an exception raised in the block leaves unchanged: the same object, with its
  traceback, ``__cause__`` and ``__context__``;
- a failure of a background task that is the only error (a lost heartbeat, a watch that
  gave up) leaves as itself, the block having been cancelled;
- the cancellations of the task group's own scope are not errors;
- only errors that truly happen at once (the block raises while a background task
  fails, before either could cancel the other, or while it handles that cancellation)
  leave together, in an exception group.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, final

import anyio
import anyio.abc

if sys.version_info < (3, 11):  # pragma: no cover - anyio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

if TYPE_CHECKING:
    from types import TracebackType
    from typing import NoReturn


def _only_cancelled(exc: BaseException, cancelled: type[BaseException]) -> bool:
    if isinstance(exc, cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(cancelled)[1] is None
    return False


def _leaves(exc: BaseException) -> list[int]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [id(exc)]


def _as_raised(exc: BaseException, body: BaseException | None) -> BaseException:
    """``exc``, or the block's exception group if ``exc`` is a copy of it: trio's cancel
    scope splits its cancellations off a group, which copies the groups it holds."""
    if (
        body is not None
        and exc is not body
        and isinstance(exc, BaseExceptionGroup)
        and isinstance(body, BaseExceptionGroup)
        and exc.message == body.message
        and _leaves(exc) == _leaves(body)
    ):
        return body
    return exc


def _reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` as it is: the raise would set its ``__context__`` to the exception
    being handled (the block's cancellation), so the one it had is put back."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


async def close_task_group(
    task_group: anyio.abc.TaskGroup,
    exc_type: type[BaseException] | None,
    exc_value: BaseException | None,
    traceback: TracebackType | None,
    *,
    what: str,
) -> bool:
    """Cancel ``task_group`` and close it, as the ``__aexit__`` of the context manager
    that hosts it, with the block's exception; raise what went wrong as itself.

    :param task_group: the entered task group
    :param exc_type: the block's exception's type, as ``__aexit__`` got it
    :param exc_value: the block's exception, as ``__aexit__`` got it
    :param traceback: its traceback, as ``__aexit__`` got it
    :param what: the context manager, for the message of a group of errors
    :raises BaseException: the block's exception unchanged, or a background task's
        error if that is the only one; an exception group only of errors that happened
        at once, the block's first
    :return: whether the block's exception (a cancellation of the task group's own
        scope) is swallowed
    """
    task_group.cancel_scope.cancel()
    try:
        return bool(await task_group.__aexit__(exc_type, exc_value, traceback))
    except BaseExceptionGroup as group:
        if group is exc_value:
            raise
        error = _unwrap(group, exc_value, what)
        del group
    _reraise(error)


def _unwrap(group: BaseExceptionGroup, body: BaseException | None, what: str) -> BaseException:
    """What leaves: the one error in the task group's ``group``, or a group of those
    that happened at once."""
    cancelled = anyio.get_cancelled_exc_class()
    errors: list[BaseException] = []
    for raised in group.exceptions:
        exc = _as_raised(raised, body)
        # The same error may come twice (raised in the block and by a task).
        if _only_cancelled(exc, cancelled) or any(exc is seen for seen in errors):
            continue
        errors.append(exc)
    if not errors:  # pragma: no cover - anyio raises a lone cancellation plainly
        whole: BaseException = group
        return whole
    if len(errors) == 1:
        return errors[0]
    errors.sort(key=lambda exc: exc is not body)
    together: BaseException = BaseExceptionGroup(
        f"{what}: errors in the block and in its background tasks at once", errors
    )
    return together


@final
class HostedTaskGroup:
    """An anyio task group for a context manager to host, entered and exited with it:
    on exit it cancels its tasks and closes with :func:`close_task_group`.

    :param what: the context manager, for the message of a group of errors
    """

    def __init__(self, what: str) -> None:
        self._what = what
        self._task_group = anyio.create_task_group()

    async def __aenter__(self) -> anyio.abc.TaskGroup:
        return await self._task_group.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        return await close_task_group(
            self._task_group, exc_type, exc_value, traceback, what=self._what
        )
