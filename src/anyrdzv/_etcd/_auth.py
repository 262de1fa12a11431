"""Logging in to etcd members and renewing their simple tokens: one login at a time per
member, and none when another caller already replaced the stale token."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, final

from .._checks import check_str, echo
from .._exceptions import StoreProtocolError
from . import _wire

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._members import Member


logger = logging.getLogger(__name__)

AUTHENTICATE = "/v3/auth/authenticate"


def check_credentials(username: object, password: object) -> None:
    """:raises TypeError: if either is given and is not a ``str``
    :raises ValueError: if only one is given"""
    if username is not None:
        check_str("username", username)
    if password is not None:
        check_str("password", password)
    if (username is None) != (password is None):
        raise ValueError("username and password go together: give both or neither")


@final
class Auth:
    """An etcd user's credentials, and the logins to each member with them.

    :param username: the etcd user, or ``None`` without auth
    :param password: that user's password
    """

    def __init__(self, username: str | None, password: str | None) -> None:
        self._username = username
        self._password = password

    @property
    def has_credentials(self) -> bool:
        return self._username is not None

    @property
    def username(self) -> str | None:
        """The etcd user, or ``None`` without auth."""
        return self._username

    async def login(
        self,
        member: Member,
        stale: str | None,
        send: Callable[[bytes], Awaitable[tuple[int, bytes]]],
    ) -> None:
        """Log in to ``member``, unless another caller already replaced its ``stale``
        token.

        :param send: sends the login request's body to ``member``, with no token (a
            stale token would fail the login); returns the HTTP status and the body
        :raises StoreError: a subclass for what went wrong
        """
        assert member.login is not None
        async with member.login:
            if member.token is not None and member.token != stale:
                return  # someone else logged in meanwhile
            if stale is not None:
                logger.info("etcd at %s refused the auth token; logging in again", member.where)
            member.token = None
            status, content = await send(
                _wire.encode({"name": self._username, "password": self._password})
            )
            body = _wire.read_answer(AUTHENTICATE, status, content, has_credentials=True)
            token = body.get("token")
            if not isinstance(token, str) or not token:
                raise StoreProtocolError(
                    f"etcd's answer to {AUTHENTICATE} has no token: {echo(body)}"
                )
            member.token = token
            logger.debug("logged in to etcd at %s as %r", member.where, self._username)
