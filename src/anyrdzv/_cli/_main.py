"""The ``anyrdzv`` command line: a thin layer over the library."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import anyio

from .._checks import cut, echo
from .._core._config import parse_rendezvous_config
from .._core._endpoint import parse_rendezvous_endpoint, try_parse_port
from .._core._hostname import explain_machine_hostname, local_identity
from .._core._public import __version__
from .._etcd._status import ClusterStatus, MemberStatus
from .._etcd._store import EtcdStore
from .._etcd._tls import client_context
from .._exceptions import StoreError
from .._membership._keys import members_prefix
from .._membership._members import MembersSnapshot, members, watch_members
from .._rendezvous._report import (
    MalformedRun,
    NodeReport,
    RunReport,
    read_run,
    run_prefix,
    watch_run,
)

if TYPE_CHECKING:
    import ssl

Command = Callable[[argparse.Namespace, TextIO], int]

logger = logging.getLogger(__name__)


PASSWORD_VARIABLE = "ANYRDZV_ETCD_PASSWORD"

# How much of a message, or of a value quoted in one, reaches the terminal.
_MAX_MESSAGE = 1000

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class UsageError(Exception):
    """Bad input from the command line: printed without a traceback, exit status 2."""


def _one_line(message: str, limit: int = _MAX_MESSAGE) -> str:
    """Return ``message`` on one line, control characters escaped, at most ``limit`` long."""
    message = cut(message, limit)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one bounded line: argparse echoes values whole."""

    def error(self, message: str) -> NoReturn:
        super().error(_one_line(message))


def _port(text: str) -> int:
    port = try_parse_port(text.strip())
    if port is None or port > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {echo(text)}")
    return port


def _level(text: str) -> str:
    level = text.strip().upper()
    if level not in _LEVELS:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(_LEVELS)}, got {echo(text)}")
    return level


def _add_logging_options(parser: argparse.ArgumentParser, prefix: str) -> None:
    # The options are taken both before and after the command, into separate
    # attributes: a sub-parser would otherwise overwrite what the main one read.
    parser.add_argument(
        "-v",
        "--verbose",
        dest=f"{prefix}verbose",
        action="count",
        default=0,
        help="log more to stderr: -v for INFO, -vv for DEBUG (default: WARNING)",
    )
    parser.add_argument(
        "--log-level",
        dest=f"{prefix}log_level",
        type=_level,
        metavar="LEVEL",
        help=f"log at this level to stderr, one of {', '.join(_LEVELS)}; overrides -v",
    )


def log_level(args: argparse.Namespace) -> int:
    """Return the logging level the parsed arguments ask for: WARNING unless told.

    ``--log-level`` wins over ``-v``; the last ``--log-level`` given wins, and ``-v``
    counts add up, before and after the command.
    """
    name: str | None = getattr(args, "sub_log_level", None) or args.log_level
    if name is not None:
        level: int = getattr(logging, name)
        return level
    verbose = args.verbose + getattr(args, "sub_verbose", 0)
    if verbose >= 2:
        return logging.DEBUG
    return logging.INFO if verbose == 1 else logging.WARNING


def _add_endpoint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rdzv-endpoint",
        default="",
        metavar="HOST[:PORT]",
        help="the rendezvous endpoint, as torchrun takes it (default: localhost)",
    )
    parser.add_argument(
        "--default-port",
        type=_port,
        default=29400,
        metavar="PORT",
        help="the port when the endpoint names none (default: 29400, as the c10d backend)",
    )


def _cmd_parse(args: argparse.Namespace, out: TextIO) -> int:
    try:
        endpoint = parse_rendezvous_endpoint(args.rdzv_endpoint, args.default_port)
        config = parse_rendezvous_config(args.rdzv_conf)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        json.dump(
            {
                "host": endpoint.host,
                "port": endpoint.port,
                "endpoint": str(endpoint),
                "config": config,
            },
            out,
        )
        out.write("\n")
        return 0
    out.write(f"host:     {endpoint.host}\n")
    out.write(f"port:     {endpoint.port}\n")
    out.write(f"endpoint: {endpoint}\n")
    out.write("config:" + ("" if config else "   (empty)") + "\n")
    out.writelines(f"  {key} = {value}\n" for key, value in config.items())
    return 0


def _cmd_doctor(args: argparse.Namespace, out: TextIO) -> int:
    if args.etcd is not None:
        return _cmd_doctor_etcd(args, out)
    try:
        endpoint = parse_rendezvous_endpoint(args.rdzv_endpoint, args.default_port)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    async def diagnose() -> int:
        identity = await local_identity()
        try:
            match = await explain_machine_hostname(endpoint.host, timeout=args.timeout)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
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


