"""The ``anyrdzv`` command line: the parser of every command, the logging options, and
:func:`main`, which runs a command and turns what escapes it into an exit status."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, NoReturn

from .._checks import echo
from .._core._public import __version__
from . import _demo, _doctor, _members, _parse, _rendezvous
from ._errors import UsageError, one_line

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import TextIO

    Command = Callable[[argparse.Namespace, TextIO], int]

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one bounded line: argparse echoes values whole."""

    def error(self, message: str) -> NoReturn:
        super().error(one_line(message))


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


def build_parser() -> argparse.ArgumentParser:
    """Build the ``anyrdzv`` argument parser, with one sub-parser per command."""
    parser = _Parser(
        prog="anyrdzv",
        description="PyTorch's elastic-rendezvous utilities for async code.",
    )
    parser.add_argument("--version", action="version", version=f"anyrdzv {__version__}")
    _add_logging_options(parser, "")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (_demo, _parse, _doctor, _members, _rendezvous):
        _add_logging_options(command.add_parser(commands), "sub_")
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
        parser.exit(2, f"anyrdzv {args.command}: error: {one_line(str(exc))}\n")
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``anyrdzv ... | head``): stop quietly, as cat does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
