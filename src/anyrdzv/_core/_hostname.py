"""Does this node host the store? Host matching that knows every interface address and
never blocks the loop: the local identity (gathered in a worker thread, cached), the
rules, and async resolution under a timeout."""

from __future__ import annotations

import ipaddress
import math
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, TypeAlias

import anyio
import anyio.lowlevel
import anyio.to_thread
import ifaddr

from .._checks import check_number, check_str

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The rule that decided a :class:`HostMatch`, in the order the rules are tried.
HostRule = Literal[
    "localhost",
    "loopback",
    "unspecified",
    "interface-address",
    "hostname-address",
    "hostname",
    "fqdn",
    "resolves-to-local",
    "no-match",
    "unresolvable",
    "timeout",
]

#: How long a gathered :class:`LocalIdentity` is reused, in seconds.
IDENTITY_TTL = 30.0


@dataclass(frozen=True)
class LocalIdentity:
    """What this machine calls itself: its names and the addresses of its interfaces.

    :ivar hostname: ``socket.gethostname()``
    :ivar fqdn: ``socket.getfqdn()``
    :ivar canonical_name: the canonical name that ``getaddrinfo(hostname)`` reports, or ``""``
    :ivar interfaces: each interface's name, mapped to its addresses (zone ids removed)
    :ivar hostname_addresses: the addresses that the hostname resolves to
    """

    hostname: str
    fqdn: str
    canonical_name: str = ""
    interfaces: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    hostname_addresses: tuple[str, ...] = ()

    def interface_of(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        """Return the name of the interface that has ``address``, or ``None``."""
        for name, addresses in self.interfaces.items():
            if any(_parse_ip(a) == address for a in addresses):
                return name
        return None


@dataclass(frozen=True)
class HostMatch:
    """Why a host does, or does not, name this machine.

    :ivar host: the host that was asked about, as given
    :ivar matches: whether it names this machine
    :ivar rule: the rule that decided, such as ``"loopback"`` or ``"interface-address"``
    :ivar detail: a sentence that explains the decision
    :ivar addresses: what the host resolved to (empty if no lookup was needed)
    :ivar elapsed: how long the decision took, in seconds
    """

    host: str
    matches: bool
    rule: HostRule
    detail: str
    addresses: tuple[str, ...] = ()
    elapsed: float = 0.0


def _parse_ip(text: str) -> IPAddress | None:
    """Parse an IP literal for comparison: zone id dropped, IPv4-mapped IPv6 as IPv4."""
    address_text, _, _ = text.partition("%")
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _normalize_name(name: str) -> str:
    name = name.strip().lower()
    return name.removesuffix(".")


def gather_local_identity() -> LocalIdentity:
    """Read this machine's names and interface addresses. Blocking: run it in a thread."""
    hostname = socket.gethostname()
    fqdn = socket.getfqdn()
    canonical_name = ""
    hostname_addresses: list[str] = []
    try:
        infos = socket.getaddrinfo(hostname, None, flags=socket.AI_CANONNAME)
    except (OSError, UnicodeError):
        infos = []
    for _family, _type, _proto, canonname, sockaddr in infos:
        canonical_name = canonical_name or canonname
        if str(sockaddr[0]) not in hostname_addresses:
            hostname_addresses.append(str(sockaddr[0]))
    interfaces: dict[str, tuple[str, ...]] = {}
    for adapter in ifaddr.get_adapters():
        addresses = tuple(ip.ip if isinstance(ip.ip, str) else ip.ip[0] for ip in adapter.ips)
        if addresses:
            interfaces[adapter.nice_name] = addresses
    return LocalIdentity(
        hostname=hostname,
        fqdn=fqdn,
        canonical_name=canonical_name,
        interfaces=MappingProxyType(interfaces),
        hostname_addresses=tuple(hostname_addresses),
    )


class IdentityCache:
    """Keeps a :class:`LocalIdentity` for ``ttl`` seconds; concurrent refreshes share one.

    The identity is gathered in a worker thread, since ``socket.getfqdn()`` can block
    for seconds.
    """

    def __init__(
        self, gather: Callable[[], LocalIdentity] = gather_local_identity, ttl: float = IDENTITY_TTL
    ) -> None:
        self._gather = gather
        self._ttl = ttl
        self._value: LocalIdentity | None = None
        self._stamp = -math.inf
        self._pending: anyio.Event | None = None

    def peek(self) -> LocalIdentity | None:
        """Return the cached identity if it is still fresh, without any I/O."""
        value = self._value
        if value is not None and time.monotonic() - self._stamp < self._ttl:
            return value
        return None

    async def get(self, *, refresh: bool = False) -> LocalIdentity:
        requested_at = time.monotonic()
        while True:
            value = self._value
            if value is not None and (
                self._stamp >= requested_at
                or (not refresh and requested_at - self._stamp < self._ttl)
            ):
                await anyio.lowlevel.checkpoint()
                return value
            pending = self._pending
            if pending is not None:
                await pending.wait()
                continue
            pending = self._pending = anyio.Event()
            try:
                value = await anyio.to_thread.run_sync(self._gather, abandon_on_cancel=True)
                self._value, self._stamp = value, time.monotonic()
                return value
            finally:
                self._pending = None
                pending.set()


Resolver = Callable[[str], Awaitable[list[str]]]


async def _getaddrinfo_addresses(host: str) -> list[str]:
    infos = await anyio.getaddrinfo(host, None)
    addresses: list[str] = []
    for *_, sockaddr in infos:
        if str(sockaddr[0]) not in addresses:
            addresses.append(str(sockaddr[0]))
    return addresses


def _check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    value = check_number("timeout", timeout)
    if not value > 0:
        raise ValueError(f"timeout must be positive or None, got {timeout!r}")
    return value


Verdict: TypeAlias = tuple[bool, HostRule, str]

# Decisions that need no DNS are remembered per name, up to this many names.
_MEMO_SIZE = 1024


def _normalize_host(host: str) -> str:
    name = host.strip()
    if len(name) >= 2 and name.startswith("[") and name.endswith("]"):
        name = name[1:-1].strip()
    if not name:
        raise ValueError(f"host must not be empty or blank, got {host!r}")
    return _normalize_name(name)


def _identity_free_verdict(name: str) -> Verdict | None:
    """Decide ``localhost``, loopback and unspecified hosts, which need no identity."""
    if name == "localhost" or name.endswith(".localhost"):
        return True, "localhost", f"{name} always names the local machine"
    literal = _parse_ip(name)
    if literal is not None and literal.is_loopback:
        return True, "loopback", f"{literal} is a loopback address"
    if literal is not None and literal.is_unspecified:
        return False, "unspecified", f"{literal} is the unspecified address, not a host"
    return None


def _local_verdict(name: str, identity: LocalIdentity) -> Verdict | None:
    """Decide IP literals and this machine's own names; ``None`` means "ask DNS"."""
    literal = _parse_ip(name)
    if literal is not None:
        return _literal_verdict(literal, identity)
    if name == _normalize_name(identity.hostname):
        return True, "hostname", f"{name} is this machine's hostname"
    if name in {_normalize_name(identity.fqdn), _normalize_name(identity.canonical_name)}:
        return True, "fqdn", f"{name} is this machine's fully qualified name"
    return None


def _resolved_verdict(name: str, addresses: tuple[str, ...], identity: LocalIdentity) -> Verdict:
    for text in addresses:
        address = _parse_ip(text)
        if address is None:
            continue
        matches, _, why = _literal_verdict(address, identity)
        if matches:
            return True, "resolves-to-local", f"{name} resolves to {text}, and {why}"
    listed = ", ".join(addresses) or "nothing"
    return False, "no-match", f"{name} resolves to {listed}, none of which is this machine"


class HostMatcher:
    """Decides whether a host names this machine. The public functions use one instance.

    Tests build their own, with a fake identity and a fake resolver.
    """

    def __init__(self, identity: IdentityCache, resolve: Resolver = _getaddrinfo_addresses) -> None:
        self.identity = identity
        self._resolve = resolve
        # name -> (the identity it was decided against, or None if it needs none; verdict)
        self._memo: dict[str, tuple[LocalIdentity | None, Verdict]] = {}

    def _remember(self, name: str, identity: LocalIdentity | None, verdict: Verdict) -> None:
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()
        self._memo[name] = (identity, verdict)

    async def explain(self, host: str, *, timeout: float | None = 5.0) -> HostMatch:
        check_str("host", host)
        limit = _check_timeout(timeout)
        start = time.perf_counter()
        name = _normalize_host(host)

        remembered = self._memo.get(name)
        if remembered is not None and (
            remembered[0] is None or remembered[0] is self.identity.peek()
        ):
            await anyio.lowlevel.checkpoint()
            return HostMatch(host, *remembered[1], (), time.perf_counter() - start)

        verdict = _identity_free_verdict(name)
        if verdict is not None:
            self._remember(name, None, verdict)
            await anyio.lowlevel.checkpoint()
            return HostMatch(host, *verdict, (), time.perf_counter() - start)

        addresses: tuple[str, ...] = ()
        timed_out: Verdict = False, "timeout", f"no answer for {name} within {timeout} s"
        with anyio.move_on_after(limit) as scope:
            identity = await self.identity.get()
            verdict = _local_verdict(name, identity)
            if verdict is not None:
                self._remember(name, identity, verdict)
            else:
                try:
                    addresses = tuple(await self._resolve(name))
                except (OSError, UnicodeError, ValueError) as exc:
                    verdict = False, "unresolvable", f"{name} could not be resolved: {exc}"
                else:
                    verdict = _resolved_verdict(name, addresses, identity)
        if scope.cancelled_caught or verdict is None:
            verdict = timed_out
        return HostMatch(host, *verdict, addresses, time.perf_counter() - start)


def _literal_verdict(address: IPAddress, identity: LocalIdentity) -> Verdict:
    if address.is_loopback:
        return True, "loopback", f"{address} is a loopback address"
    interface = identity.interface_of(address)
    if interface is not None:
        return True, "interface-address", f"{address} is an address of interface {interface}"
    if any(_parse_ip(a) == address for a in identity.hostname_addresses):
        return True, "hostname-address", f"{address} is an address of hostname {identity.hostname}"
    return False, "no-match", f"{address} is not an address of this machine"


_matcher = HostMatcher(IdentityCache())


async def local_identity(*, refresh: bool = False) -> LocalIdentity:
    """Return this machine's hostname, FQDN and interface addresses.

    The identity is gathered in a worker thread and cached for 30 seconds. Concurrent
    callers share one refresh.

    :param refresh: gather a new identity even if the cached one is fresh
    :return: the local identity
    """
    return await _matcher.identity.get(refresh=refresh)


async def explain_machine_hostname(host: str, *, timeout: float | None = 5.0) -> HostMatch:
    """Decide whether ``host`` names this machine, and say why.

    The rules, in order: ``localhost`` and ``*.localhost`` match. For an IP literal,
    a loopback address matches, an unspecified one does not, and one assigned to any
    local interface (or that the hostname resolves to) matches; no DNS is asked. A
    name equal to the hostname or FQDN matches. Any other name is resolved, and matches
    if it resolves to a loopback or local address. Names compare case-insensitively,
    without a trailing dot; brackets, IPv6 zone ids and IPv4-mapped forms are
    normalised.

    A lookup that fails or times out gives ``matches=False``; it never raises for a
    DNS problem, and it never blocks the event loop.

    :param host: the host to check, such as the host of a rendezvous endpoint
    :param timeout: how long to wait for the local identity and the lookup, in seconds
    :raises TypeError: if ``host`` is not a ``str``
    :raises ValueError: if ``host`` is blank, or ``timeout`` is not positive
    :return: the decision, the rule that made it and the evidence
    """
    return await _matcher.explain(host, timeout=timeout)


async def matches_machine_hostname(host: str, *, timeout: float | None = 5.0) -> bool:
    """Tell whether ``host`` names this machine: the async form of torch's check.

    This is :func:`explain_machine_hostname` without the explanation.

    :param host: the host to check
    :param timeout: how long to wait for the local identity and the lookup, in seconds
    :raises TypeError: if ``host`` is not a ``str``
    :raises ValueError: if ``host`` is blank, or ``timeout`` is not positive
    :return: ``True`` if the host names this machine
    """
    return (await _matcher.explain(host, timeout=timeout)).matches
