"""What a command's failure becomes: the runner of every store command, given what to
run, turns whatever goes wrong once the store is open into one line on stderr and exit
status 1, and lets a bug through with its traceback.

Failures a real etcd gives (unreachable, refused credentials, TLS mismatches, malformed
keys) are in the tests of each command; here are those no real store can be made to
give: exceptions that escape the store, and groups of them.
"""

from __future__ import annotations

import json
import logging
import ssl
import sys

import anyio
import pytest

import anyrdzv
from anyrdzv._cli._store_command import run_store_command


class TestRunStoreCommand:
    def test_bad_data_is_one_line(self, capsys: pytest.CaptureFixture[str]) -> None:
        async def bad_members() -> int:
            raise ValueError("bad member data\nsecond line")

        assert run_store_command("members", bad_members, out=sys.stdout) == 1
        captured = capsys.readouterr()
        assert captured.err == "anyrdzv members: error: ValueError: bad member data\\nsecond line\n"

    def test_store_error_in_a_group_during_watch(self, capsys: pytest.CaptureFixture[str]) -> None:
        async def failing_watch() -> int:
            sys.stdout.write(json.dumps({"revision": 7, "members": {"n": "p"}}) + "\n")

            async def fail() -> None:
                raise anyrdzv.StoreConnectionError("etcd went away")

            async with anyio.create_task_group() as group:  # raises an ExceptionGroup
                group.start_soon(fail)
            return 0

        assert run_store_command("members", failing_watch, out=sys.stdout) == 1
        captured = capsys.readouterr()
        assert json.loads(captured.out)["members"] == {"n": "p"}
        assert captured.err == "anyrdzv members: error: etcd went away\n"

    def test_network_fault_that_escapes_the_store_is_one_line(
        self, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
    ) -> None:
        async def tls_fault() -> int:
            raise ssl.SSLError(1, "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] bad certificate")

        with caplog.at_level(logging.DEBUG, logger="anyrdzv._cli._store_command"):
            assert run_store_command("members", tls_fault, out=sys.stdout) == 1
        assert capsys.readouterr().err == (
            "anyrdzv members: error: SSLError: [SSL: SSLV3_ALERT_BAD_CERTIFICATE] bad certificate\n"
        )
        # -vv shows the traceback too.
        [record] = [r for r in caplog.records if r.name == "anyrdzv._cli._store_command"]
        assert record.levelno == logging.DEBUG
        assert record.exc_info is not None

    def test_a_bug_still_shows_its_traceback(self) -> None:
        async def buggy_members() -> int:
            raise ZeroDivisionError("a bug")

        with pytest.raises(ZeroDivisionError):
            run_store_command("members", buggy_members, out=sys.stdout)
