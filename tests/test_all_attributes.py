"""The public surface of ``anyrdzv``, ``anyrdzv.testing`` and ``anyrdzv.torchrun``.

Every public name is importable, documented and shows its public home; every type that a
public signature names is public too; and no public docstring sends its reader to a
private or unexported name.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import enum
import importlib
import inspect
import pkgutil
import re
import sys
import types
import typing
from functools import cache
from typing import Any

import pytest

import anyrdzv
import anyrdzv.testing
import anyrdzv.torchrun
from tests._support import PACKAGE

MODULES = (anyrdzv, anyrdzv.testing, anyrdzv.torchrun)

PUBLIC = [(module.__name__, name) for module in MODULES for name in module.__all__]


@pytest.mark.parametrize("module", MODULES)
def test_all_is_a_sorted_tuple(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert isinstance(names, tuple)
    assert list(names) == sorted(names)


@pytest.mark.parametrize(("module_name", "name"), PUBLIC)
def test_exported_name_is_importable_documented_and_public(module_name: str, name: str) -> None:
    module = importlib.import_module(module_name)
    obj = getattr(module, name)
    if _is_alias(obj):
        # A type alias cannot carry a docstring: a ``#:`` comment documents it.
        assert _alias_comment(name), f"{module_name}.{name} has no '#:' comment"
        return
    assert obj.__doc__, f"{module_name}.{name} has no docstring"
    if hasattr(obj, "__module__"):
        assert obj.__module__ == module_name


# -- every type in a public signature is public ---------------------------------------


def _is_alias(obj: object) -> bool:
    """Whether ``obj`` is a type alias (``Literal[...]``, ``A | B``) rather than a class
    or a function."""
    return isinstance(obj, types.UnionType) or typing.get_origin(obj) is not None


@cache
def _submodules() -> tuple[types.ModuleType, ...]:
    found = [anyrdzv]
    for info in pkgutil.walk_packages(anyrdzv.__path__, "anyrdzv."):
        if info.name == "anyrdzv.__main__" or (
            info.name.startswith("anyrdzv.torchrun._") and info.name != "anyrdzv.torchrun._conf"
        ):
            continue  # the command line runs; the others import torch, and export nothing
        found.append(importlib.import_module(info.name))
    return tuple(found)


@cache
def _imports(module_name: str) -> dict[str, tuple[str, str | None]]:
    """Every name that ``module_name`` imports, also under ``TYPE_CHECKING``: the module
    it comes from, and its name there (``None`` for a module)."""
    module = sys.modules[module_name]
    tree = ast.parse(inspect.getsource(module))
    package = module_name if hasattr(module, "__path__") else module_name.rpartition(".")[0]
    found: dict[str, tuple[str, str | None]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, source] if source else base)
            for alias in node.names:
                found[alias.asname or alias.name] = (source, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                found[alias.asname or alias.name.partition(".")[0]] = (
                    alias.name if alias.asname else alias.name.partition(".")[0],
                    None,
                )
    return found


def _resolve(module_name: str, name: str) -> tuple[object, bool]:
    """What ``name`` means in module ``module_name``, and whether it is anyrdzv's own.

    :raises LookupError: if it means nothing there
    """
    imported = _imports(module_name).get(name)
    if imported is not None:
        source, attribute = imported
        if not source.startswith("anyrdzv"):
            return None, False  # Python's or a dependency's: not imported (torch is slow)
        target: object = importlib.import_module(source)
        if attribute is not None:
            try:
                target = getattr(target, attribute)
            except AttributeError:  # a submodule
                target = importlib.import_module(f"{source}.{attribute}")
        return target, True
    namespace = vars(sys.modules[module_name])
    if name in namespace:
        return namespace[name], True
    if hasattr(builtins, name):
        return getattr(builtins, name), False
    raise LookupError(f"{name!r} means nothing in {module_name}")


def _named_types(annotation: str, module_name: str) -> list[tuple[str, object, bool]]:
    """The names an annotation uses: each with what it means, and whether it is
    anyrdzv's own."""
    found: list[tuple[str, object, bool]] = []
    for node in ast.walk(ast.parse(annotation, mode="eval")):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += _named_types(node.value, module_name)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            base, _ = _resolve(module_name, node.value.id)
            if isinstance(base, types.ModuleType):
                value = getattr(base, node.attr)
                own = base.__name__.startswith("anyrdzv")
                found.append((f"{node.value.id}.{node.attr}", value, own))
        elif isinstance(node, ast.Name):
            value, own = _resolve(module_name, node.id)
            if not isinstance(value, types.ModuleType):
                found.append((node.id, value, own))
    return found


