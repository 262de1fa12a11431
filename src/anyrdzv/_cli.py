"""The ``anyrdzv`` command line: a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from ._config import parse_rendezvous_config
from ._endpoint import parse_rendezvous_endpoint

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


if __name__ == "__main__":
    sys.exit(main())