def _cmd_doctor_etcd(args: argparse.Namespace, out: TextIO) -> int:
    ssl_context = _ssl_context(args)
    store = _etcd_store(args, ssl_context)

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
        if _is_interrupt(exc):
            return 130
        raise
    if args.json:
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
    else:
        width = max(len("member"), *(len(m.endpoint) for m in status.members))
        out.write(
            f"{'member':<{width}}  reachable  latency     version  leader  raft term  db size\n"
        )
        for m in status.members:
            latency = "-" if m.latency is None else f"{m.latency * 1000:.1f} ms"
            out.write(
                f"{m.endpoint:<{width}}  {'yes' if m.reachable else 'NO':<9}  {latency:<10}  "
                f"{m.version or '-':<7}  {'yes' if m.is_leader else '-':<6}  "
                f"{'-' if m.raft_term is None else m.raft_term:<9}  {_size(m.db_size)}\n"
            )
        for m in status.members:
            if m.error:
                out.write(f"  {m.endpoint}: {_one_line(m.error)}\n")
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
    return 0 if status.quorum else 1


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """Build the TLS context that ``--cacert``, ``--cert`` and ``--key`` ask for, if any.

    Without them, the store itself decides: TLS with the system's CAs for an
    ``https://`` endpoint, plain HTTP otherwise.

    :raises UsageError: naming the file, if one is missing, unreadable or not PEM
    """
    key_option, key_file = ("--cert", args.cert) if args.key is None else ("--key", args.key)

    def passphrase() -> str:
        # Rather than OpenSSL's own prompt, which waits on /dev/tty even in a job.
        if sys.stdin is None or not sys.stdin.isatty():
            raise UsageError(
                f"{key_option} {echo(key_file)}: the key is encrypted, and stdin "
                "is not a terminal to ask for its passphrase"
            )
        try:
            return getpass.getpass(f"passphrase for {key_file}: ")
        except EOFError:
            raise UsageError("no passphrase given") from None

    try:
        return client_context(
            args.cacert,
            args.cert,
            args.key,
            names=("--cacert", "--cert", "--key"),
            passphrase=passphrase,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _credentials(user: str | None, command: str) -> tuple[str | None, str | None]:
    """Split ``--user`` into a name and a password, which may come from elsewhere.

    The password is, in order: after the first ``:`` (visible in ``ps``, so a warning
    says so), in ``$ANYRDZV_ETCD_PASSWORD``, or typed at a prompt if stdin is a TTY.

    :raises UsageError: if the name is empty, or no password can be found
    """
    if user is None:
        return None, None
    name, sep, password = user.partition(":")
    if not name:
        # Not echoed: what follows the ':' is a password.
        raise UsageError("--user needs a user name before any ':'")
    if sep:
        sys.stderr.write(
            f"anyrdzv {command}: warning: --user NAME:PASSWORD shows the password to everyone on "
            f"this node (ps); use --user NAME with ${PASSWORD_VARIABLE}, or at the prompt\n"
        )
        return name, password
    from_environment = os.environ.get(PASSWORD_VARIABLE)
    if from_environment:
        return name, from_environment
    if sys.stdin is not None and sys.stdin.isatty():
        try:
            return name, getpass.getpass(f"etcd password for {name}: ")
        except EOFError:
            raise UsageError("no password given") from None
    raise UsageError(
        f"--user {echo(name)} needs a password: set ${PASSWORD_VARIABLE}, "
        "or run on a terminal to be asked for it"
    )


def _payload_text(payload: bytes) -> str:
    return payload.decode("utf-8", errors="backslashreplace")


def _cmd_members(args: argparse.Namespace, out: TextIO) -> int:
    ssl_context = _ssl_context(args)
    try:
        members_prefix(args.group, args.prefix)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    store = _etcd_store(args, ssl_context)

    def show(item: object) -> None:
        if isinstance(item, MembersSnapshot):
            if args.json:
                record = {
                    "group": args.group,
                    "revision": item.revision,
                    "members": {k: _payload_text(v) for k, v in sorted(item.members.items())},
                }
                out.write(json.dumps(record) + "\n")
            else:
                out.write(
                    f"group {args.group!r} at revision {item.revision}: "
                    f"{len(item.members)} member(s)\n"
                )
                out.writelines(
                    f"  {name}  {_payload_text(payload)}\n"
                    for name, payload in sorted(item.members.items())
                )
        else:
            assert hasattr(item, "type")
            event: Any = item
            if args.json:
                out.write(
                    json.dumps(
                        {
                            "event": event.type.value,
                            "member": event.member,
                            "payload": _payload_text(event.payload),
                            "revision": event.revision,
                        }
                    )
                    + "\n"
                )
            else:
                out.write(f"{event.type.value:<6} {event.member}  (revision {event.revision})\n")
        out.flush()

    async def follow() -> int:
        async with store:
            if not args.watch:
                show(await members(store, args.group, prefix=args.prefix))
                return 0
            async with aclosing(watch_members(store, args.group, prefix=args.prefix)) as items:
                async for item in items:
                    show(item)
        return 0

    return _run_store_command(args, out, follow, describe=_failure)


def _node_record(node: NodeReport) -> dict[str, Any]:
    return {"node": node.node, "alive": node.alive, "round": node.round, "ttl": node.ttl}


def _rendezvous_record(report: RunReport) -> dict[str, Any]:
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
            "previous": None if state.previous is None else list(state.previous),
        },
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