def _home(obj: Any) -> str | None:
    """The module that defines function ``obj`` (an exported one says ``anyrdzv``
    instead), or ``None`` for one that no module's source defines (a dataclass's
    ``__init__``: its fields are looked at instead)."""
    code = getattr(inspect.unwrap(obj), "__code__", None)
    filename = code.co_filename if code is not None else None
    for module in _submodules():
        if getattr(module, "__file__", None) == filename:
            return module.__name__
    return None


@cache
def _class_home(cls: type) -> str:
    for module in _submodules():
        if (
            vars(module).get(cls.__name__) is cls
            and module.__name__ not in ("anyrdzv", "anyrdzv.testing")
            and f"class {cls.__name__}" in inspect.getsource(module)
        ):
            return module.__name__
    raise LookupError(f"no module defines {cls!r}")


def _text(annotation: object) -> str:
    """An annotation as written (they are strings, or a ``NamedTuple``'s forward
    references)."""
    if isinstance(annotation, typing.ForwardRef):
        return annotation.__forward_arg__
    assert isinstance(annotation, str), annotation
    return annotation


def _signatures() -> list[tuple[str, str, str]]:
    """Every annotation of every public signature: where it is, its text, and the
    module it is written in."""
    found: list[tuple[str, str, str]] = []

    def function(where: str, fn: Any) -> None:
        fn = inspect.unwrap(fn)
        home = _home(fn)
        if home is None:
            return
        for param, annotation in inspect.get_annotations(fn).items():
            found.append((f"{where}({param})", _text(annotation), home))

    for module in MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            where = f"{module.__name__}.{name}"
            if _is_alias(obj):
                continue
            if inspect.isfunction(obj):
                function(where, obj)
            elif isinstance(obj, type):
                for klass in obj.__mro__:
                    if not klass.__module__.startswith("anyrdzv"):
                        continue
                    for field, annotation in inspect.get_annotations(klass).items():
                        if not field.startswith("_") and (
                            dataclasses.is_dataclass(klass) or hasattr(klass, "_fields")
                        ):
                            found.append(
                                (f"{where}.{field}", _text(annotation), _class_home(klass))
                            )
                    # Its methods, and those it inherits from anyrdzv's classes.
                    for attr, member in vars(klass).items():
                        if attr.startswith("_") and not attr.endswith("__"):
                            continue
                        if isinstance(member, (classmethod, staticmethod)):
                            member = member.__func__
                        if isinstance(member, property):
                            member = member.fget
                        if inspect.isfunction(member):
                            function(f"{where}.{attr}", member)
    return found


def test_every_type_in_a_public_signature_is_public() -> None:
    public = {id(getattr(module, name)) for module in MODULES for name in module.__all__}
    private: list[str] = []
    for where, annotation, home in _signatures():
        for name, value, own in _named_types(annotation, home):
            if isinstance(value, (typing.TypeVar, typing.ParamSpec)):
                continue
            if isinstance(value, type) and not value.__module__.startswith("anyrdzv"):
                continue  # a class of Python's or of a dependency
            if own and id(value) not in public:
                private.append(f"{where}: {name} in {annotation!r}")
    assert private == [], "\n".join(private)


# -- docstrings -------------------------------------------------------------------------

#: Modules whose names a docstring may use, by the name it uses.
EXTERNAL = (
    "anyio",
    "asyncio",
    "contextlib",
    "datetime",
    "httpx",
    "random",
    "signal",
    "socket",
    "ssl",
    "torch",
    "trio",
    "typing",
)

ROLE = re.compile(r":(?:class|meth|func|attr|data|exc|mod|obj):`([^`]+)`")


def _alias_comment(name: str) -> bool:
    """Whether the alias ``name`` is documented where it is defined, with ``#:``."""
    for module in _submodules():
        lines = inspect.getsource(module).splitlines()
        for index, line in enumerate(lines):
            if re.match(rf"{name}(: TypeAlias)? = ", line):
                return index > 0 and lines[index - 1].startswith("#:")
    return False


def _docstrings() -> list[tuple[str, str, object]]:
    """Every public docstring: where, the text, and the object it documents."""
    found: list[tuple[str, str, object]] = []
    for module in MODULES:
        if module.__doc__:
            found.append((module.__name__, module.__doc__, module))
        for name in module.__all__:
            obj = getattr(module, name)
            where = f"{module.__name__}.{name}"
            if _is_alias(obj):
                continue
            if obj.__doc__:
                found.append((where, obj.__doc__, obj))
            if isinstance(obj, type):
                for attr in vars(obj):
                    if attr.startswith("_") and attr != "__init__":
                        continue
                    member = inspect.getattr_static(obj, attr)
                    if isinstance(member, (classmethod, staticmethod)):
                        member = member.__func__
                    doc = getattr(member, "__doc__", None)
                    if (inspect.isfunction(member) or isinstance(member, property)) and doc:
                        found.append((f"{where}.{attr}", doc, obj))
    return found


