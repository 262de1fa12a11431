from __future__ import annotations

import math
from typing import Any


def fixup_module_metadata(module_name: str, namespace: dict[str, Any]) -> None:
    """Make every public object in ``namespace`` report ``module_name`` as its home.

    Exported classes and functions then show up as ``anyrdzv.X`` in reprs,
    tracebacks and documentation, not as ``anyrdzv._private_module.X``.
    """
    seen: set[int] = set()

    def fix_one(qualname: str, name: str, obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        mod = getattr(obj, "__module__", None)
        if mod is not None and mod.startswith("anyrdzv."):
            obj.__module__ = module_name
            if isinstance(obj, type):
                obj.__name__ = name
                obj.__qualname__ = qualname
                for attr_name, attr_value in obj.__dict__.items():
                    fix_one(f"{qualname}.{attr_name}", attr_name, attr_value)

    for objname in namespace.get("__all__", ()):
        if not objname.startswith("_"):
            fix_one(objname, objname, namespace[objname])


#: How much of a value an error message echoes.
MAX_ECHO = 200


def cut(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` for a message: whole if it has at most ``limit`` characters, else its
    first ``limit``, marked as cut, with its length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def echo(value: object) -> str:
    """``repr(value)``, cut to :data:`MAX_ECHO` characters for an error or log message."""
    return cut(repr(value))


def type_name(value: object) -> str:
    """Return the name of ``value``'s type, for error messages."""
    return type(value).__qualname__


def check_str(name: str, value: object) -> str:
    """Return ``value`` if it is a ``str``, else raise a ``TypeError`` naming ``name``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type_name(value)} {value!r:.200}")
    return value


def check_number(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a real number (``bool`` excluded)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type_name(value)} {value!r:.200}")
    return float(value)


def check_positive_finite(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite number greater than zero."""
    number = check_number(name, value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return number