def _rendezvous_text(report: RunReport) -> str:
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
            if state.previous is not None:
                previous = ", ".join(state.previous) or "none alive"
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


def _cmd_rendezvous(args: argparse.Namespace, out: TextIO) -> int:
    ssl_context = _ssl_context(args)
    try:
        run_prefix(args.run_id, args.prefix)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    store = _etcd_store(args, ssl_context)

    def show(report: RunReport) -> None:
        if args.json:
            out.write(json.dumps(_rendezvous_record(report)) + "\n")
        else:
            out.write(_rendezvous_text(report))
        out.flush()

    async def follow() -> int:
        async with store:
            if not args.watch:
                show(await read_run(store, args.run_id, prefix=args.prefix))
                return 0
            async with aclosing(watch_run(store, args.run_id, prefix=args.prefix)) as reports:
                async for report in reports:
                    show(report)
        return 0

    def describe(exc: BaseException) -> str | None:
        return str(exc) if isinstance(exc, MalformedRun) else _failure(exc)

    return _run_store_command(
        args, out, follow, describe=describe, context=f"run {args.run_id!r}: "
    )


def _etcd_store(args: argparse.Namespace, ssl_context: ssl.SSLContext | None) -> EtcdStore:
    """The store that ``--etcd``, ``--user`` and ``--timeout`` name (TLS is ``ssl_context``).

    :raises UsageError: if the endpoint list or an option is bad
    """
    username, password = _credentials(args.user, args.command)
    try:
        return EtcdStore(
            args.etcd, ssl=ssl_context, username=username, password=password, timeout=args.timeout
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None


def _run_store_command(
    args: argparse.Namespace,
    out: TextIO,
    follow: Callable[[], Awaitable[int]],
    *,
    describe: Callable[[BaseException], str | None],
    context: str = "",
) -> int:
    """Run ``follow`` in a new event loop; a store failure is one line on stderr (exit
    1), Ctrl-C exits 130, and anything ``describe`` cannot name is a bug, raised."""
    try:
        return anyio.run(follow)
    except BaseException as exc:
        if _is_interrupt(exc):
            return 130
        error = describe(exc)
        if error is None:
            raise
        logger.debug("anyrdzv %s failed", args.command, exc_info=exc)
        out.flush()
        sys.stderr.write(f"anyrdzv {args.command}: error: {context}{_one_line(error)}\n")
        return 1


def _failure(exc: BaseException) -> str | None:
    """Say what went wrong, if ``exc`` (or every exception in its group) is a store
    error, bad data (``ValueError``, ``TypeError``) or a network fault (``OSError``);
    else return ``None``: a bug, whose traceback is shown.
    """
    inner: tuple[BaseException, ...] = getattr(exc, "exceptions", ())
    if inner:
        found = [_failure(e) for e in inner]
        return None if None in found else "; ".join(m for m in found if m)
    if isinstance(exc, StoreError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, ValueError | TypeError | OSError):
        # Not a StoreError: the store let it through; its type helps the bug report.
        return f"{type(exc).__name__}: {exc}"
    return None


def _is_interrupt(exc: BaseException) -> bool:
    inner: tuple[BaseException, ...] = getattr(exc, "exceptions", ())
    if isinstance(exc, KeyboardInterrupt):
        return True
    return bool(inner) and all(_is_interrupt(e) for e in inner)


def _add_etcd_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--etcd",
        required=required,
        metavar="LIST",
        help=(
            "etcd's members, comma-separated: HOST[:PORT] (default port 2379), "
            "http://HOST:PORT or https://HOST:PORT"
        ),
    )
    parser.add_argument(
        "--cacert", metavar="FILE", help="trust the CA certificates in this PEM file: use HTTPS"
    )
    parser.add_argument(
        "--cert",
        metavar="FILE",
        help="present this PEM client certificate (and its key, without --key): use HTTPS",
    )
    parser.add_argument("--key", metavar="FILE", help="the PEM private key of --cert")
    parser.add_argument(
        "--user",
        metavar="NAME",
        help=(
            f"the etcd user; the password comes from ${PASSWORD_VARIABLE} or a prompt "
            "(NAME:PASSWORD works too, but shows it to everyone in ps)"
        ),
    )


