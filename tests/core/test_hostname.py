from __future__ import annotations

import asyncio
import fcntl
import gc
import ipaddress
import json
import math
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import anyrdzv
from anyrdzv import HostMatch, LocalIdentity, explain_machine_hostname, matches_machine_hostname
from anyrdzv._core._hostname import HostMatcher, IdentityCache

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.anyio

# uvloop resolves in libuv's thread pool (4 threads unless this says otherwise, read when
# the pool first starts), and closing a loop waits for every lookup queued there; let
# TestLoopLag's 100 unresolvable lookups run at once, not 4 at a time. Set before any
# loop runs in this process, and only if not set already.
os.environ.setdefault("UV_THREADPOOL_SIZE", "128")

FAKE = LocalIdentity(
    hostname="Node7",
    fqdn="node7.cluster.example.",
    canonical_name="node7-canon.example",
    interfaces=MappingProxyType(
        {
            "lo": ("127.0.0.1", "::1"),
            "eth0": ("192.0.2.2", "fd00::2", "fe80::fc:ff:fe00:1"),
            "ib0": ("198.51.100.9",),
        }
    ),
    hostname_addresses=("127.0.1.1", "203.0.113.5"),
)


class FakeResolver:
    """Answers lookups from a table; records what it was asked."""

    def __init__(self, table: dict[str, Any] | None = None) -> None:
        self.table = table or {}
        self.calls: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.calls.append(host)
        answer = self.table.get(host, OSError(-2, "Name or service not known"))
        if answer == "hang":
            await anyio.sleep(math.inf)
        if isinstance(answer, BaseException):
            raise answer
        return list(answer)


class CountingGather:
    def __init__(self, identity: LocalIdentity = FAKE, pause: float = 0.0) -> None:
        self.identity = identity
        self.pause = pause
        self.count = 0
        self.release = threading.Event()
        self.release.set()

    def __call__(self) -> LocalIdentity:
        self.count += 1
        self.release.wait(10)
        time.sleep(self.pause)
        return self.identity


def matcher(
    table: dict[str, Any] | None = None, gather: CountingGather | None = None, ttl: float = 30.0
) -> tuple[HostMatcher, FakeResolver, CountingGather]:
    resolver = FakeResolver(table)
    gather = gather or CountingGather()
    return HostMatcher(IdentityCache(gather, ttl=ttl), resolver), resolver, gather


