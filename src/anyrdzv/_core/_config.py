"""parse_rendezvous_config(): torch's ``--rdzv-conf`` parsing, with its messages.

Pure: no I/O, no event loop.
"""

from __future__ import annotations

from .._checks import check_str

_FORMAT_ERROR = (
    "The rendezvous configuration string must be in format <key1>=<value1>,...,<keyN>=<valueN>."
)


def parse_rendezvous_config(config_str: str) -> dict[str, str]:
    """Parse a torchrun ``--rdzv-conf`` string such as ``"join_timeout=60,last_call_timeout=5"``.

    The behaviour and error messages match torch's ``_parse_rendezvous_config``:
    items are separated by ``,``, each item is split at its first ``=``, keys and
    values are stripped, and a later duplicate key wins. This function does no I/O.

    :param config_str: the configuration string; blank gives an empty dict
    :raises TypeError: if ``config_str`` is not a ``str``
    :raises ValueError: if an item has an empty key, or a key has no value
    :return: the options, as strings
    """
    check_str("config_str", config_str)
    config_str = config_str.strip()
    config: dict[str, str] = {}
    if not config_str:
        return config
    for item in config_str.split(","):
        key, _, value = item.partition("=")
        key = key.strip()
        if not key:
            raise ValueError(_FORMAT_ERROR)
        value = value.strip()
        if not value:
            raise ValueError(
                f"The rendezvous configuration option '{key}' must have a value specified."
            )
        config[key] = value
    return config
