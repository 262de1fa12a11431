"""member_payload(): a member's payload from its key's value, and the record a
Rendezvous node's heartbeat key holds, whose payload it finds."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from anyrdzv._membership._payload import member_payload
from anyrdzv._rendezvous import _rules as rules


@given(st.integers(1, 2**40), st.integers(1, 2**40), st.binary(max_size=200))
def test_a_rendezvous_node_s_record_gives_its_payload(
    min_nodes: int, max_nodes: int, payload: bytes
) -> None:
    record = rules.encode_member(rules.Member(min_nodes, max_nodes, payload))
    assert member_payload(record) == payload


@given(st.binary(max_size=200))
def test_any_other_value_is_its_own_payload(value: bytes) -> None:
    try:
        record = json.loads(value)
    except ValueError:
        record = None
    if isinstance(record, dict) and record.keys() == {"min_nodes", "max_nodes", "payload"}:
        return  # a node's record, or near enough to be looked at
    assert member_payload(value) == value
