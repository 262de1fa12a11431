"""The ``anyrdzv`` command line: a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
from collections.abc import Callable, Sequence
from contextlib import aclosing
from typing import Any, TextIO

import anyio

from ._config import parse_rendezvous_config
from ._endpoint import parse_rendezvous_endpoint
from ._etcd._store import EtcdStore
from ._hostname import explain_machine_hostname, local_identity
from ._keys import members_prefix
from ._members import MembersSnapshot, members, watch_members
from ._store import StoreError

Command = Callable[[argparse.Namespace, TextIO], int]


class UsageError(Exception):
    """Bad input from the command line: printed without a traceback, exit status 2."""


def _add_endpoint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rdzv-endpoint",
        default="",
        metavar="HOST[:PORT]",
        help="the rendezvous endpoint, as torchrun takes it (default: localhost)",
    )
    parser.add_argument(
        "--default-port",
        type=int,
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


def _payload_text(payload: bytes) -> str:
    return payload.decode("utf-8", errors="backslashreplace")


def _cmd_members(args: argparse.Namespace, out: TextIO) -> int:
    ssl_context = None
    if args.cacert:
        ssl_context = ssl.create_default_context(cafile=args.cacert)
    username = password = None
    if args.user:
        username, sep, password = args.user.partition(":")
        if not sep:
            raise UsageError("--user takes NAME:PASSWORD")
    try:
        members_prefix(args.group, args.prefix)
        store = EtcdStore(
            args.etcd, ssl=ssl_context, username=username, password=password, timeout=args.timeout
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None

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
        try:
            async with store:
                if not args.watch:
                    show(await members(store, args.group, prefix=args.prefix))
                    return 0
                async with aclosing(watch_members(store, args.group, prefix=args.prefix)) as items:
                    async for item in items:
                        show(item)
        except StoreError as exc:
            out.flush()
            sys.stderr.write(f"anyrdzv members: error: {exc}\n")
            return 1
        return 0

    try:
        return anyio.run(follow)
    except BaseException as exc:
        if _is_interrupt(exc):
            return 130
        raise


def _is_interrupt(exc: BaseException) -> bool:
    inner: tuple[BaseException, ...] = getattr(exc, "exceptions", ())
    if isinstance(exc, KeyboardInterrupt):
        return True
    return bool(inner) and all(_is_interrupt(e) for e in inner)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``anyrdzv`` argument parser, with one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="anyrdzv",
        description="PyTorch's elastic-rendezvous utilities for async code.",
    )
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
        help="tell whether this node would host the rendezvous store, and why",
        description=(
            "Show this machine's identity and decide, as a launcher would, whether the "
            "endpoint's host names this node. Run it on every node of a job that hangs "
            "at rendezvous."
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
    doctor.set_defaults(handler=_cmd_doctor)

    group = commands.add_parser(
        "members",
        help="list a group's members on etcd, or follow them joining and leaving",
        description="List the members that heartbeat into a group on etcd, or follow them.",
    )
    group.add_argument("--etcd", required=True, metavar="HOST[:PORT]", help="etcd's endpoint")
    group.add_argument("--group", required=True, help="the group")
    group.add_argument("--prefix", default="/anyrdzv", help="the key prefix (default /anyrdzv)")
    group.add_argument("--watch", action="store_true", help="follow JOINED and LEFT events")
    group.add_argument("--json", action="store_true", help="print JSON, one object a line")
    group.add_argument("--cacert", metavar="FILE", help="trust this CA: use HTTPS")
    group.add_argument("--user", metavar="NAME:PASSWORD", help="etcd credentials")
    group.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS")
    group.set_defaults(handler=_cmd_members)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line, and return its exit status.

    :param argv: the arguments, without the program name (default: ``sys.argv[1:]``)
    :return: 0 on success, 2 on bad input, 130 on Ctrl-C
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Command = args.handler
    try:
        return handler(args, sys.stdout)
    except UsageError as exc:
        parser.exit(2, f"anyrdzv {args.command}: error: {exc}\n")
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``anyrdzv ... | head``): stop quietly, as cat does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
