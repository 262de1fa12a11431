"""What torchrun's ``--rdzv-endpoint``, ``--rdzv-conf`` and environment give the backend.

Pure: no torch, no I/O but reading the TLS files a conf key names. torchrun keeps every
``--rdzv-conf`` value a ``str``, and adds ``timeout`` (the int 900, unless given), which
this backend ignores, as torch's dynamic handler does. Other keys it does not know are
ignored too, as torch ignores them, but named, with the nearest known key, in one
warning (:meth:`BackendConf.unknown_keys_warning`) that the handler logs.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._checks import echo, is_number, type_name, wrong_type
from .._etcd._tls import client_context
from .._rendezvous._conf import parse_conf
from .._rendezvous._health import load_health_check
from ._loop import BACKENDS

if TYPE_CHECKING:
    import ssl
    from collections.abc import Mapping

#: Where the etcd password comes from: never argv, where ``ps`` shows it.
PASSWORD_VARIABLE = "ANYRDZV_ETCD_PASSWORD"
#: Where a node's topology label comes from when ``--rdzv-conf`` gives none.
TOPOLOGY_VARIABLE = "ANYRDZV_TOPOLOGY"

#: The keys :meth:`anyrdzv.Rendezvous.from_conf` reads, with torch's defaults.
RENDEZVOUS_KEYS = (
    "join_timeout",
    "last_call_timeout",
    "close_timeout",
    "keep_alive_interval",
    "keep_alive_max_attempt",
    "max_rounds",
    "health_check",
    "health_check_timeout",
    "rank_order",
    "topology",
)

#: Every ``--rdzv-conf`` key the backend reads, torchrun's injected ``timeout`` included
#: (and ``password``, which it refuses).
KNOWN_KEYS = (
    *RENDEZVOUS_KEYS,
    "cacert",
    "cert",
    "key",
    "user",
    "store_timeout",
    "async_backend",
    "timeout",
)

#: The store's levers, as its messages name them (Python arguments), and the backend's:
#: the one table that puts a store error in torchrun's terms.
_LEVERS = (
    (
        (
            "Pass ssl= an SSLContext that trusts the server's CA "
            "(ssl.create_default_context(cafile=...))"
        ),
        "Set --rdzv-conf cacert=<the PEM file of the CA that signed etcd's certificate>",
    ),
    (
        (
            "Pass ssl= an SSLContext that trusts the server's CA; or, if it serves plain "
            "HTTP, use an http:// endpoint and no ssl="
        ),
        (
            "Set --rdzv-conf cacert=<the PEM file of its CA>; or, if it serves plain HTTP, "
            "use an http:// endpoint (or host:port) with no cacert, cert or key"
        ),
    ),
    (
        "Then use an http:// endpoint and no ssl=",
        ("Then use an http:// endpoint (or host:port) with no cacert, cert or key in --rdzv-conf"),
    ),
    (
        "use an https:// endpoint or pass ssl=",
        "use an https:// endpoint, or set --rdzv-conf cacert=<the PEM file of its CA>",
    ),
    (
        "but ssl= was given: use https://, or host:port",
        "but --rdzv-conf gives cacert, cert or key: use https://, or host:port",
    ),
    (
        "(etcd has auth enabled: pass username and password)",
        (
            f"(etcd has auth enabled: set --rdzv-conf user=<etcd user>, and that user's "
            f"password in {PASSWORD_VARIABLE})"
        ),
    ),
)


def in_torchrun_terms(message: str) -> str:
    """``message``, a store error's, with the levers it names (``ssl=``, ``username``)
    put as the backend's (``--rdzv-conf cacert=``, ``user=``, :data:`PASSWORD_VARIABLE`)."""
    for python, torchrun in _LEVERS:
        message = message.replace(python, torchrun)
    return message


#: The default etcd client port.
DEFAULT_PORT = 2379


