"""An event loop in a daemon thread, for torch's synchronous handler and store.

torch calls the handler and the store from its own threads, synchronously. Each call
runs as a task in this loop, through anyio's blocking portal, and waits for it so that
a signal interrupts the wait at once: the task is started with ``start_task_soon`` and
cancelled on any ``BaseException`` (a plain ``portal.call`` would leave it running).

The thread is a daemon: torchrun skips ``shutdown()`` when a signal ends the agent, and
a non-daemon loop thread would then keep the process from exiting. This module imports
no torch.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from .._checks import echo

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from concurrent.futures import Future

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: The event loops a :class:`LoopThread` can run.
BACKENDS = ("asyncio", "uvloop", "trio")


class LoopGone(RuntimeError):
    """The loop thread is not usable here: it was stopped, or this process is a fork of
    the one that started it."""


class LoopThread:
    """One anyio event loop in a daemon thread, and a way to run coroutines in it.

    :param backend: ``"asyncio"``, ``"uvloop"`` or ``"trio"``
    :param name: the thread's name
    :raises ValueError: if the backend is not one of :data:`BACKENDS`
    """

    def __init__(self, backend: str = "asyncio", *, name: str = "anyrdzv-loop") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {echo(backend)}")
        self.backend = backend
        self._pid = os.getpid()
        self._portal: BlockingPortal | None = None
        self._failure: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._portal is None:
            raise LoopGone(f"the {backend} event loop did not start: {self._failure!r}")

    def _run(self) -> None:
        async def main() -> None:
            async with BlockingPortal() as portal:
                self._portal = portal
                self._ready.set()
                await portal.sleep_until_stopped()

        name, options = (
            ("asyncio", {"use_uvloop": True}) if self.backend == "uvloop" else (self.backend, {})
        )
        try:
            anyio.run(main, backend=name, backend_options=options)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller of __init__
            self._failure = exc
            logger.warning("the %s event loop thread ended: %r", self.backend, exc)
        finally:
            self._portal = None
            self._ready.set()

    def check(self) -> BlockingPortal:
        """Return the portal, if this thread can be used from here.

        :raises LoopGone: in a process forked from the one that started the thread, or
            once the loop has stopped
        """
        if os.getpid() != self._pid:
            raise LoopGone(
                f"this was created in process {self._pid} and inherited through fork() by "
                f"process {os.getpid()}, where its event loop thread does not exist: "
                "create a new one in this process"
            )
        portal = self._portal
        if portal is None:
            raise LoopGone("its event loop thread has stopped")
        return portal

    def run(self, func: Callable[..., Awaitable[_T]], *args: object) -> _T:
        """Run ``func(*args)`` in the loop, and wait for its result in this thread.

        The wait can be interrupted by a signal (or any exception raised in this thread):
        the task is then cancelled at once and the exception goes on.

        :raises LoopGone: if the loop cannot be used from here
        """
        portal = self.check()
        try:
            future = portal.start_task_soon(func, *args)
        except RuntimeError as exc:  # the portal stopped meanwhile
            raise LoopGone(f"its event loop thread has stopped: {exc}") from None
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def start(
        self, func: Callable[..., Awaitable[object]], *args: object
    ) -> tuple[Future[object], Any]:
        """Start ``func(*args, task_status=...)`` as a long-lived task in the loop, and
        wait until it reports itself started; return its future and what it reported.

        :raises LoopGone: if the loop cannot be used from here
        """
        portal = self.check()
        try:
            return portal.start_task(func, *args)
        except RuntimeError as exc:
            if "portal is not running" in str(exc):
                raise LoopGone(f"its event loop thread has stopped: {exc}") from None
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop, cancelling what still runs in it, and wait up to ``timeout``
        seconds for the thread to end. Does nothing in a forked child, or if stopped."""
        if os.getpid() != self._pid:
            return
        portal = self._portal
        if portal is not None:
            try:
                portal.call(portal.stop, True)
            except RuntimeError:
                pass  # it stopped meanwhile
        self._thread.join(timeout)
