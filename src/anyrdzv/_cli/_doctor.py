"""``anyrdzv doctor``: whether this node would host the rendezvous store, and why; with
``--etcd``, a report on each member of an etcd cluster and whether they have quorum; or,
for torchrun's ``anyrdzv-etcd`` backend, whether this node can use etcd as the backend
does: etcd reachable, auth, the user's permissions on the run's keys, and the clock skew
between this node and etcd."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from .._core._endpoint import parse_rendezvous_endpoint
from .._core._hostname import explain_machine_hostname, local_identity
from .._etcd._endpoints import gateway_members, parse_etcd_endpoints
from .._etcd._status import ClusterStatus, MemberStatus
from .._etcd._transport import default_context
from .._exceptions import StoreError, StorePermissionError
from .._membership._keys import check_name, check_prefix
from ._errors import is_interrupt, one_line, usage_errors
from ._options import add_endpoint_options, add_etcd_options, etcd_store, tls_context

if TYPE_CHECKING:
    import argparse
    import ssl
    from typing import TextIO

    from .._etcd._store import EtcdStore

#: The torchrun backend whose checks ``--rdzv-backend`` asks for.
ETCD_BACKEND = "anyrdzv-etcd"

#: Clock skew beyond this many seconds (past the error bar) is reported as a warning.
SKEW_WARNING = 1.0

#: How many answers the clock skew is measured from, and how far apart (seconds): an
#: HTTP Date has whole seconds, and answers at other fractions of a second narrow it.
SKEW_SAMPLES = 5
SKEW_SPACING = 0.23


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``doctor`` command to ``commands``, and return its parser."""
    doctor = commands.add_parser(
        "doctor",
        help="tell whether this node would host the rendezvous store, and why; or "
        "report on each member of an etcd cluster (--etcd)",
        description=(
            "Show this machine's identity and decide, as a launcher would, whether the "
            "endpoint's host names this node. Run it on every node of a job that hangs "
            "at rendezvous. With --etcd LIST, report on each etcd member instead: "
            "reachable or not, latency, version, leader, raft term and db size; the exit "
            "status is 1 when the members have no quorum. With --rdzv-backend "
            f"{ETCD_BACKEND} (or an endpoint such as h1:2379,h2:2379 or http://h:2379), "
            "check what that backend needs: etcd reachable with a quorum, auth (--user, "
            "with the password in $ANYRDZV_ETCD_PASSWORD), read and write on the run's "
            "keys (--rdzv-id), and the clock skew between this node and etcd; the exit "
            "status is 1 when one fails."
        ),
    )
    add_endpoint_options(doctor)
    doctor.add_argument(
        "--rdzv-backend",
        default="c10d",
        metavar="NAME",
        help=(
            f"torchrun's backend: {ETCD_BACKEND} checks etcd as that backend uses it (also "
            "chosen by an endpoint that is a list or an http(s):// URL); any other, the "
            "host check (default: c10d)"
        ),
    )
    doctor.add_argument(
        "--rdzv-id",
        metavar="ID",
        help=f"with {ETCD_BACKEND}: the run, whose keys <prefix>/<ID>/ are checked",
    )
    doctor.add_argument(
        "--prefix",
        default="/anyrdzv",
        help=f"with {ETCD_BACKEND}: the key prefix (default /anyrdzv)",
    )
    doctor.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long the host lookup may take (default: 5)",
    )
    doctor.add_argument("--json", action="store_true", help="print JSON")
    add_etcd_options(doctor, required=False)
    doctor.set_defaults(handler=run)
    return doctor


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Diagnose the host, or the etcd cluster with ``--etcd``.

    :return: 0, or 1 when the etcd members have no quorum, 130 on Ctrl-C
    :raises UsageError: if the endpoint or an option is bad
    """
    if args.etcd is not None:
        return _run_etcd(args, out)
    endpoint_text = args.rdzv_endpoint.strip()
    if args.rdzv_backend == ETCD_BACKEND or "," in endpoint_text or "://" in endpoint_text:
        return _run_backend(args, out)
    with usage_errors():
        endpoint = parse_rendezvous_endpoint(args.rdzv_endpoint, args.default_port)

    async def diagnose() -> int:
        identity = await local_identity()
        with usage_errors():
            match = await explain_machine_hostname(endpoint.host, timeout=args.timeout)
        if args.json:
            report = {
                "endpoint": {"host": endpoint.host, "port": endpoint.port, "str": str(endpoint)},
                "identity": {
                    "hostname": identity.hostname,
                    "fqdn": identity.fqdn,
                    "canonical_name": identity.canonical_name,
                    "hostname_addresses": list(identity.hostname_addresses),
                    "interfaces": {k: list(v) for k, v in identity.interfaces.items()},
                },
                "decision": {
                    "matches": match.matches,
                    "rule": match.rule,
                    "detail": match.detail,
                    "addresses": list(match.addresses),
                    "elapsed": match.elapsed,
                },
            }
            json.dump(report, out, indent=2)
            out.write("\n")
            return 0
        verdict = "HOSTS the store" if match.matches else "does NOT host the store"
        width = max((len(name) for name in identity.interfaces), default=0)
        out.write(f"endpoint:   {endpoint}  (host {endpoint.host!r}, port {endpoint.port})\n")
        out.write(f"hostname:   {identity.hostname}\n")
        out.write(f"fqdn:       {identity.fqdn}\n")
        out.write(f"canonical:  {identity.canonical_name or '-'}\n")
        resolved = ", ".join(identity.hostname_addresses) or "nothing"
        out.write(f"hostname resolves to: {resolved}\n")
        out.write("interfaces:\n")
        out.writelines(
            f"  {name:<{width}}  {', '.join(addresses)}\n"
            for name, addresses in identity.interfaces.items()
        )
        out.write(f"decision:   this node {verdict} (matches={match.matches})\n")
        out.write(f"rule:       {match.rule}: {match.detail}\n")
        looked_up = ", ".join(match.addresses) if match.addresses else "(no lookup needed or none)"
        out.write(f"resolved:   {looked_up}\n")
        out.write(f"elapsed:    {match.elapsed * 1000:.2f} ms\n")
        return 0

    return anyio.run(diagnose)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _run_etcd(args: argparse.Namespace, out: TextIO) -> int:
    store = etcd_store(args, tls_context(args))

    async def report() -> ClusterStatus:
        # Opening needs one member to answer; the report wants every one, answered or not.
        try:
            await store.__aenter__()
        except StoreError as exc:
            return ClusterStatus(
                tuple(
                    MemberStatus(str(e), reachable=False, error=str(exc)) for e in store.endpoints
                ),
                quorum=False,
                leader=None,
            )
        try:
            return await store.cluster_status()
        finally:
            await store.aclose()

    try:
        status = anyio.run(report)
    except BaseException as exc:
        if is_interrupt(exc):
            return 130
        raise
    if args.json:
        _write_json(status, out)
    else:
        _write_text(status, out)
    return 0 if status.quorum else 1


def _write_json(status: ClusterStatus, out: TextIO) -> None:
    record = {
        "quorum": status.quorum,
        "leader": status.leader,
        "members": [
            {
                "endpoint": m.endpoint,
                "reachable": m.reachable,
                "latency_ms": None if m.latency is None else round(m.latency * 1000, 3),
                "version": m.version,
                "member_id": None if m.member_id is None else str(m.member_id),
                "leader": m.is_leader,
                "raft_term": m.raft_term,
                "db_size": m.db_size,
                "errors": list(m.errors),
                "error": m.error,
            }
            for m in status.members
        ],
    }
    json.dump(record, out, indent=2)
    out.write("\n")


def _write_text(status: ClusterStatus, out: TextIO) -> None:
    width = max(len("member"), *(len(m.endpoint) for m in status.members))
    out.write(f"{'member':<{width}}  reachable  latency     version  leader  raft term  db size\n")
    for m in status.members:
        latency = "-" if m.latency is None else f"{m.latency * 1000:.1f} ms"
        out.write(
            f"{m.endpoint:<{width}}  {'yes' if m.reachable else 'NO':<9}  {latency:<10}  "
            f"{m.version or '-':<7}  {'yes' if m.is_leader else '-':<6}  "
            f"{'-' if m.raft_term is None else m.raft_term:<9}  {_size(m.db_size)}\n"
        )
    for m in status.members:
        if m.error:
            out.write(f"  {m.endpoint}: {one_line(m.error)}\n")
        out.writelines(f"  {m.endpoint} reports: {error}\n" for error in m.errors)
    answering = sum(1 for m in status.members if m.reachable)
    if status.quorum:
        out.write(
            f"quorum: yes ({answering} of {len(status.members)} members answer; "
            f"leader {status.leader or 'not among the listed members'})\n"
        )
    else:
        out.write(
            f"quorum: NO ({answering} of {len(status.members)} members answer, and no "
            f"majority names one leader)\n"
        )


# -- the anyrdzv-etcd backend ------------------------------------------------------------


@dataclass(frozen=True)
class Skew:
    """How far etcd's clock is from this node's, from the HTTP ``Date`` of its answers.

    :ivar endpoint: the member
    :ivar offset: etcd's time minus this node's, in seconds (the middle of the bound)
    :ivar error: half the width of the bound: the true offset is within ``offset ±
        error``
    :ivar failure: why it could not be measured, if it could not
    """

    endpoint: str
    offset: float | None = None
    error: float | None = None
    failure: str | None = None


def skew_bound(samples: list[tuple[float, float, float]]) -> tuple[float, float] | None:
    """The offset (etcd's clock minus ours) and its error, from answers each given as
    ``(sent, received, date)``: our wall-clock times of the request and of its answer,
    and the answer's ``Date`` (whole seconds). Each answer bounds the offset to
    ``[date - received, date + 1 - sent]``; the bounds of all answers intersect.
    ``None`` if they do not (the clock stepped meanwhile)."""
    low = max(date - received for sent, received, date in samples)
    high = min(date + 1 - sent for sent, received, date in samples)
    if low > high:
        return None
    return (low + high) / 2, (high - low) / 2


async def _measure_skew(
    base_url: str, where: str, tls: ssl.SSLContext | None, timeout: float
) -> Skew:
    samples: list[tuple[float, float, float]] = []
    try:
        async with httpx.AsyncClient(verify=tls or True, timeout=timeout) as client:
            for index in range(SKEW_SAMPLES):
                if index:
                    await anyio.sleep(SKEW_SPACING)
                sent = time.time()
                response = await client.get(base_url + "/version")
                received = time.time()
                date = response.headers.get("date")
                if date is None:
                    return Skew(where, failure="its answer has no Date header")
                samples.append((sent, received, parsedate_to_datetime(date).timestamp()))
    except (httpx.HTTPError, OSError, ValueError, TypeError) as exc:
        return Skew(where, failure=one_line(f"{type(exc).__name__}: {exc}"))
    bound = skew_bound(samples)
    if bound is None:
        return Skew(where, failure="the answers disagree: a clock stepped meanwhile")
    return Skew(where, offset=bound[0], error=bound[1])


@dataclass
class _Check:
    name: str
    ok: bool
    text: str


async def _permissions(store: EtcdStore, run_prefix: str) -> _Check:
    """Read the run's keys, then write, read back and delete a key of our own in its
    adapters' subtree (under a lease of 10 s, in case we die), as the backend does."""
    key = f"{run_prefix}store/anyrdzv-doctor/{socket.gethostname() or 'node'}_{os.getpid()}"
    try:
        await store.get_prefix_kv(run_prefix)
        lease = await store.grant(10)
        try:
            await store.put(key, b"doctor", lease=lease)
            read = await store.get(key)
            await store.delete(key)
        finally:
            await store.revoke(lease)
    except StorePermissionError as exc:
        return _Check("permissions", False, f"FAILED under {run_prefix}: {one_line(str(exc))}")
    except StoreError as exc:
        return _Check("permissions", False, f"not checked: {one_line(str(exc))}")
    if read is None or read.value != b"doctor":
        return _Check(
            "permissions", False, f"FAILED: a key written under {run_prefix} was not read back"
        )
    return _Check("permissions", True, f"read, write, watch and lease under {run_prefix}: OK")


def _run_backend(args: argparse.Namespace, out: TextIO) -> int:
    args.etcd = args.rdzv_endpoint.strip() or "localhost:2379"
    tls = tls_context(args)
    with usage_errors(ValueError, TypeError):
        prefix = check_prefix(args.prefix)
        run_prefix = (
            f"{prefix}/{check_name('--rdzv-id', args.rdzv_id)}/"
            if args.rdzv_id is not None
            else f"{prefix}/anyrdzv-doctor-{os.getpid()}/"
        )
        members = gateway_members(parse_etcd_endpoints(args.etcd, tls))
    store = etcd_store(args, tls)

    async def diagnose() -> tuple[ClusterStatus, list[_Check], list[Skew]]:
        skews: list[Skew] = []
        https = any(url.startswith("https://") for url, _ in members)
        context = tls or (await default_context() if https else None)

        async def skew(base_url: str, where: str) -> None:
            skews.append(await _measure_skew(base_url, where, context, args.timeout))

        found: tuple[ClusterStatus, list[_Check]] | None = None
        async with anyio.create_task_group() as tg:
            for base_url, where in members:
                tg.start_soon(skew, base_url, where)
            try:
                await store.__aenter__()
            except StoreError as exc:
                status = ClusterStatus(
                    tuple(
                        MemberStatus(str(e), reachable=False, error=str(exc))
                        for e in store.endpoints
                    ),
                    quorum=False,
                    leader=None,
                )
                return status, [_Check("auth", False, f"not checked: {one_line(str(exc))}")], skews
            try:
                found = (
                    await store.cluster_status(),
                    await _auth_and_permissions(store, args.user, run_prefix),
                )
            finally:
                await store.aclose()
        assert found is not None  # the task group re-raises what its block raised
        order = [where for _, where in members]
        skews.sort(key=lambda each: order.index(each.endpoint))
        status, checks = found
        return status, checks, skews

    try:
        status, checks, skews = anyio.run(diagnose)
    except BaseException as exc:
        if is_interrupt(exc):
            return 130
        raise
    answering = sum(1 for m in status.members if m.reachable)
    reach = _Check(
        "etcd",
        status.quorum,
        f"{answering} of {len(status.members)} member(s) answer; "
        + (f"quorum, leader {status.leader or 'not listed'}" if status.quorum else "NO quorum"),
    )
    checks = [reach, *checks]
    ok = all(check.ok for check in checks)
    if args.json:
        record: dict[str, Any] = {
            "backend": ETCD_BACKEND,
            "endpoint": args.etcd,
            "prefix": run_prefix,
            "ok": ok,
            "checks": {check.name: {"ok": check.ok, "text": check.text} for check in checks},
            "members": [
                {
                    "endpoint": m.endpoint,
                    "reachable": m.reachable,
                    "version": m.version,
                    "error": m.error,
                }
                for m in status.members
            ],
            "clock": [
                {"endpoint": s.endpoint, "offset": s.offset, "error": s.error, "failure": s.failure}
                for s in skews
            ],
        }
        json.dump(record, out, indent=2)
        out.write("\n")
        return 0 if ok else 1
    out.write(f"backend:     {ETCD_BACKEND} on etcd {args.etcd}, keys under {run_prefix}\n")
    out.writelines(f"{check.name + ':':<12} {check.text}\n" for check in checks)
    for m in status.members:
        if m.error:
            out.write(f"  {m.endpoint}: {one_line(m.error)}\n")
    out.writelines(f"{'clock:':<12} {_skew_text(each)}\n" for each in skews)
    out.write(f"verdict:     {'OK' if ok else 'FAILED'}\n")
    return 0 if ok else 1


def _skew_text(skew: Skew) -> str:
    if skew.offset is None or skew.error is None:
        return f"{skew.endpoint}: not measured ({skew.failure})"
    ahead = "ahead of" if skew.offset > 0 else "behind"
    text = (
        f"{skew.endpoint} is {abs(skew.offset):.2f} s {ahead} this node "
        f"(± {skew.error:.2f} s, from the Date of {SKEW_SAMPLES} answers)"
    )
    if abs(skew.offset) - skew.error > SKEW_WARNING:
        text += (
            f"; WARNING: over {SKEW_WARNING:g} s. anyrdzv's leases and timeouts are timed by "
            "etcd and by this node's monotonic clock, so the rendezvous works, but logs and "
            "TLS certificate dates do not line up: sync the clocks (NTP)"
        )
    return text


async def _auth_and_permissions(
    store: EtcdStore, user: str | None, run_prefix: str
) -> list[_Check]:
    try:
        await store.get(run_prefix)
    except StorePermissionError as exc:
        message = one_line(str(exc))
        if user is None and "user name is empty" in message:
            return [
                _Check(
                    "auth",
                    False,
                    "etcd has auth ON, and no --user was given: pass --user NAME, with the "
                    "password in $ANYRDZV_ETCD_PASSWORD (for torchrun: --rdzv-conf user=NAME)",
                )
            ]
        if "permission denied" not in message:
            return [_Check("auth", False, f"FAILED: {message}")]
        auth = _Check("auth", True, f"on; user {user!r} logged in")
        return [auth, _Check("permissions", False, f"FAILED under {run_prefix}: {message}")]
    except StoreError as exc:
        return [_Check("auth", False, f"not checked: {one_line(str(exc))}")]
    auth = _Check("auth", True, "off" if user is None else f"on; user {user!r} logged in")
    return [auth, await _permissions(store, run_prefix)]
