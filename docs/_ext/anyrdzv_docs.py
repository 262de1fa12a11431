"""Directives that generate reference tables from the code, so that they cannot drift:
the ``--rdzv-conf`` keys with their defaults, the error hierarchy, and the loggers with
the levels they log at.

Each fails the build (an :class:`~sphinx.errors.ExtensionError`) when the code and what
this module says of it disagree: a key with no description, or a description of a key
the backend no longer reads.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective

if TYPE_CHECKING:
    from sphinx.application import Sphinx

#: What each ``--rdzv-conf`` key of the torchrun backend means. The keys and the
#: defaults come from the code; a key missing here, or here and not there, fails the build.
CONF_KEYS = {
    "join_timeout": "seconds ``next_rendezvous()`` may wait for a round (torch's key)",
    "last_call_timeout": (
        "seconds a round waits for more nodes once it has ``min_nodes`` (torch's key)"
    ),
    "close_timeout": "seconds closing the run may take (torch's key)",
    "keep_alive_interval": "seconds between lease renewals (torch's key)",
    "keep_alive_max_attempt": (
        "missed renewals that make a node dead: the lease TTL is "
        "``keep_alive_interval × keep_alive_max_attempt`` (torch's key)"
    ),
    "cacert": "PEM file of the CA that signed etcd's certificate: use HTTPS",
    "cert": "PEM file of a client certificate (and its key, unless ``key`` is given)",
    "key": "PEM file of the client certificate's key",
    "user": (
        "the etcd user; the password comes from ``ANYRDZV_ETCD_PASSWORD``, never from "
        "argv (a ``password`` key is refused)"
    ),
    "store_timeout": "seconds etcd may take to answer a request",
    "async_backend": "the event loop the backend runs: ``asyncio``, ``uvloop`` or ``trio``",
    "timeout": "torchrun's own (900 unless given): ignored, as torch's dynamic handler does",
    "max_rounds": (
        "the run's restart budget: rounds allowed after the first, run-wide "
        "(:doc:`../features/max-rounds`)"
    ),
    "health_check": (
        "``package.module:function``, an async check run before each join "
        "(:doc:`../features/health`)"
    ),
    "health_check_timeout": "seconds one health check may take",
    "rank_order": (
        "``natural``, ``stable`` or ``name``: how a round ranks its participants "
        "(:doc:`../features/rank-order`)"
    ),
    "topology": (
        "this node's topology label, e.g. ``rack3/switch12`` (or ``ANYRDZV_TOPOLOGY``): "
        "contiguous ranks per label"
    ),
}


def _default(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, str):
        return f"``{value}``"
    return f"``{value:g}``"  # type: ignore[str-format]


def _rst_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in (header, *rows):
        lines.append(f"   * - {row[0]}")
        lines.extend(f"     - {cell}" for cell in row[1:])
    return lines


class _Generated(SphinxDirective):
    """A directive whose content is reStructuredText that it makes itself."""

    has_content = False

    def lines(self) -> list[str]:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        container = nodes.container()
        self.state.nested_parse(StringList(self.lines(), source="<generated>"), 0, container)
        return list(container.children)


class RdzvConfKeys(_Generated):
    """Every ``--rdzv-conf`` key of ``anyrdzv-etcd``, with its default and meaning."""

    def lines(self) -> list[str]:
        from anyrdzv._rendezvous._conf import DEFAULTS
        from anyrdzv.torchrun._conf import KNOWN_KEYS, RENDEZVOUS_KEYS, read_conf

        if set(KNOWN_KEYS) != set(CONF_KEYS):
            raise ExtensionError(
                "the --rdzv-conf keys documented and the keys the backend reads differ: "
                f"undocumented {sorted(set(KNOWN_KEYS) - set(CONF_KEYS))}, "
                f"unknown {sorted(set(CONF_KEYS) - set(KNOWN_KEYS))}"
            )
        plain = read_conf("", {}, {})
        defaults: dict[str, str] = {
            key: _default(DEFAULTS[key])  # type: ignore[literal-required]
            for key in RENDEZVOUS_KEYS
        }
        defaults |= {
            "store_timeout": f"``{plain.store_timeout:g}``",
            "async_backend": f"``{plain.backend}``",
            "cacert": "none: plain HTTP, or the system's CAs for ``https://``",
            "cert": "none",
            "key": "none",
            "user": "none: no auth",
            "timeout": "``900`` (torchrun's)",
        }
        rows = [(f"``{key}``", defaults[key], CONF_KEYS[key]) for key in KNOWN_KEYS]
        return _rst_table(("key", "default", "meaning"), rows)


def _public_errors() -> list[type[BaseException]]:
    import anyrdzv

    found = []
    for name in anyrdzv.__all__:
        value = getattr(anyrdzv, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            found.append(value)
    return found


def _qualified(cls: type) -> str:
    if cls.__module__ == "builtins":
        return f"``{cls.__name__}``"
    return f":exc:`~{cls.__module__}.{cls.__qualname__}`"


class ErrorHierarchy(_Generated):
    """The public errors, as a tree under the builtin exceptions they extend."""

    def lines(self) -> list[str]:
        errors = _public_errors()
        ours = set(errors)
        lines: list[str] = [".. currentmodule:: anyrdzv", ""]

        def walk(cls: type[BaseException], depth: int) -> None:
            others = [base for base in cls.__bases__ if base is not Exception and base not in ours]
            also = f" (also {', '.join(_qualified(b) for b in others)})" if others else ""
            summary = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
            lines.append(f"{'  ' * depth}- {_qualified(cls)}{also}: {summary}")
            lines.append("")
            for sub in errors:
                if cls in sub.__bases__:
                    walk(sub, depth + 1)

        for cls in errors:
            if not any(base in ours for base in cls.__bases__):
                walk(cls, 0)
        return lines


#: The logging calls a module makes, by level.
_LEVEL_CALLS = {
    "debug": "DEBUG",
    "info": "INFO",
    "warning": "WARNING",
    "error": "ERROR",
    "exception": "ERROR",
    "critical": "CRITICAL",
}


def loggers() -> dict[str, list[str]]:
    """Each module that has a ``logging.getLogger(__name__)`` logger, and the levels it
    logs at, read from the source."""
    import anyrdzv

    package = Path(anyrdzv.__file__).resolve().parent
    found: dict[str, list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {
            target.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and ast.unparse(node.value) == "logging.getLogger(__name__)"
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        if not names:
            continue
        levels = {
            _LEVEL_CALLS[node.func.attr]
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in names
            and node.func.attr in _LEVEL_CALLS
        }
        parts = path.relative_to(package.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        order = list(dict.fromkeys(_LEVEL_CALLS.values()))
        found[module] = sorted(levels, key=order.index)
    return found


class LoggerTable(_Generated):
    """Every logger of the package, with the levels it logs at."""

    def lines(self) -> list[str]:
        rows = [
            (f"``{name}``", ", ".join(levels) or "(none yet)") for name, levels in loggers().items()
        ]
        if not rows:
            raise ExtensionError("no logger found in the package")
        return _rst_table(("logger", "levels it logs at"), rows)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("anyrdzv-rdzv-conf-keys", RdzvConfKeys)
    app.add_directive("anyrdzv-error-hierarchy", ErrorHierarchy)
    app.add_directive("anyrdzv-loggers", LoggerTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