@dataclass(frozen=True)
class BackendConf:
    """The backend's settings, read from torchrun's parameters.

    :ivar endpoint: the etcd members, as :class:`~anyrdzv.EtcdStore` takes them
    :ivar rendezvous: the ``--rdzv-conf`` keys of the rendezvous, as strings
    :ivar ssl: the TLS context, or ``None``
    :ivar username: the etcd user, or ``None``
    :ivar password: that user's password, from :data:`PASSWORD_VARIABLE`
    :ivar backend: the event loop the backend runs on
    :ivar store_timeout: how long etcd may take to answer, in seconds
    :ivar unknown: the ``--rdzv-conf`` keys the backend does not know (ignored), each
        with the nearest known key, or ``None``
    """

    endpoint: str
    rendezvous: dict[str, str]
    ssl: ssl.SSLContext | None
    username: str | None
    password: str | None
    backend: str
    store_timeout: float
    unknown: tuple[tuple[str, str | None], ...] = ()

    def unknown_keys_warning(self) -> str | None:
        """The one warning about :attr:`unknown`, or ``None`` if every key is known."""
        if not self.unknown:
            return None
        listed = ", ".join(
            repr(key) + ("" if near is None else f" (did you mean {near!r}?)")
            for key, near in self.unknown
        )
        plural = "s" if len(self.unknown) > 1 else ""
        return (
            f"--rdzv-conf: unknown key{plural} {listed[:1000]}, ignored; the anyrdzv-etcd "
            f"backend reads {', '.join(KNOWN_KEYS)}"
        )


def _text(key: str, value: object) -> str:
    if not isinstance(value, str) and not is_number(value):
        raise wrong_type(f"the rendezvous configuration option '{key}'", value, "a str")
    return str(value)


def read_conf(
    endpoint: object, config: Mapping[str, object], environ: Mapping[str, str]
) -> BackendConf:
    """Read the backend's settings.

    :param endpoint: ``--rdzv-endpoint``: one etcd member or a comma-separated list;
        empty means ``localhost:2379``
    :param config: ``--rdzv-conf``, as torchrun gives it
    :param environ: the environment, for :data:`PASSWORD_VARIABLE` and
        :data:`TOPOLOGY_VARIABLE` (the node's label, unless the conf gives ``topology``)
    :raises ValueError: naming the key, if a value is bad, a TLS file is missing or not
        PEM, ``password`` is given in the conf, ``user`` comes without a password, or
        ``health_check`` does not import
    :raises TypeError: if a value has the wrong type
    """
    if not isinstance(endpoint, str):
        raise TypeError(f"endpoint must be a str, got {type_name(endpoint)} {echo(endpoint)}")
    options = {key: _text(key, value) for key, value in config.items() if key != "timeout"}
    if "password" in options:
        raise ValueError(
            "the rendezvous configuration option 'password' is refused: --rdzv-conf is "
            f"visible to everyone on the node (ps); set {PASSWORD_VARIABLE} instead"
        )
    if "health_check" in options:
        load_health_check(options["health_check"])  # before any I/O
    files = {key: options.get(key) for key in ("cacert", "cert", "key")}
    for key, path in files.items():
        if path is not None and not path:
            raise ValueError(f"the rendezvous configuration option '{key}' names no file")
    context = client_context(
        files["cacert"],
        files["cert"],
        files["key"],
        names=("--rdzv-conf cacert", "--rdzv-conf cert", "--rdzv-conf key"),
    )
    username = options.get("user")
    password: str | None = None
    if username is not None:
        if not username:
            raise ValueError("the rendezvous configuration option 'user' is empty")
        password = environ.get(PASSWORD_VARIABLE)
        if not password:
            raise ValueError(
                f"the rendezvous configuration option 'user' is {echo(username)}, but "
                f"{PASSWORD_VARIABLE} is not set: put the etcd password there"
            )
    backend = options.get("async_backend", "asyncio")
    if backend not in BACKENDS:
        raise ValueError(
            f"the rendezvous configuration option 'async_backend' must be one of "
            f"{', '.join(BACKENDS)}, got {echo(backend)}"
        )
    store_timeout = 5.0
    if "store_timeout" in options:
        text = options["store_timeout"]
        try:
            store_timeout = float(text)
        except ValueError:
            store_timeout = float("nan")
        if not (store_timeout > 0 and store_timeout < float("inf")):
            raise ValueError(
                "the rendezvous configuration option 'store_timeout' must be a positive "
                f"number of seconds, got {echo(text)}"
            )
    unknown = tuple(
        (key, next(iter(difflib.get_close_matches(key, KNOWN_KEYS, n=1)), None))
        for key in config
        if key not in KNOWN_KEYS and key != "password"
    )
    rendezvous = {key: options[key] for key in RENDEZVOUS_KEYS if key in options}
    if not rendezvous.get("topology") and environ.get(TOPOLOGY_VARIABLE):
        rendezvous["topology"] = environ[TOPOLOGY_VARIABLE]
    parse_conf(rendezvous)  # a bad value is an error before any I/O
    return BackendConf(
        endpoint=endpoint.strip() or f"localhost:{DEFAULT_PORT}",
        rendezvous=rendezvous,
        ssl=context,
        username=username,
        password=password,
        backend=backend,
        store_timeout=store_timeout,
        unknown=unknown,
    )
