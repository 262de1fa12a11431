"""Endpoint, try_parse_port() and parse_rendezvous_endpoint(): torch's ``--rdzv-endpoint``
parsing, with its messages, and the deliberate differences D1-D5.

Pure: no I/O, no event loop; any ``str`` either parses or raises ``ValueError``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

from .._checks import check_int, check_str, cut, wrong_type

# Exactly what torch accepts as a port: 1 to 5 ASCII digits. ``fullmatch`` rather
# than ``match(...$)`` so that a trailing newline is refused (D5).
_PORT_RE = re.compile(r"[0-9]{1,5}")
# torch's host alphabet (Unicode word characters, '.', ':' and '-'), minus ':'
# which only an IPv6 address may contain (D2). ``fullmatch`` refuses a trailing
# newline, and ``\w`` never matches whitespace or control characters (D3).
_NAME_RE = re.compile(r"[\w.-]+")
# An IPv6 zone id (D4): an interface name or number. Kept to the name alphabet so
# that the ``str()`` form of an endpoint always parses back.
_ZONE_RE = _NAME_RE
# The longest textual IPv6 address ("ffff:...:255.255.255.255") is 45 characters;
# anything longer is not one, and is refused before ipaddress sees it.
_MAX_IPV6_LEN = 45

_PORT_LIMIT = 65536

# An error message echoes at most this much of the input, so that a 100 KB endpoint
# does not become a 100 KB message. Any real endpoint fits: a DNS name has at most
# 253 characters, and the port and brackets add a few.
_MAX_ECHO = 300


class Endpoint(NamedTuple):
    """A parsed rendezvous endpoint: a host and a port.

    It is a plain tuple, so ``endpoint == ("host", 29400)`` holds and
    ``host, port = endpoint`` works. ``str(endpoint)`` gives ``host:port``, with
    brackets around an IPv6 host (``[2001:db8::1]:80``), and parses back to the same
    value whenever the port is in ``0..65535``.

    :ivar host: the host: a name, or an IP address without brackets (an IPv6 one may
        carry a zone id, ``fe80::1%eth0``)
    :ivar port: the port
    """

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def try_parse_port(port_str: str) -> int | None:
    """Return the port number in ``port_str``, or ``None`` if it is not one.

    A port is 1 to 5 ASCII digits, with nothing around them: no sign, no spaces and,
    unlike torch (D5), no trailing newline. There is no range check here, so
    ``"99999"`` gives 99999; leading zeros are accepted (``"00080"`` gives 80).

    :param port_str: the text to parse
    :raises TypeError: if ``port_str`` is not a ``str``
    :return: the port, or ``None``
    """
    check_str("port_str", port_str)
    if _PORT_RE.fullmatch(port_str) is None:
        return None
    return int(port_str)


def is_ipv6_address(text: str) -> bool:
    """Tell whether ``text`` is, as a whole, an IPv6 address, with an optional zone id."""
    addr, sep, zone = text.partition("%")
    if len(addr) > _MAX_IPV6_LEN or ":" not in addr:
        return False
    if sep and _ZONE_RE.fullmatch(zone) is None:
        return False
    try:
        ipaddress.IPv6Address(addr)
    except ValueError:
        return False
    return True


def _is_valid_host(host: str) -> bool:
    if ":" in host:
        return is_ipv6_address(host)
    return _NAME_RE.fullmatch(host) is not None


def parse_rendezvous_endpoint(endpoint: str | None, default_port: int) -> Endpoint:
    """Parse a torchrun ``--rdzv-endpoint`` string of the form ``host[:port]``.

    The behaviour and error messages match torch's ``parse_rendezvous_endpoint``,
    except in four deliberate ways:

    - D1: a bare IPv6 address (``::1``, ``2001:db8::1``) is the host, with the default
      port, where torch would split it at the last ``:``;
    - D2: a host that contains ``:`` must be a valid IPv6 address;
    - D3: a host with whitespace or control characters (a trailing newline included)
      is refused;
    - D4: an IPv6 zone id is accepted: ``[fe80::1%eth0]:29400``.

    This function does no I/O.

    :param endpoint: the endpoint; ``None`` or blank means ``localhost``
    :param default_port: the port to use when the endpoint names none; not
        range-checked, since backends use ``-1`` to mean "a port is required"
    :raises TypeError: if ``endpoint`` is neither a ``str`` nor ``None``, or
        ``default_port`` is not an ``int``
    :raises ValueError: if the port or the host is malformed, with torch's message;
        an endpoint longer than 300 characters is cut there in the message, which
        then gives its length
    :return: the host and port
    """
    if endpoint is not None and not isinstance(endpoint, str):
        raise wrong_type("endpoint", endpoint, "a str or None")
    check_int("default_port", default_port)
    if endpoint is None:
        return Endpoint("localhost", default_port)
    endpoint = endpoint.strip()
    if not endpoint:
        return Endpoint("localhost", default_port)

    port_str: str | None
    if (endpoint.startswith("[") and endpoint.endswith("]")) or is_ipv6_address(endpoint):
        # A bracketed host has no port; nor has a bare IPv6 address (D1).
        host, port_str = endpoint, None
    else:
        host, sep, port_str = endpoint.rpartition(":")
        if not sep:
            host, port_str = port_str, None

    if len(host) > 1 and host.startswith("[") and host.endswith("]"):
        host = host[1:-1]

    port = default_port
    if port_str is not None:
        parsed = try_parse_port(port_str)
        if parsed is None or parsed >= _PORT_LIMIT:
            raise ValueError(
                f"The port number of the rendezvous endpoint '{cut(endpoint, _MAX_ECHO)}' must be an "
                "integer between 0 and 65536."
            )
        port = parsed

    if not _is_valid_host(host):
        raise ValueError(
            f"The hostname of the rendezvous endpoint '{cut(endpoint, _MAX_ECHO)}' must be a "
            "dot-separated list of labels, an IPv4 address, or an IPv6 address."
        )
    return Endpoint(host, port)
