"""Shared fixtures: the real data folder and a real ``onconode serve`` process on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from onconode import runtime
from tests.postgres import postgres, postgres_url, state_target  # noqa: F401  (fixtures: PostgreSQL, both engines)
from tests.processed_node import Processed, processed_node
from tests.support import NodeProcess, data_root

# The test process runs node code in-process, so it is configured as a node process is at its start.
runtime.configure()


@pytest.fixture(scope="session")
def data() -> Path:
    root = data_root()
    if root is None:
        pytest.skip("shared DICOM data not found: set ONCONODE_DATA (default ../shared/data)")
    return root


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    """A node with a 1 s stable time, accepting any caller, stopped after the test."""
    process = NodeProcess(tmp_path)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def processed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processed]:
    """A node with its API, a test MR model and two real studies received and processed (session-wide)."""
    yield from processed_node(tmp_path_factory)
