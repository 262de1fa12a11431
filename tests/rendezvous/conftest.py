"""The fixture the rendezvous tests share."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def run_id() -> str:
    """A run id no other test uses: the etcd store is shared."""
    return f"run-{uuid.uuid4().hex[:12]}"
