"""The transport's one error map: httpx's, the OS's and TLS's errors, and timeouts, as
StoreErrors naming the member, with the TLS diagnosis; and the hints for a first
contact that failed as a TLS mismatch does."""

from __future__ import annotations

import ssl

import httpx
import pytest

from anyrdzv import StoreConnectionError, StoreError
from anyrdzv._etcd._transport import connection_error, handshake_hint, map_errors

WHERE = "127.0.0.1:2379"


def tls_failure(reason: str) -> httpx.ConnectError:
    try:
        raise httpx.ConnectError("TLS failed") from ssl.SSLError(1, reason)
    except httpx.ConnectError as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "match"),
    [
        (
            tls_failure("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
            "TLS with etcd at 127.0.0.1:2379 failed: .*Pass ssl= an SSLContext that trusts",
        ),
        (
            tls_failure("[SSL: WRONG_VERSION_NUMBER] wrong version number"),
            "TLS with etcd at 127.0.0.1:2379 failed: .*Does it serve plain HTTP?",
        ),
        (TimeoutError(), r"etcd at 127.0.0.1:2379 did not answer within 0.5 s \(TimeoutError\)"),
        (httpx.ReadTimeout("slow"), r"did not answer within 0.5 s \(slow\)"),
        (httpx.ConnectError("refused"), "cannot reach etcd at 127.0.0.1:2379: refused"),
        (ConnectionResetError("reset"), "cannot reach etcd at 127.0.0.1:2379: reset"),
    ],
)
def test_each_failure_becomes_a_connection_error(exc: BaseException, match: str) -> None:
    error = connection_error(exc, where=WHERE, limit=0.5)
    assert isinstance(error, StoreConnectionError)
    with pytest.raises(StoreConnectionError, match=match):
        raise error


def test_a_timeout_says_how_long_it_queued() -> None:
    error = connection_error(TimeoutError(), where=WHERE, limit=2, waited=1.25)
    assert "within 2 s, after 1.2 s waiting for a request slot" in str(error)
    quick = connection_error(TimeoutError(), where=WHERE, limit=2, waited=0.01)
    assert "waiting" not in str(quick)


def test_a_huge_error_is_cut() -> None:
    error = connection_error(httpx.ConnectError("x" * 100_000), where=WHERE, limit=1)
    assert len(str(error)) < 400


def test_map_errors_maps_foreign_errors_and_passes_ours() -> None:
    with (
        pytest.raises(StoreConnectionError, match="cannot reach") as info,
        map_errors(WHERE, limit=1),
    ):
        raise httpx.ConnectError("refused")
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    ours = StoreError("ours")
    with pytest.raises(StoreError) as passed, map_errors(WHERE, limit=1):
        raise ours
    assert passed.value is ours
    with pytest.raises(KeyError), map_errors(WHERE, limit=1):
        raise KeyError("not a transport error")


def failed_with(cause: BaseException) -> StoreConnectionError:
    error = StoreConnectionError("cannot reach etcd")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("cause", "tls", "match"),
    [
        (httpx.ConnectError(""), True, "the handshake was broken off"),
        (httpx.ReadError("connection reset by peer"), True, "the handshake was broken off"),
        (httpx.RemoteProtocolError("closed"), False, "If it serves TLS, use an https://"),
        (httpx.ReadError(""), False, r"without answering \(ReadError\)"),
    ],
)
def test_a_tls_mismatch_on_first_contact_is_named(
    cause: BaseException, tls: bool, match: str
) -> None:
    hint = handshake_hint(failed_with(cause), where=WHERE, tls=tls)
    assert hint is not None
    with pytest.raises(StoreConnectionError, match=match):
        raise hint


@pytest.mark.parametrize(
    ("cause", "tls"),
    [
        (httpx.ConnectError("refused"), True),
        (httpx.ConnectError("refused"), False),
        (httpx.ReadTimeout(""), False),
    ],
)
def test_other_failures_get_no_hint(cause: BaseException, tls: bool) -> None:
    assert handshake_hint(failed_with(cause), where=WHERE, tls=tls) is None
