"""The two acceptor paths (``node.fast_ingest``) every network test runs on."""

from __future__ import annotations

import pytest

ACCEPTORS = [pytest.param(True, id="fast"), pytest.param(False, id="stock")]


@pytest.fixture(scope="package", params=ACCEPTORS)
def fast_ingest(request: pytest.FixtureRequest) -> bool:
    """``node.fast_ingest`` for the nodes a test starts: the event-driven acceptor, or stock pynetdicom."""
    return bool(request.param)