def build_parser() -> argparse.ArgumentParser:
    """Build the ``anyrdzv`` argument parser, with one sub-parser per command."""
    parser = _Parser(
        prog="anyrdzv",
        description="PyTorch's elastic-rendezvous utilities for async code.",
    )
    parser.add_argument("--version", action="version", version=f"anyrdzv {__version__}")
    _add_logging_options(parser, "")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    parse = commands.add_parser(
        "parse",
        help="parse torchrun's --rdzv-endpoint and --rdzv-conf",
        description="Parse torchrun's --rdzv-endpoint and --rdzv-conf as torch would.",
    )
    _add_endpoint_options(parse)
    parse.add_argument(
        "--rdzv-conf", default="", metavar="K=V,...", help="the rendezvous configuration"
    )
    parse.add_argument("--json", action="store_true", help="print JSON")
    parse.set_defaults(handler=_cmd_parse)

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
    _add_endpoint_options(doctor)
    doctor.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long the host lookup may take (default: 5)",
    )
    doctor.add_argument("--json", action="store_true", help="print JSON")
    _add_etcd_options(doctor, required=False)
    doctor.set_defaults(handler=_cmd_doctor)

    group = commands.add_parser(
        "members",
        help="list a group's members on etcd, or follow them joining and leaving",
        description=(
            "List the members that heartbeat into a group on etcd, or follow them. "
            f"With --user NAME, the password comes from ${PASSWORD_VARIABLE}, or else "
            "from a prompt when stdin is a terminal."
        ),
    )
    _add_etcd_options(group, required=True)
    group.add_argument("--group", required=True, help="the group")
    group.add_argument("--prefix", default="/anyrdzv", help="the key prefix (default /anyrdzv)")
    group.add_argument("--watch", action="store_true", help="follow JOINED and LEFT events")
    group.add_argument("--json", action="store_true", help="print JSON, one object a line")
    group.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long any one request to etcd may take (default: 5)",
    )
    group.set_defaults(handler=_cmd_members)

    run = commands.add_parser(
        "rendezvous",
        help="show a rendezvous run on etcd: its round, participants and waiting nodes",
        description=(
            "Show a run of anyrdzv's Rendezvous on etcd, to debug a job that hangs: the "
            "round and whether it is complete, its participants with their ranks and the "
            "remaining TTL of their leases, the nodes waiting, and whether the run is "
            "closed. With --watch, print it again on every change of the run's keys. "
            f"With --user NAME, the password comes from ${PASSWORD_VARIABLE}, or else "
            "from a prompt when stdin is a terminal."
        ),
    )
    _add_etcd_options(run, required=True)
    run.add_argument("--run-id", required=True, help="the run")
    run.add_argument("--prefix", default="/anyrdzv", help="the key prefix (default /anyrdzv)")
    run.add_argument("--watch", action="store_true", help="print it again on every change")
    run.add_argument("--json", action="store_true", help="print JSON, one object a report")
    run.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long any one request to etcd may take (default: 5)",
    )
    run.set_defaults(handler=_cmd_rendezvous)
    for command in (parse, doctor, group, run):
        _add_logging_options(command, "sub_")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line, and return its exit status.

    Logging goes to stderr, at WARNING unless ``-v`` or ``--log-level`` says otherwise,
    through :func:`logging.basicConfig`: a program that calls this function and has
    set up logging already keeps its own.

    :param argv: the arguments, without the program name (default: ``sys.argv[1:]``)
    :return: 0 on success, 1 when the store fails, 2 on bad input, 130 on Ctrl-C
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=log_level(args), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    handler: Command = args.handler
    try:
        return handler(args, sys.stdout)
    except UsageError as exc:
        parser.exit(2, f"anyrdzv {args.command}: error: {_one_line(str(exc))}\n")
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``anyrdzv ... | head``): stop quietly, as cat does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
