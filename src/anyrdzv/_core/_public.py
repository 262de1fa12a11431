"""How exported objects present themselves: as ``anyrdzv.X``, not by their private module."""

from __future__ import annotations

from typing import Any

#: The package's version.
__version__ = "0.1.0"


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
