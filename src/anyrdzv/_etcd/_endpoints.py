"""etcd endpoints as users give them: ``host[:port]``, an ``http(s)://`` URL, or a
cluster's list of them; and the base URL each member's gateway is reached at."""

from __future__ import annotations

import ssl as _ssl
from collections.abc import Sequence

import httpx

from .._checks import check_str, echo, type_name, wrong_type
from .._core._endpoint import Endpoint, parse_rendezvous_endpoint

ETCD_DEFAULT_PORT = 2379


def parse_etcd_endpoint(endpoint: object, ssl: object) -> tuple[Endpoint, str]:
    """Read ``host[:port]`` or an ``http(s)://host[:port]`` URL; return the endpoint and
    the scheme: ``https`` for an ``https://`` URL, or for any endpoint beside ``ssl``.

    It makes no SSL context: an ``https://`` URL without ``ssl`` means the system's CAs,
    and the transport loads them when the store opens, off the event loop.

    :raises ValueError: if the endpoint is malformed, or says plain HTTP beside ``ssl``
    :raises TypeError: if an argument has the wrong type
    """
    text = check_str("endpoint", endpoint).strip()
    if ssl is not None and not isinstance(ssl, _ssl.SSLContext):
        raise TypeError(f"ssl must be an ssl.SSLContext or None, got {type_name(ssl)}")
    scheme = "https" if ssl is not None else "http"
    if "://" in text:
        given, _, rest = text.partition("://")
        given = given.lower()
        if given not in ("http", "https"):
            raise ValueError(
                f"endpoint must be host[:port] or an http:// or https:// URL, got {echo(text)}"
            )
        rest = rest.removesuffix("/")
        if "/" in rest or "?" in rest or "#" in rest:
            raise ValueError(f"endpoint must be a URL with no path, got {echo(text)}")
        if given == "http" and ssl is not None:
            raise ValueError(
                f"endpoint {echo(text)} says plain HTTP, but ssl= was given: "
                "use https://, or host:port"
            )
        scheme = given
        text = rest
    parsed = parse_rendezvous_endpoint(text, ETCD_DEFAULT_PORT)
    host = parsed.host
    if ":" not in host and not host.replace(".", "").isdigit():
        # A name must be one that DNS can carry; httpx would fail on it later, raw.
        try:
            encoded = host.encode("idna")
        except UnicodeError:
            encoded = b""
        if not encoded or len(encoded) > 253:
            raise ValueError(f"endpoint host {echo(host)} is not a valid host name")
    return parsed, scheme


def parse_etcd_endpoints(endpoints: object, ssl: object) -> list[tuple[Endpoint, str]]:
    """Read a cluster's members: a comma-separated ``str``, or a sequence of ``str``,
    each as :func:`parse_etcd_endpoint` reads one.

    :raises ValueError: if there is no member, one is malformed, or one is listed twice
    :raises TypeError: if an argument has the wrong type
    """
    if isinstance(endpoints, str):
        items = endpoints.split(",") if "," in endpoints else [endpoints]
    elif isinstance(endpoints, Sequence) and not isinstance(endpoints, bytes | bytearray):
        items = list(endpoints)
        if not items:
            raise ValueError("endpoint must name at least one etcd member, got an empty list")
        for item in items:
            if not isinstance(item, str):
                raise TypeError(
                    f"{wrong_type('endpoint', item, 'a str or a sequence of str')} in the sequence"
                )
    else:
        raise wrong_type("endpoint", endpoints, "a str or a sequence of str")
    parsed: list[tuple[Endpoint, str]] = []
    seen: dict[tuple[str, int], str] = {}
    for index, item in enumerate(items):
        if not item.strip():
            raise ValueError(
                f"endpoint has an empty member (number {index + 1}) in {echo(endpoints)}"
            )
        try:
            member = parse_etcd_endpoint(item, ssl)
        except ValueError as exc:
            if len(items) == 1:
                raise
            raise ValueError(f"etcd member {echo(item.strip())} in the list: {exc}") from None
        where = (member[0].host.lower(), member[0].port)
        if where in seen:
            raise ValueError(
                f"endpoint lists etcd member {echo(item.strip())} twice "
                f"(as {echo(seen[where])} before)"
            )
        seen[where] = item.strip()
        parsed.append(member)
    return parsed


def gateway_members(parsed: Sequence[tuple[Endpoint, str]]) -> list[tuple[str, str]]:
    """Each member's ``(base_url, where)`` for the gateway.

    :raises ValueError: if a member makes no valid URL
    """
    members: list[tuple[str, str]] = []
    for endpoint, scheme in parsed:
        host = endpoint.host
        if ":" in host:
            host = f"[{host.replace('%', '%25')}]"
        base_url = f"{scheme}://{host}:{endpoint.port}"
        try:
            httpx.URL(base_url)
        except httpx.InvalidURL as exc:
            raise ValueError(f"endpoint {echo(str(endpoint))} is not a valid URL: {exc}") from None
        members.append((base_url, str(endpoint)))
    return members
