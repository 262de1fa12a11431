"""What torchrun's ``--rdzv-endpoint``, ``--rdzv-conf`` and environment give the backend.

Pure: no torch, no I/O but reading the TLS files a conf key names. torchrun keeps every
``--rdzv-conf`` value a ``str``, and adds ``timeout`` (the int 900, unless given), which
this backend ignores, as torch's dynamic handler does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._checks import echo, is_number, type_name, wrong_type
from .._etcd._tls import client_context
from ._loop import BACKENDS

if TYPE_CHECKING:
    import ssl
    from collections.abc import Mapping

#: Where the etcd password comes from: never argv, where ``ps`` shows it.
PASSWORD_VARIABLE = "ANYRDZV_ETCD_PASSWORD"

#: The keys :meth:`anyrdzv.Rendezvous.from_conf` reads, with torch's defaults.
RENDEZVOUS_KEYS = (
    "join_timeout",
    "last_call_timeout",
    "close_timeout",
    "keep_alive_interval",
    "keep_alive_max_attempt",
)

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
    """

    endpoint: str
    rendezvous: dict[str, str]
    ssl: ssl.SSLContext | None
    username: str | None
    password: str | None
    backend: str
    store_timeout: float


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
    :param environ: the environment, for :data:`PASSWORD_VARIABLE`
    :raises ValueError: naming the key, if a value is bad, a TLS file is missing or not
        PEM, ``password`` is given in the conf, or ``user`` comes without a password
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
    return BackendConf(
        endpoint=endpoint.strip() or f"localhost:{DEFAULT_PORT}",
        rendezvous={key: options[key] for key in RENDEZVOUS_KEYS if key in options},
        ssl=context,
        username=username,
        password=password,
        backend=backend,
        store_timeout=store_timeout,
    )