def _reachable(target: str, documented: object) -> bool:
    """Whether a docstring's reader can reach ``target``: from ``anyrdzv`` (or
    ``anyrdzv.testing``), as a member of the object documented, or as a name of Python's
    or of a dependency."""
    parts = target.split(".")
    if any(part.startswith("_") and not part.endswith("__") for part in parts):
        return False
    if parts[0] == "anyrdzv":
        obj: Any = anyrdzv
        for part in parts[1:]:
            if hasattr(obj, part):
                obj = getattr(obj, part)
            elif isinstance(obj, types.ModuleType):
                try:
                    obj = importlib.import_module(f"{obj.__name__}.{part}")
                except ImportError:
                    return False
            else:
                return False
        return True
    if parts[0] in EXTERNAL or hasattr(builtins, parts[0]):
        return True
    starts = [getattr(module, parts[0]) for module in MODULES if parts[0] in module.__all__]
    if any(_has_path(start, parts[1:]) for start in starts):
        return True
    return _has_path(documented, parts)


def _has_path(obj: object, parts: list[str]) -> bool:
    """Whether ``obj.<parts...>`` exists: an attribute, a dataclass field, or an
    attribute that the class's methods set on ``self``."""
    for index, part in enumerate(parts):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        if isinstance(obj, type) and index == len(parts) - 1:
            if dataclasses.is_dataclass(obj) and part in {f.name for f in dataclasses.fields(obj)}:
                return True
            return any(
                f"self.{part}" in inspect.getsource(sys.modules[_class_home(klass)])
                for klass in obj.__mro__
                if klass.__module__.startswith("anyrdzv")
            )
        return False
    return True


def test_no_version_notes_in_a_0_1_package() -> None:
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert ".. versionadded::" not in source, path
        assert ".. versionchanged::" not in source, path


def test_public_docstrings_name_only_public_names() -> None:
    bad: list[str] = []
    for where, doc, documented in _docstrings():
        for role in ROLE.findall(doc):
            target = role.lstrip("~!")
            if "<" in target:
                target = target.split("<", 1)[1].rstrip(">")
            target = target.rstrip("()")
            if not _reachable(target, documented):
                bad.append(f"{where}: {role}")
        for literal in re.findall(r"``([A-Za-z_][\w.]*)``", doc):
            head = literal.split(".")[0]
            if head in PRIVATE_NAMES():
                bad.append(f"{where}: ``{literal}``")
    assert bad == [], "\n".join(bad)


@cache
def PRIVATE_NAMES() -> frozenset[str]:
    """What a docstring must not show as code: the classes and constants of anyrdzv's
    modules that no public module exports, and their private functions. (A public
    function's name may well be a parameter's, such as ``revision``.)"""
    public = {name for module in MODULES for name in module.__all__}
    names: set[str] = set()
    for module in _submodules():
        for name, value in vars(module).items():
            if name in public or name.startswith("__"):
                continue
            own = getattr(value, "__module__", "").startswith("anyrdzv.")
            if (
                (inspect.isclass(value) and own)
                or (inspect.isfunction(value) and own and name.startswith("_"))
                or (name.lstrip("_").isupper() and module.__name__.startswith("anyrdzv."))
            ):
                names.add(name)
    return frozenset(names)


def _parameters(obj: Any) -> list[str]:
    """The parameters that a public class's constructor or a public function takes,
    which its docstring must describe."""
    if isinstance(obj, type) and issubclass(obj, enum.Enum):
        return []
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    names = [
        name
        for name, parameter in signature.parameters.items()
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
    if isinstance(obj, type) and issubclass(obj, BaseException):
        names = [name for name in names if name != "message"]  # what str() of it says
    return names


@pytest.mark.parametrize(("module_name", "name"), PUBLIC)
def test_every_parameter_is_documented(module_name: str, name: str) -> None:
    obj = getattr(importlib.import_module(module_name), name)
    if not (inspect.isfunction(obj) or isinstance(obj, type)):
        return
    doc = obj.__doc__ or ""
    undocumented = [
        name
        for name in _parameters(obj)
        if f":param {name}:" not in doc and f":ivar {name}:" not in doc
    ]
    assert undocumented == [], f"{module_name}.{name} does not describe {undocumented}"


@pytest.mark.parametrize(("module_name", "name"), PUBLIC)
def test_every_public_method_is_documented(module_name: str, name: str) -> None:
    obj = getattr(importlib.import_module(module_name), name)
    if not isinstance(obj, type):
        return
    undocumented = [
        attr
        for klass in obj.__mro__
        if klass.__module__.startswith("anyrdzv")
        for attr, member in vars(klass).items()
        if not attr.startswith("_")
        and (inspect.isfunction(member) or isinstance(member, property))
        and not member.__doc__  # its own: pyright wants one on an override too
    ]
    assert undocumented == [], f"{module_name}.{name}: {undocumented}"
