"""The ``anyrdzv`` parser, its logging options, and main(): exit statuses, and every
error one bounded line."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

import anyrdzv
from anyrdzv._cli._main import build_parser, log_level, main
from tests._support.cli import run_cli


def test_no_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


# -- version and logging --------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"anyrdzv {anyrdzv.__version__}\n"


def test_version_in_a_subprocess() -> None:
    proc = run_cli("--version")
    assert (proc.returncode, proc.stdout) == (0, f"anyrdzv {anyrdzv.__version__}\n")


class TestLogLevel:
    @pytest.mark.parametrize(
        ("args", "level"),
        [
            (["parse"], logging.WARNING),
            (["-v", "parse"], logging.INFO),
            (["-vv", "parse"], logging.DEBUG),
            (["-vvv", "parse"], logging.DEBUG),
            (["parse", "-v"], logging.INFO),
            (["-v", "doctor", "--verbose"], logging.DEBUG),
            (["--log-level", "error", "parse"], logging.ERROR),
            (["members", "--etcd", "h", "--group", "g", "--log-level", "DEBUG"], logging.DEBUG),
            (["--log-level", "INFO", "parse", "--log-level", "CRITICAL"], logging.CRITICAL),
            (["-vv", "parse", "--log-level", "WARNING"], logging.WARNING),
        ],
    )
    def test_level_from_the_arguments(self, args: list[str], level: int) -> None:
        assert log_level(build_parser().parse_args(args)) == level

    def test_unknown_level_is_a_usage_error(self) -> None:
        proc = run_cli("--log-level", "LOUD", "parse")
        assert proc.returncode == 2
        assert "argument --log-level: must be one of DEBUG, INFO, WARNING" in proc.stderr
        assert "got 'LOUD'" in proc.stderr

    # In a subprocess: the CLI configures logging with basicConfig, which leaves pytest's
    # logging alone. ``parse`` runs with its stdout taken by an object that, as the command
    # writes to it, logs from a library logger, and keeps what it is given.
    _LOGGING_PROGRAM = """
import contextlib, io, logging, sys
from anyrdzv._cli import main
class LoggingOut(io.StringIO):
    def write(self, text):
        for level in (logging.DEBUG, logging.INFO, logging.WARNING):
            logging.getLogger("anyrdzv.x").log(level, "record at %s", logging.getLevelName(level))
        return super().write(text)
out = LoggingOut()
with contextlib.redirect_stdout(out):
    status = main(sys.argv[1:])
assert status == 0 and out.getvalue().startswith("host:"), (status, out.getvalue())
sys.exit(status)
"""

    @pytest.mark.parametrize(
        ("args", "shown"),
        [
            ([], {"WARNING"}),
            (["-v"], {"INFO", "WARNING"}),
            (["-vv"], {"DEBUG", "INFO", "WARNING"}),
            (["--log-level", "debug"], {"DEBUG", "INFO", "WARNING"}),
            (["--log-level", "ERROR"], set()),
        ],
    )
    def test_records_reach_stderr(self, args: list[str], shown: set[str]) -> None:
        proc = subprocess.run(
            [sys.executable, "-c", self._LOGGING_PROGRAM, *args, "parse"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == ""
        for level in ("DEBUG", "INFO", "WARNING"):
            line = f"{level} anyrdzv.x: record at {level}"
            assert (line in proc.stderr) == (level in shown), proc.stderr


# -- errors are one bounded line ------------------------------------------------------------

_LONG = 100_000


@pytest.mark.parametrize(
    "args",
    [
        ["parse", "--rdzv-endpoint", "~" * _LONG],
        ["doctor", "--rdzv-endpoint", "h:" + "9" * _LONG],
        ["parse", "--rdzv-conf", "k" * _LONG],
        ["parse", "--default-port", "9" * _LONG],
        ["--log-level", "L" * _LONG, "parse"],
        ["parse", "--no-such-option", "x" * _LONG],
        ["members", "--etcd", "~" * _LONG, "--group", "g"],
        ["members", "--etcd", "h", "--group", "a/" + "g" * _LONG],
        ["members", "--etcd", "h", "--group", "g", "--cacert", "/" * _LONG],
        ["members", "--etcd", "h", "--group", "g", "--user", "u" * _LONG],
    ],
    ids=lambda args: " ".join(a[:12] for a in args),
)
def test_long_values_are_not_echoed_whole(args: list[str]) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "error: " in proc.stderr
    assert len(proc.stderr) < 2_000


def test_long_endpoint_is_cut_with_its_length() -> None:
    proc = run_cli("parse", "--rdzv-endpoint", "~" * _LONG)
    assert proc.stderr == (
        f"anyrdzv parse: error: The hostname of the rendezvous endpoint '{'~' * 300}... "
        f"({_LONG} characters)' must be a dot-separated list of labels, an IPv4 address, "
        "or an IPv6 address.\n"
    )


def test_error_with_a_newline_stays_on_one_line() -> None:
    proc = run_cli("parse", "--rdzv-endpoint", "a\nb:1")
    assert proc.returncode == 2
    assert proc.stderr == (
        "anyrdzv parse: error: The hostname of the rendezvous endpoint 'a\\nb:1' must be a "
        "dot-separated list of labels, an IPv4 address, or an IPv6 address.\n"
    )
