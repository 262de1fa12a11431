"""``anyrdzv rendezvous``: a run of the Rendezvous on etcd (its round, participants and
waiting nodes, and their leases, and the torchrun backend's bootstrap), once or
(``--watch``) on every change, in words or as JSON lines."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .._rendezvous._report import (
    MalformedRun,
    NodeReport,
    RunReport,
    read_run,
    run_prefix,
    watch_run,
)
from ._errors import describe_failure
from ._options import add_reader_options
from ._secrets import PASSWORD_SOURCES
from ._store_command import read_or_watch

if TYPE_CHECKING:
    import argparse
    from typing import TextIO


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``rendezvous`` command to ``commands``, and return its parser."""
    run_parser = commands.add_parser(
        "rendezvous",
        help="show a rendezvous run on etcd: its round, participants and waiting nodes",
        description=(
            "Show a run of anyrdzv's Rendezvous on etcd, to debug a job that hangs: the "
            "round and whether it is complete, its participants with their ranks and the "
            "remaining TTL of their leases, the nodes waiting, whether the run is closed, "
            "and (for torchrun) whether rank 0 published the round's MASTER_ADDR. With "
            "--watch, print it again, with the time, each time it changes (not for the "
            "torch store's own writes, nor for a lease's TTL running down). "
            f"{PASSWORD_SOURCES}"
        ),
    )
    add_reader_options(
        run_parser,
        "--run-id",
        subject_help="the run",
        watch="print it again, with the time, each time it changes",
        json="print JSON, one object a report",
    )
    run_parser.set_defaults(handler=run)
    return run_parser


def _node_record(node: NodeReport) -> dict[str, Any]:
    return {
        "node": node.node,
        "alive": node.alive,
        "round": node.round,
        "ttl": node.ttl,
        "health": node.health,
        "health_reason": node.health_reason,
        "topology": node.topology,
        "spare": node.spare,
    }


def _report_record(report: RunReport) -> dict[str, Any]:
    """The JSON object that ``--json`` prints for ``report``."""
    return {
        "run_id": report.run_id,
        "revision": report.revision,
        "keys": report.keys,
        "state": None
        if report.round is None
        else {
            "round": report.round,
            "complete": report.complete,
            "closed": report.closed,
            "min_nodes": report.min_nodes,
            "max_nodes": report.max_nodes,
            # anyrdzv's own, only when set: a consumer of the torch-like state sees no change
            **({} if report.max_rounds is None else {"max_rounds": report.max_rounds}),
            **({} if report.reason is None else {"reason": report.reason}),
        },
        "previous": None if report.previous is None else list(report.previous),
        "coordinator": report.coordinator,
        "participants": [
            {"rank": rank, **_node_record(node)} for rank, node in enumerate(report.participants)
        ],
        "joined": [_node_record(node) for node in report.joined],
        "waiting": [_node_record(node) for node in report.waiting],
        "num_nodes_waiting": report.num_nodes_waiting,
        "others": [_node_record(node) for node in report.others],
        "bootstrap": None
        if report.bootstrap is None
        else {
            "round": report.bootstrap.round,
            "key": report.bootstrap.key,
            "master_addr": report.bootstrap.master_addr,
            "master_port": report.bootstrap.master_port,
        },
    }


def _sameness(record: dict[str, Any]) -> str:
    """What must change for ``--watch`` to print a report again: the record but its
    revision and the TTLs (whether a node has a live lease counts)."""

    def node(each: dict[str, Any]) -> dict[str, Any]:
        return {**each, "ttl": each["ttl"] is not None}

    same = {key: value for key, value in record.items() if key not in ("revision", "keys")}
    for field in ("participants", "joined", "waiting", "others"):
        same[field] = [node(each) for each in record[field]]
    return json.dumps(same, sort_keys=True)


def _lease_text(node: NodeReport) -> str:
    """The node's lease, its labels, and its health check's outcome if it reported
    one."""
    if node.health is None:
        health = ""
    elif node.health:
        health = "  health check passing"
    else:
        health = f"  health check FAILING: {node.health_reason or 'no reason given'}"
    labels = ("" if node.topology is None else f"  topology {node.topology}") + (
        "  spare" if node.spare else ""
    )
    if node.ttl is not None:
        return f"lease TTL {node.ttl} s{labels}{health}"
    return (
        (
            "no live lease"
            if node.alive or node.round is not None
            else "GONE: no key left, its lease has expired"
        )
        + labels
        + health
    )