class TestRules:
    @pytest.mark.parametrize(
        ("host", "rule"),
        [
            ("localhost", "localhost"),
            ("LOCALHOST.", "localhost"),
            ("db.localhost", "localhost"),
            ("[localhost]", "localhost"),
            ("127.0.0.1", "loopback"),
            ("127.0.0.2", "loopback"),
            ("::1", "loopback"),
            ("[::1]", "loopback"),
            ("0000:0000:0000:0000:0000:0000:0000:0001", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("192.0.2.2", "interface-address"),
            ("198.51.100.9", "interface-address"),
            ("fd00::2", "interface-address"),
            ("[FD00::2]", "interface-address"),
            ("fe80::fc:ff:fe00:1%eth0", "interface-address"),
            ("[fe80::fc:ff:fe00:1%4]", "interface-address"),
            ("::ffff:192.0.2.2", "interface-address"),
            ("203.0.113.5", "hostname-address"),
            ("node7", "hostname"),
            ("NODE7.", "hostname"),
            ("node7.cluster.example", "fqdn"),
            ("Node7.Cluster.Example.", "fqdn"),
            ("node7-canon.example", "fqdn"),
        ],
    )
    async def test_matches_without_dns(self, host: str, rule: str) -> None:
        m, resolver, _ = matcher()
        result = await m.explain(host)
        assert (result.matches, result.rule) == (True, rule)
        assert result.host == host
        assert resolver.calls == []
        assert result.addresses == ()
        assert result.elapsed >= 0

    @pytest.mark.parametrize(
        ("host", "rule"),
        [
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("[::]", "unspecified"),
            ("::ffff:0.0.0.0", "unspecified"),
            ("::2", "no-match"),
            ("192.0.2.3", "no-match"),
            ("fe80::1%eth0", "no-match"),
        ],
    )
    async def test_literals_that_do_not_match_ask_no_dns(self, host: str, rule: str) -> None:
        m, resolver, _ = matcher()
        result = await m.explain(host)
        assert (result.matches, result.rule) == (False, rule)
        assert resolver.calls == []

    @pytest.mark.parametrize(
        ("answer", "matches", "rule"),
        [
            (["127.0.1.1"], True, "resolves-to-local"),
            (["10.9.9.9", "192.0.2.2"], True, "resolves-to-local"),
            (["fe80::fc:ff:fe00:1%eth0"], True, "resolves-to-local"),
            (["::ffff:198.51.100.9"], True, "resolves-to-local"),
            (["203.0.113.5"], True, "resolves-to-local"),
            (["10.9.9.9", "2001:db8::9"], False, "no-match"),
            ([], False, "no-match"),
        ],
    )
    async def test_resolution(self, answer: list[str], matches: bool, rule: str) -> None:
        m, resolver, _ = matcher({"alias.example": answer})
        result = await m.explain("Alias.Example.")
        assert resolver.calls == ["alias.example"]
        assert (result.matches, result.rule) == (matches, rule)
        assert result.addresses == tuple(answer)

    async def test_detail_names_the_interface(self) -> None:
        m, _, _ = matcher({"alias": ["192.0.2.2"]})
        assert (await m.explain("192.0.2.2")).detail == "192.0.2.2 is an address of interface eth0"
        detail = (await m.explain("alias")).detail
        assert (
            detail == "alias resolves to 192.0.2.2, and 192.0.2.2 is an address of interface eth0"
        )

    @pytest.mark.parametrize(
        "error",
        [
            socket.gaierror(-2, "Name or service not known"),
            UnicodeError("label empty"),
            ValueError("embedded null character"),
            OSError(101, "unreachable"),
        ],
    )
    async def test_resolution_failure_is_false_and_never_raises(self, error: Exception) -> None:
        m, _, _ = matcher({"dummy": error})
        result = await m.explain("dummy")
        assert (result.matches, result.rule) == (False, "unresolvable")
        assert str(error) in result.detail

    async def test_lookup_timeout_is_false(self) -> None:
        m, _, _ = matcher({"slow.example": "hang"})
        start = anyio.current_time()
        result = await m.explain("slow.example", timeout=0.05)
        assert (result.matches, result.rule) == (False, "timeout")
        assert "0.05" in result.detail
        assert anyio.current_time() - start < 5

    async def test_identity_timeout_is_false(self) -> None:
        gather = CountingGather()
        gather.release.clear()
        m, _, _ = matcher(gather=gather)
        try:
            result = await m.explain("192.0.2.2", timeout=0.05)
        finally:
            gather.release.set()
        assert (result.matches, result.rule) == (False, "timeout")

    async def test_loopback_needs_no_identity(self) -> None:
        gather = CountingGather()
        m, _, _ = matcher(gather=gather)
        assert (await m.explain("localhost")).matches
        assert (await m.explain("127.0.0.1")).matches
        assert gather.count == 0


class TestBadInput:
    @pytest.mark.parametrize("host", ["", "   ", "[]", "[ ]", "\n"])
    async def test_blank_host_is_value_error(self, host: str) -> None:
        with pytest.raises(ValueError, match="host must not be empty or blank"):
            await matches_machine_hostname(host)

    @pytest.mark.parametrize("host", [None, 1, b"localhost", ["localhost"]])
    async def test_non_str_host_is_type_error(self, host: object) -> None:
        with pytest.raises(TypeError, match="host must be a str"):
            await explain_machine_hostname(host)  # type: ignore[arg-type]

    @pytest.mark.parametrize("timeout", [0, -1, math.nan])
    async def test_bad_timeout_is_value_error(self, timeout: float) -> None:
        with pytest.raises(ValueError, match="timeout must be positive or None"):
            await matches_machine_hostname("localhost", timeout=timeout)

    async def test_non_number_timeout_is_type_error(self) -> None:
        with pytest.raises(TypeError, match="timeout must be a number"):
            await matches_machine_hostname("localhost", timeout="5")  # type: ignore[arg-type]

    @pytest.mark.parametrize("host", ["a..b", "x" * 100_000, "h\x00st", "é" * 300, "-", "a b"])
    async def test_odd_names_answer_false(self, host: str) -> None:
        result = await explain_machine_hostname(host, timeout=5)
        assert result.matches is False
        assert result.rule in {"unresolvable", "no-match", "timeout"}


class TestCache:
    async def test_repeated_literal_and_hostname_calls_do_no_io(self) -> None:
        m, resolver, gather = matcher()
        for _ in range(50):
            assert (await m.explain("192.0.2.2")).matches
            assert (await m.explain("node7")).matches
            assert not (await m.explain("192.0.2.99")).matches
        assert gather.count == 1
        assert resolver.calls == []

    async def test_concurrent_callers_share_one_refresh(self) -> None:
        gather = CountingGather(pause=0.05)
        m, _, _ = matcher(gather=gather)
        results: list[HostMatch] = []

        async def ask() -> None:
            results.append(await m.explain("192.0.2.2"))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(ask)
        assert gather.count == 1
        assert all(r.matches for r in results)
        assert len(results) == 20

    async def test_refresh_forces_a_new_gather(self) -> None:
        m, _, gather = matcher()
        first = await m.identity.get()
        again = await m.identity.get()
        fresh = await m.identity.get(refresh=True)
        assert first is again is fresh
        assert gather.count == 2

    async def test_ttl_expiry_gathers_again(self) -> None:
        m, _, gather = matcher(ttl=0.01)
        await m.identity.get()
        await anyio.sleep(0.03)
        await m.identity.get()
        assert gather.count == 2

    async def test_cancelled_refresh_lets_waiters_retry(self) -> None:
        gather = CountingGather()
        gather.release.clear()
        m, _, _ = matcher(gather=gather)
        with anyio.move_on_after(0.05):
            await m.identity.get()
        gather.release.set()
        assert await m.identity.get() is FAKE

    async def test_public_local_identity(self) -> None:
        identity = await anyrdzv.local_identity()
        assert identity.hostname == socket.gethostname()
        assert await anyrdzv.local_identity() is identity
        assert await anyrdzv.local_identity(refresh=True) == identity


def os_interface_addresses() -> set[str]:
    """Every address the OS lists, read without ifaddr: /proc, ioctl and ip -j addr."""
    found: set[str] = set()
    inet6 = Path("/proc/net/if_inet6")
    if inet6.exists():
        for line in inet6.read_text().splitlines():
            raw = line.split()[0]
            found.add(str(ipaddress.IPv6Address(bytes.fromhex(raw))))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                reply = fcntl.ioctl(sock.fileno(), 0x8915, request)  # SIOCGIFADDR
            except OSError:
                continue
            found.add(socket.inet_ntoa(reply[20:24]))
    ip = shutil.which("ip")
    if ip:
        out = subprocess.run([ip, "-j", "addr"], capture_output=True, text=True, check=True).stdout
        for link in json.loads(out):
            found.update(info["local"] for info in link.get("addr_info", []))
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc and Linux ioctls")
class TestRealMachine:
    @pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.0.2", "::1", "[::1]"])
    async def test_loopback_names_and_literals(self, host: str) -> None:
        assert await matches_machine_hostname(host)

    async def test_hostname_fqdn_and_their_addresses(self) -> None:
        hostname = socket.gethostname()
        assert await matches_machine_hostname(hostname)
        assert await matches_machine_hostname(socket.getfqdn())
        for *_, sockaddr in socket.getaddrinfo(hostname, None):
            assert await matches_machine_hostname(str(sockaddr[0])), sockaddr

    async def test_every_os_interface_address(self) -> None:
        addresses = os_interface_addresses()
        assert "127.0.0.1" in addresses
        for address in sorted(addresses):
            result = await explain_machine_hostname(address)
            assert result.matches, result

    @pytest.mark.parametrize("host", ["dummy", "0.0.0.0", "::2", "no-such-host.invalid"])
    async def test_not_this_machine(self, host: str) -> None:
        assert not await matches_machine_hostname(host)


async def _max_lag_during(lookups: int, host_for: Any, timeout: float = 1.5) -> tuple[float, int]:
    """Run ``lookups`` lookups while a task sleeps 5 ms in a loop; return its worst lateness."""
    worst = 0.0
    ticks = 0
    finished = anyio.Event()

    async def ticker() -> None:
        nonlocal worst, ticks
        while not finished.is_set():
            before = anyio.current_time()
            await anyio.sleep(0.005)
            worst = max(worst, anyio.current_time() - before - 0.005)
            ticks += 1

    async def lookup(i: int) -> None:
        result = await explain_machine_hostname(host_for(i), timeout=timeout)
        assert not result.matches

    # A full collection of the heap the rest of the test session built up can pause any
    # code for tens of ms; freeze that heap so the measurement sees only these lookups.
    gc.collect()
    gc.freeze()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            async with anyio.create_task_group() as lookups_tg:
                for i in range(lookups):
                    lookups_tg.start_soon(lookup, i)
            finished.set()
    finally:
        gc.unfreeze()
    return worst, ticks


@contextmanager
def _lookups_left_behind_at_exit(anyio_backend: tuple[str, dict[str, Any]]) -> Iterator[None]:
    """On plain asyncio, resolve in an executor of our own, and drop its queued lookups
    when the block ends, instead of having the loop wait for them at shutdown.

    asyncio resolves in the loop's default executor (a few threads), and closing the loop
    waits for every lookup queued there. A lookup the OS resolver gives no quick answer
    to can take 5 s or more, long after the caller's timeout has ended it, and 100 of
    them queued behind a few threads kept a loop from closing for seconds. uvloop
    resolves in libuv's thread pool instead, and waits likewise (see UV_THREADPOOL_SIZE
    above); trio leaves its resolver threads behind by itself.
    """
    backend, options = anyio_backend
    if backend != "asyncio" or options.get("use_uvloop"):
        yield
        return
    loop = asyncio.get_running_loop()
    own = ThreadPoolExecutor(thread_name_prefix="test-resolver")  # asyncio's default size
    loop.set_default_executor(own)
    try:
        yield
    finally:
        loop.set_default_executor(ThreadPoolExecutor())  # what asyncio would make anew
        own.shutdown(wait=False, cancel_futures=True)  # the running few finish by themselves


class TestLoopLag:
    # The lookups end at their 1.5 s timeout, while the OS resolver goes on with them in
    # threads: the loop shutdown of asyncio and uvloop would wait for those (~20 s here).
    @pytest.mark.timeout(120)
    async def test_unresolvable_lookups_do_not_block_the_loop(
        self, anyio_backend: tuple[str, dict[str, Any]]
    ) -> None:
        await anyrdzv.local_identity()
        with _lookups_left_behind_at_exit(anyio_backend):
            worst, _ = await _max_lag_during(100, lambda i: f"no-such-host-{i}.invalid")
        assert worst < 0.050

    async def test_slow_dns_does_not_block_the_loop(
        self, anyio_backend: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        if anyio_backend[1].get("use_uvloop"):
            pytest.skip("uvloop resolves in libuv's C thread pool: socket.getaddrinfo is not used")
        real = socket.getaddrinfo
        calls = 0

        def slow_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            flags = kwargs.get("flags", args[4] if len(args) > 4 else 0)
            if isinstance(host, bytes | str) and "slow-" in str(host):
                if flags & socket.AI_NUMERICHOST:
                    raise socket.gaierror(socket.EAI_NONAME, "not numeric")
                calls += 1
                time.sleep(0.1)
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return real(host, *args, **kwargs)

        await anyrdzv.local_identity()
        monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
        worst, ticks = await _max_lag_during(100, lambda i: f"slow-{i}.invalid", timeout=10)
        assert calls == 100
        assert ticks >= 10  # the lookups really were in flight while the ticker ran
        assert worst < 0.050
