"""HealthGate: a node's health check, run before it joins a round.

The check is the user's zero-argument async callable. It passes when it returns (its
value is ignored), and fails when it raises or does not finish within its timeout. A
node whose check fails does not join: it waits outside the round, retrying with
:func:`~anyrdzv._core._delay.backoff`, and logs a WARNING with the reason.

The outcome lives in the store, in the small key ``<prefix>/<run_id>/health/<node>``
under the node's own lease, written only when it changes (the first outcome, then each
change): ``{"passing": bool, "reason": "..."}``. Only the coordinator's watch (which
skips it) and :func:`~anyrdzv.read_run` see it; the nodes watch only the run's control
keys, so it costs them nothing.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
from typing import TYPE_CHECKING, Any, cast, final

import anyio

from .._checks import echo
from .._core._delay import backoff, delay
from .._exceptions import StoreError
from ._events import emit
from ._rules import MalformedValue

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .._membership._heartbeat import MemberLease
    from .._stores._protocol import LeaseStore

logger = logging.getLogger(__name__)

#: The subtree of a run's health keys: ``health/<node>``.
HEALTH = "health/"
#: The first and the longest pause between two checks of a failing node, in seconds.
RETRY_FIRST = 0.5
RETRY_MOST = 10.0
#: The longest reason kept in the store.
MAX_REASON = 500


def load_health_check(text: str, key: str = "health_check") -> Callable[[], Awaitable[object]]:
    """Import the health check a conf names: ``package.module:function``.

    :param text: the conf value
    :param key: the conf key, for the message
    :raises ValueError: naming the key, if it is not of that form, does not import, or
        does not name a callable
    """
    module_name, colon, attribute = text.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(
            f"the rendezvous configuration option {key!r} must be package.module:function, "
            f"got {echo(text)}"
        )
    try:
        found: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except Exception as exc:  # noqa: BLE001 - any failure to import is the conf's error
        raise ValueError(
            f"the rendezvous configuration option {key!r} ({echo(text)}) does not import: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if not callable(found):
        raise ValueError(  # noqa: TRY004 - a bad conf value: a ValueError naming the key
            f"the rendezvous configuration option {key!r} ({echo(text)}) is not callable: "
            f"it is {echo(found, 80)}"
        )
    # Only its name says it is async: what it returns is checked at each call.
    return cast("Callable[[], Awaitable[object]]", found)


def encode_health(passing: bool, reason: str | None) -> bytes:
    """The JSON of a node's health key."""
    obj: dict[str, Any] = {"passing": passing}
    if reason is not None:
        obj["reason"] = reason
    return json.dumps(obj, separators=(",", ":")).encode()


def decode_health(data: bytes) -> tuple[bool, str | None]:
    """Read a node's health key: whether its check passes, and why it fails.

    :raises ValueError: if it is not what :func:`encode_health` writes
    """
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not a JSON document") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("passing"), bool):
        raise MalformedValue("'passing' must be a boolean")
    reason = obj.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise MalformedValue("'reason' must be a string")
    return obj["passing"], reason


@final
class HealthGate:
    """The health check of node ``node`` of run ``run_id``.

    :param store: the store
    :param check: the zero-argument async callable
    :param timeout: how long one check may take, in seconds
    :param key: the node's health key
    :param lease: the node's heartbeat, whose lease the key lives under
    :param run_id: the run
    :param node: the node
    """

    def __init__(
        self,
        store: LeaseStore,
        check: Callable[[], Awaitable[object]],
        *,
        timeout: float,
        key: str,
        lease: MemberLease,
        run_id: str,
        node: str,
    ) -> None:
        self._store = store
        self._check = check
        self._timeout = timeout
        self._key = key
        self._lease = lease
        self._run_id = run_id
        self._node = node
        #: what the store holds, as this node last wrote it
        self._written: tuple[bool, str | None] | None = None
        #: why the last check failed, while it fails
        self.failing: str | None = None

    def forget(self) -> None:
        """The node left its run, and its health key with its lease: write afresh."""
        self._written = None

    async def once(self) -> str | None:
        """Run the check once; ``None`` if it passes, else why it fails."""
        try:
            with anyio.move_on_after(self._timeout) as scope:
                result = self._check()
                if not inspect.isawaitable(result):
                    return f"health_check returned {echo(result, 80)}, not an awaitable"
                await result
        except Exception as exc:  # noqa: BLE001 - a check that raises is a failed check
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if scope.cancelled_caught:
            return f"it did not finish within health_check_timeout={self._timeout:g} s"
        return None

    async def pass_(self, round: int | None) -> None:
        """Run the check until it passes, pausing with backoff between failures.

        :param round: the round the node is about to ask for, for the log, if known
        """
        retry = backoff(RETRY_FIRST, RETRY_MOST)
        while True:
            reason = await self.once()
            await self._write(reason)
            self.failing = reason
            if reason is None:
                emit(
                    logger,
                    "health_passed",
                    "node %r of run %r: its health check passed",
                    self._node,
                    self._run_id,
                    run_id=self._run_id,
                    node=self._node,
                    round=round,
                )
                return
            pause = next(retry)
            emit(
                logger,
                "health_failed",
                "node %r of run %r: its health check failed (%s); it does not join, and "
                "checks again in %.2f s",
                self._node,
                self._run_id,
                reason,
                pause,
                run_id=self._run_id,
                node=self._node,
                round=round,
                reason=reason,
            )
            await delay(pause)

    async def _write(self, reason: str | None) -> None:
        """Put the outcome in the node's health key if it changed."""
        if reason is not None:
            reason = reason[:MAX_REASON]
        outcome = (reason is None, reason)
        lease = self._lease.lease
        if outcome == self._written or lease is None:
            return
        try:
            await self._store.put(self._key, encode_health(*outcome), lease=lease)
        except StoreError as exc:
            logger.warning(
                "node %r of run %r: could not write its health state: %s",
                self._node,
                self._run_id,
                exc,
            )
            return
        self._written = outcome