def _report_text(report: RunReport) -> str:
    """The lines that the command prints for ``report``, each ending in a newline."""
    head = f"run {report.run_id!r} at revision {report.revision}"
    if report.keys == 0:
        return f"{head}: no state (no key under {report.prefix})\n"
    lines: list[str] = []
    if report.round is None:
        lines.append(f"{head}: no state yet ({report.keys} key(s) under {report.prefix})")
    else:
        lines.append(
            f"{head}: round {report.round}, {'complete' if report.complete else 'open'}, "
            f"{'CLOSED' if report.closed else 'not closed'}; "
            f"min_nodes {report.min_nodes}, max_nodes {report.max_nodes}"
            + ("" if report.max_rounds is None else f", max_rounds {report.max_rounds}")
        )
        if report.reason is not None:
            lines.append(f"closed: {report.reason}")
        if report.complete:
            lines.append(f"participants of round {report.round} ({len(report.participants)}):")
            lines.extend(
                f"  rank {rank}  {node.node}  {_lease_text(node)}"
                for rank, node in enumerate(report.participants)
            )
            lines.append(
                f"waiting for round {report.round + 1}: {len(report.waiting)} node(s) joined it, "
                f"{report.num_nodes_waiting} counted by num_nodes_waiting()"
            )
            lines.extend(f"  {node.node}  {_lease_text(node)}" for node in report.waiting)
        else:
            if report.previous is not None:
                previous = ", ".join(report.previous) or "none alive"
                lines.append(f"live nodes of round {report.round - 1}: {previous}")
            lines.append(
                f"joined round {report.round}, waiting for it to complete: "
                f"{len(report.joined)} node(s), min_nodes {report.min_nodes}"
            )
            lines.extend(f"  {node.node}  {_lease_text(node)}" for node in report.joined)
    bootstrap = report.bootstrap
    if bootstrap is not None:
        head = f"torchrun bootstrap of round {bootstrap.round}:"
        rank0 = report.participants[0]
        if bootstrap.master_addr is not None:
            lines.append(
                f"{head} MASTER_ADDR {bootstrap.master_addr}, MASTER_PORT "
                f"{bootstrap.master_port or 'missing'}"
            )
        elif rank0.alive or rank0.ttl is not None:
            lines.append(
                f"{head} MASTER_ADDR not published yet by rank 0, {rank0.node} "
                f"(key {bootstrap.key})"
            )
        else:
            lines.append(
                f"{head} MASTER_ADDR MISSING (key {bootstrap.key}), and rank 0, "
                f"{rank0.node}, is GONE: the other participants cannot start their workers "
                "(they take the next round)"
            )
    if report.others:
        lines.append(f"other nodes ({len(report.others)}):")
        for node in report.others:
            wants = "no join key" if node.round is None else f"joined round {node.round}"
            alive = "" if node.alive else ", no heartbeat"
            lines.append(f"  {node.node}  {wants}{alive}  {_lease_text(node)}")
    return "".join(f"{line}\n" for line in lines)


def _describe(exc: BaseException) -> str | None:
    return str(exc) if isinstance(exc, MalformedRun) else describe_failure(exc)


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Print the run's report, or (``--watch``) print it on every change until SIGTERM or
    Ctrl-C.

    :return: 0, 1 when the store fails or a key of the run is malformed, 130 on Ctrl-C,
        143 on SIGTERM
    :raises UsageError: if the run id or an option is bad
    """

    last: list[str] = []  # under --watch: what the last report printed showed

    def show(report: RunReport) -> None:
        record = _report_record(report)
        if not args.watch:
            out.write(json.dumps(record) + "\n" if args.json else _report_text(report))
            return
        same = _sameness(record)
        if last and last[0] == same:
            return
        last[:] = [same]
        now = datetime.now().astimezone().isoformat(timespec="milliseconds")
        if args.json:
            out.write(json.dumps({"time": now, **record}) + "\n")
        else:
            out.write(f"[{now}] {_report_text(report)}")

    return read_or_watch(
        args,
        out,
        check=lambda: run_prefix(args.run_id, args.prefix),
        read=lambda store: read_run(store, args.run_id, prefix=args.prefix),
        watch=lambda store: watch_run(store, args.run_id, prefix=args.prefix),
        show=show,
        describe=_describe,
        context=f"run {args.run_id!r}: ",
    )
