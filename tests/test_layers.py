"""The layers of ``../shared/DESIGN.md`` hold in the import graph: a module imports only
from layers below its own (or from its own folder), the pure modules import no event
loop and do no I/O, and no import circle remains, ``TYPE_CHECKING`` imports included."""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

import pytest

from tests._support import PACKAGE

if TYPE_CHECKING:
    from pathlib import Path

#: Each part of the package and its rank: a module may import from parts of a lower
#: rank, and from its own part. Two parts of one rank may not import each other.
RANKS = {
    "_exceptions": 0,
    "_checks": 0,
    "_core": 1,
    "_stores": 2,
    "_etcd": 3,  # layer 2 too, above the store contract it implements
    "_membership": 4,
    "_rendezvous": 5,
    "_cli": 6,
    "torchrun": 6,
    "testing": 6,
    "__init__": 7,
    "__main__": 8,
}

#: Layer 0 of each part: no I/O and no event loop.
PURE = {
    "_checks",
    "_exceptions",
    "_core._endpoint",
    "_core._config",
    "_stores._model",
    "_stores._txn",
    "_stores._history",
    "_stores._keyspace",
    "_etcd._wire",
    "_rendezvous._conf",
    "_rendezvous._rules",
    "_rendezvous._ranks",
}
IMPURE_IMPORTS = {"anyio", "asyncio", "trio", "httpx", "socket", "ssl", "threading", "torch"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """The package's modules that ``path`` imports, at any depth, and the top-level
    names of the outside modules it imports."""
    name = module_name(path)
    is_package = path.name == "__init__.py"
    inside: set[str] = set()
    outside: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "anyrdzv":
                    inside.add(alias.name.removeprefix("anyrdzv").lstrip("."))
                else:
                    outside.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                module = node.module or ""
                if module.split(".")[0] != "anyrdzv":
                    outside.add(module.split(".")[0])
                    continue
                base = module.removeprefix("anyrdzv").lstrip(".")
            else:
                here = name.split(".") if is_package else name.split(".")[:-1]
                if name == "__init__":
                    here = []
                here = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                base = ".".join([*here, *([node.module] if node.module else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}".strip(".")
                inside.add(candidate if _is_module(candidate) else base)
    # The package itself (``from .. import X``) is its __init__: re-exports, above all.
    return {module or "__init__" for module in inside}, outside


def _is_module(name: str) -> bool:
    path = PACKAGE.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def part_of(module: str) -> str:
    return module.split(".")[0]


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {module: imports_of(path)[0] for module, path in MODULES.items()}


def test_the_walk_sees_the_package() -> None:
    assert len(MODULES) > 30
    assert set(map(part_of, MODULES)) <= set(RANKS), set(map(part_of, MODULES)) - set(RANKS)


def upward(module: str, imported: set[str]) -> list[str]:
    """What ``module`` imports from parts of its rank or above."""
    mine = part_of(module)
    return sorted(
        other
        for other in imported
        if part_of(other) != mine and RANKS[part_of(other)] >= RANKS[mine]
    )


def test_the_rank_check_finds_an_upward_import() -> None:
    assert upward("_stores._memory", {"_rendezvous._rules", "_core._delay"}) == [
        "_rendezvous._rules"
    ]
    assert upward("_etcd._store", {"_stores._model"}) == []
    assert upward("_cli._main", {"torchrun._conf"}) == ["torchrun._conf"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_from_below(module: str) -> None:
    found = upward(module, GRAPH[module])
    assert not found, f"{module} imports from its own rank or above: {found}"


@pytest.mark.parametrize("module", sorted(PURE))
def test_pure_modules_do_no_io(module: str) -> None:
    inside, outside = imports_of(MODULES[module])
    assert not outside & IMPURE_IMPORTS, f"{module} imports {sorted(outside & IMPURE_IMPORTS)}"
    impure = sorted(m for m in inside if m not in PURE)
    assert not impure, f"the pure {module} imports {impure}"


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """An import circle of ``graph``, as the modules along it, or ``None``."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(graph.get(module, ())):
            # A package's __init__ importing its own modules is no circle.
            if imported != module and not imported.startswith(f"{module}."):
                circle = visit(imported)
                if circle:
                    return circle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        circle = visit(module)
        if circle:
            return circle
    return None


def test_no_import_circle() -> None:
    circle = find_circle(GRAPH)
    assert circle is None, f"import circle: {' -> '.join(circle or [])}"


def test_the_circle_check_finds_one() -> None:
    graph = {"_stores._txn": {"_stores._model"}, "_stores._model": {"_stores._txn"}}
    assert find_circle(graph) == ["_stores._model", "_stores._txn", "_stores._model"]
    assert find_circle({"a": {"b"}, "b": set()}) is None


# -- the event loops: only two modules touch asyncio or trio; the rest goes through anyio

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


# -- tests go through public doors: no test reads or sets a library object's private part


def private_attributes(path: Path) -> list[str]:
    """Every ``x._name`` in ``path`` (``self``'s and ``cls``'s aside, and ``os._exit``, the
    standard library's way out of a forked child), as ``line: code``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            and ast.unparse(node) != "os._exit"
        ):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_test_touches_a_private_attribute() -> None:
    tests = sorted(PACKAGE.parent.parent.joinpath("tests").rglob("*.py"))
    assert len(tests) > 30
    offenders = {str(path): found for path in tests if (found := private_attributes(path))}
    assert not offenders, offenders


def test_the_private_attribute_check_sees_one(tmp_path: Path) -> None:
    source = tmp_path / "t.py"
    source.write_text("store._gateway._current = 1\nself._x = 2\nanyrdzv.__all__\n")
    assert private_attributes(source) == ["1: store._gateway._current", "1: store._gateway"]
