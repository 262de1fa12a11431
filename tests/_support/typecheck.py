"""``mypy --strict`` on code that a test writes: the README's snippets, and code that must
not type-check."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tests._support import ROOT

#: mypy's caches, kept between runs (a cold run checks anyio, httpx and trio too:
#: seconds): one for each set of files, since two mypy runs must not share one.
CACHE = Path(tempfile.gettempdir()) / (
    "anyrdzv-test-mypy-" + hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
)

_ERROR = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: (?P<message>.*)$")


def _cache_dir(sources: dict[str, str]) -> Path:
    """The cache of this set of files: named by a digest of their names, since a long
    list of names is longer than a file name may be."""
    names = "-".join(sorted(sources))
    return CACHE / hashlib.sha256(names.encode()).hexdigest()[:16]


def mypy_strict(sources: dict[str, str], workdir: Path) -> dict[str, list[str]]:
    """Type-check each source with ``mypy --strict`` for Python 3.10, in one run, against
    this checkout's ``src``; return each file's errors, as ``"<line>: <message>"``.

    :param sources: each file's name (``name.py``) and its code
    :param workdir: where to write the files
    :raises AssertionError: if mypy itself fails
    """
    for name, code in sources.items():
        (workdir / name).write_text(code, encoding="utf-8")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--python-version=3.10",
            "--no-error-summary",
            "--show-error-codes",
            "--no-pretty",
            "--no-color-output",
            f"--cache-dir={_cache_dir(sources)}",
            *sources,
        ],
        cwd=workdir,  # no pyproject.toml here: only the flags above apply
        env={**os.environ, "MYPYPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode in (0, 1), f"mypy failed:\n{proc.stdout}\n{proc.stderr}"
    errors: dict[str, list[str]] = {name: [] for name in sources}
    for line in proc.stdout.splitlines():
        found = _ERROR.match(line)
        if found is not None:
            errors[found["file"]].append(f"{found['line']}: {found['message']}")
    return errors
