"""A member's payload, as its key holds it.

A :class:`~anyrdzv.Heartbeat`'s key holds its payload as given. A
:class:`~anyrdzv.Rendezvous` node's heartbeat key holds a JSON record of the node
(``{"min_nodes":2,"max_nodes":4,"payload":"<base64>"}``, written by the rendezvous's
rules): the members functions give its payload, decoded, so that a run's nodes show what
they were given, not their record.

Pure: no I/O, no event loop.
"""

from __future__ import annotations

import base64
import binascii
import json

from .._checks import is_int

#: The fields of a rendezvous node's record, exactly.
_NODE_RECORD = frozenset({"min_nodes", "max_nodes", "payload"})


def member_payload(value: bytes) -> bytes:
    """The payload of the member whose key holds ``value``: the payload of a rendezvous
    node's record (a JSON object of exactly ``min_nodes``, ``max_nodes`` and a base64
    ``payload``), else ``value`` itself."""
    if not value.startswith(b"{"):
        return value  # the cheap common case: no JSON object
    try:
        record = json.loads(value)
    except ValueError:  # not JSON, or not UTF-8
        return value
    if not isinstance(record, dict) or record.keys() != _NODE_RECORD:
        return value
    payload = record["payload"]
    if not (is_int(record["min_nodes"]) and is_int(record["max_nodes"])) or not isinstance(
        payload, str
    ):
        return value
    try:
        return base64.b64decode(payload.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return value
