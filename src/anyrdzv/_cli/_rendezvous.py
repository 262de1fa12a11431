"""``anyrdzv rendezvous``: a run of the Rendezvous on etcd (its round, participants and
waiting nodes, and their leases), once or (``--watch``) on every change, in words or as
JSON lines."""

from __future__ import annotations

import json
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
            "remaining TTL of their leases, the nodes waiting, and whether the run is "
            "closed. With --watch, print it again on every change of the run's keys. "
            f"{PASSWORD_SOURCES}"
        ),
    )
    add_reader_options(
        run_parser,
        "--run-id",
        subject_help="the run",
        watch="print it again on every change",
        json="print JSON, one object a report",
    )
    run_parser.set_defaults(handler=run)
    return run_parser


def _node_record(node: NodeReport) -> dict[str, Any]:
    return {"node": node.node, "alive": node.alive, "round": node.round, "ttl": node.ttl}


def _report_record(report: RunReport) -> dict[str, Any]:
    """The JSON object that ``--json`` prints for ``report``."""
    state = report.state
    return {
        "run_id": report.run_id,
        "revision": report.revision,
        "keys": report.keys,
        "state": None
        if state is None
        else {
            "round": state.round,
            "complete": state.complete,
            "closed": state.closed,
            "min_nodes": state.min_nodes,
            "max_nodes": state.max_nodes,
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
    }


def _lease_text(node: NodeReport) -> str:
    if node.ttl is not None:
        return f"lease TTL {node.ttl} s"
    return (
        "no live lease"
        if node.alive or node.round is not None
        else "GONE: no key left, its lease has expired"
    )


def _report_text(report: RunReport) -> str:
    """The lines that the command prints for ``report``, each ending in a newline."""
    state = report.state
    head = f"run {report.run_id!r} at revision {report.revision}"
    if report.keys == 0:
        return f"{head}: no state (no key under {report.prefix})\n"
    lines: list[str] = []
    if state is None:
        lines.append(f"{head}: no state yet ({report.keys} key(s) under {report.prefix})")
    else:
        lines.append(
            f"{head}: round {state.round}, {'complete' if state.complete else 'open'}, "
            f"{'CLOSED' if state.closed else 'not closed'}; "
            f"min_nodes {state.min_nodes}, max_nodes {state.max_nodes}"
        )
        if state.complete:
            lines.append(f"participants of round {state.round} ({len(report.participants)}):")
            lines.extend(
                f"  rank {rank}  {node.node}  {_lease_text(node)}"
                for rank, node in enumerate(report.participants)
            )
            lines.append(
                f"waiting for round {state.round + 1}: {len(report.waiting)} node(s) joined it, "
                f"{report.num_nodes_waiting} counted by num_nodes_waiting()"
            )
            lines.extend(f"  {node.node}  {_lease_text(node)}" for node in report.waiting)
        else:
            if report.previous is not None:
                previous = ", ".join(report.previous) or "none alive"
                lines.append(f"live nodes of round {state.round - 1}: {previous}")
            lines.append(
                f"joined round {state.round}, waiting for it to complete: "
                f"{len(report.joined)} node(s), min_nodes {state.min_nodes}"
            )
            lines.extend(f"  {node.node}  {_lease_text(node)}" for node in report.joined)
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
    """Print the run's report, or (``--watch``) print it on every change until Ctrl-C.

    :return: 0, 1 when the store fails or a key of the run is malformed, 130 on Ctrl-C
    :raises UsageError: if the run id or an option is bad
    """

    def show(report: RunReport) -> None:
        out.write(json.dumps(_report_record(report)) + "\n" if args.json else _report_text(report))

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
