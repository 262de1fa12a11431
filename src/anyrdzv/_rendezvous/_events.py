"""The rendezvous's moments as log records with one stable ``extra`` schema.

Every record this module emits carries these attributes (``logging``'s ``extra``), so
that a handler or a structured-log formatter can pick them without parsing messages:

- ``anyrdzv_event``: the moment (see :data:`EVENTS`)
- ``run_id``: the run
- ``node``: the node that logs it
- ``round``: the round, or ``None``
- ``rank``: the node's rank in it, or ``None``
- ``world_size``: the round's size, or ``None``
- ``reason``: why (a failure, a close), or ``None``

Pure: it only builds the ``extra`` mapping and hands it to a logger.
"""

from __future__ import annotations

import logging
from typing import Any, Final, Literal

#: The moments, the level each is logged at, and what it means.
Event = Literal[
    "join_attempt",
    "joined",
    "join_failed",
    "health_failed",
    "health_passed",
    "round_complete",
    "budget_spent",
    "closed",
]

#: Each moment's level.
EVENTS: Final[dict[str, int]] = {
    "join_attempt": logging.DEBUG,  # next_rendezvous() starts
    "joined": logging.INFO,  # it returns a round: rank and world size
    "join_failed": logging.INFO,  # it raises (timeout, closed, error)
    "health_failed": logging.WARNING,  # the health check failed; it retries
    "health_passed": logging.DEBUG,  # the health check passed
    "round_complete": logging.INFO,  # the coordinator completed a round
    "budget_spent": logging.WARNING,  # the coordinator closed the run: max_rounds spent
    "closed": logging.INFO,  # this node closed the run (set_closed)
}


def emit(
    logger: logging.Logger,
    event: Event,
    message: str,
    *args: object,
    run_id: str,
    node: str,
    round: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    reason: str | None = None,
) -> None:
    """Log ``message % args`` on ``logger`` at ``event``'s level, with the schema's
    attributes.

    :param logger: the module's logger
    :param event: the moment
    :param message: the message, ``%``-formatted with ``args``
    :param args: its arguments
    :param run_id: the run
    :param node: the node
    :param round: the round, if any
    :param rank: the node's rank, if any
    :param world_size: the round's size, if any
    :param reason: why, if any
    """
    level = EVENTS[event]
    if not logger.isEnabledFor(level):
        return
    extra: dict[str, Any] = {
        "anyrdzv_event": event,
        "run_id": run_id,
        "node": node,
        "round": round,
        "rank": rank,
        "world_size": world_size,
        "reason": reason,
    }
    logger.log(level, message, *args, extra=extra, stacklevel=2)
