"""The README's example is real code: extract it and run it."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from anyrdzv import GetResult, MemoryStore
from tests._support import README


def test_readme_example_runs() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Example", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "README has no python example"
    code = match.group(1)
    assert len(code.strip().splitlines()) <= 12
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("fe80::1%eth0 29400 {'join_timeout': '60'")


def test_quick_start_has_exactly_two_command_blocks() -> None:
    text = README.read_text(encoding="utf-8")
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert quick_start.count("```bash") == 2


@pytest.mark.anyio
async def test_readme_txn_snippet_runs() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("`txn(compare, success=(), failure=())`", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "README has no txn example"
    code = textwrap.dedent(match.group(1))
    body = textwrap.indent(f"{code}return result, holder\n", "    ")
    namespace: dict[str, Any] = {}
    exec(f"async def snippet(store, lease):\n{body}", namespace)  # noqa: S102 - the README's own code
    store = MemoryStore()
    lease = await store.grant(10)
    result, holder = await namespace["snippet"](store, lease)
    assert result.succeeded
    assert isinstance(result.results[-1], GetResult)
    assert (holder.value, holder.lease) == (b"me", lease.id)
    again, holder = await namespace["snippet"](store, lease)
    assert not again.succeeded
    assert holder.value == b"me"
