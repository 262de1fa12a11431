"""``anyrdzv doctor``: whether this node would host the rendezvous store, and why; or,
with ``--etcd``, a report on each member of an etcd cluster and whether they have quorum."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import anyio

from .._core._endpoint import parse_rendezvous_endpoint
from .._core._hostname import explain_machine_hostname, local_identity
from .._etcd._status import ClusterStatus, MemberStatus
from .._exceptions import StoreError
from ._errors import is_interrupt, one_line, usage_errors
from ._options import add_endpoint_options, add_etcd_options, etcd_store, tls_context

if TYPE_CHECKING:
    import argparse
    from typing import TextIO


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
            "status is 1 when the members have no quorum."
        ),
    )
    add_endpoint_options(doctor)
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
