"""``anyrdzv parse``: torchrun's ``--rdzv-endpoint`` and ``--rdzv-conf``, parsed as torch
would, in words or as JSON."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .._core._config import parse_rendezvous_config
from .._core._endpoint import parse_rendezvous_endpoint
from ._errors import usage_errors
from ._options import add_endpoint_options

if TYPE_CHECKING:
    import argparse
    from typing import TextIO


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``parse`` command to ``commands``, and return its parser."""
    parse = commands.add_parser(
        "parse",
        help="parse torchrun's --rdzv-endpoint and --rdzv-conf",
        description="Parse torchrun's --rdzv-endpoint and --rdzv-conf as torch would.",
    )
    add_endpoint_options(parse)
    parse.add_argument(
        "--rdzv-conf", default="", metavar="K=V,...", help="the rendezvous configuration"
    )
    parse.add_argument("--json", action="store_true", help="print JSON")
    parse.set_defaults(handler=run)
    return parse


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Print the endpoint and configuration that ``args`` give.

    :raises UsageError: if either does not parse
    """
    with usage_errors():
        endpoint = parse_rendezvous_endpoint(args.rdzv_endpoint, args.default_port)
        config = parse_rendezvous_config(args.rdzv_conf)
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
