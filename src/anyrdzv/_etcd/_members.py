"""The members of an etcd cluster as the gateway sees them: which one requests go to now,
moving on from one that failed (and cancelling the reads of the watch streams open on
it, so that they move too), and the random member each process starts at."""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, final

import anyio

from .._checks import echo

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)


@final
class Member:
    """One etcd member, with its own auth token: etcd's simple tokens are per member.

    :ivar base_url: ``http(s)://host:port``
    :ivar where: how error messages name it, ``host:port``
    """

    __slots__ = ("base_url", "generation", "login", "reads", "token", "where")

    def __init__(self, base_url: str, where: str) -> None:
        self.base_url = base_url
        self.where = where
        self.token: str | None = None
        self.login: anyio.Lock | None = None
        # Bumped each time requests leave this member, so that watch streams still open
        # on it move too; ``reads`` are the cancel scopes of their pending reads.
        self.generation = 0
        self.reads: set[anyio.CancelScope] = set()

    def reset(self) -> None:
        """Forget the token, and make the login lock for the event loop now running."""
        self.login = anyio.Lock()
        self.token = None

    def left(self) -> None:
        """Note that requests left this member: its watch streams move too, now."""
        self.generation += 1
        for scope in list(self.reads):
            scope.cancel()


@final
class Members:
    """The members, and the one that requests go to now.

    Each process starts at its own member, chosen at random, so that many clients
    spread their watches over the cluster (etcd forwards writes to the leader either
    way).

    :param members: each member's ``(base_url, where)``
    """

    def __init__(self, members: Sequence[tuple[str, str]]) -> None:
        self.all = tuple(Member(base_url, where) for base_url, where in members)
        self.several = len(self.all) > 1
        self._current = random.randrange(len(self.all))

    @property
    def current(self) -> Member:
        """The member that requests go to now."""
        return self.all[self._current]

    def named(self, where: str) -> Member:
        """The member that messages name ``where``.

        :raises ValueError: if there is none
        """
        for member in self.all:
            if member.where == where:
                return member
        names = ", ".join(member.where for member in self.all)
        raise ValueError(f"member must be one of {names}, got {echo(where)}")

    def leave(self, member: Member, exc: object, *, to: Member | None = None) -> None:
        """After ``exc`` from ``member`` (an error, or why it was passed over): if
        requests go to it, move them to ``to`` or else the next member, and the watch
        streams open on it too."""
        if not self.several or self.current is not member:
            return
        self._current = (
            self.all.index(to) if to is not None else (self._current + 1) % len(self.all)
        )
        member.left()
        logger.warning(
            "leaving etcd member %s (%s); requests go to %s now",
            member.where,
            exc,
            self.current.where,
        )

    def use(self, where: str) -> None:
        """Send requests to the member named ``where`` from now on, and the watch streams
        open on another member too, until a failover moves them.

        :raises ValueError: if no member is named ``where``
        """
        member = self.named(where)
        current = self.current
        if member is current:
            return
        self._current = self.all.index(member)
        current.left()
        logger.info("requests go to etcd member %s now, as asked", member.where)
