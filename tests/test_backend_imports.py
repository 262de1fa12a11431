"""Only two modules may touch asyncio or trio directly: the rest goes through anyio."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "anyrdzv"
ALLOWED = {"_core/_wakeup.py", "_core/_clock.py"}
BACKENDS = {"asyncio", "trio", "uvloop"}


def backend_imports(path: Path) -> list[str]:
    """Every import of a backend in ``path``, at any depth, as ``line: module``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
            in ("__import__", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[0] in BACKENDS]
    return [f"{line}: {name}" for line, name in sorted(found)]


def test_only_wakeup_and_clock_import_asyncio_or_trio() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 5  # the walk found the package
    offenders = {
        str(path.relative_to(PACKAGE)): imports
        for path in sources
        if path.relative_to(PACKAGE).as_posix() not in ALLOWED
        and (imports := backend_imports(path))
    }
    assert not offenders, f"only {sorted(ALLOWED)} may import asyncio or trio: {offenders}"


def test_the_two_allowed_modules_exist_and_do_import_them() -> None:
    for name in ALLOWED:
        assert backend_imports(PACKAGE / name), name


def test_the_check_sees_every_form(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "import os, asyncio\n"
        "from trio.lowlevel import checkpoint\n"
        "def f():\n"
        "    import trio.testing\n"
        "    importlib.import_module('asyncio')\n"
        "from . import trio_like\n"
        "import trioish\n"
    )
    assert backend_imports(source) == [
        "1: asyncio",
        "2: trio.lowlevel",
        "4: trio.testing",
        "5: asyncio",
    ]
