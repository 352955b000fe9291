"""Every node the listener tests start runs on both acceptor paths (``node.fast_ingest``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dicom_node.acceptors import fast_ingest  # noqa: F401  (the acceptor-path fixture)
from tests.dicom_node.pki import pki  # noqa: F401  (the test CA and certificates)
from tests.support import NodeProcess


@pytest.fixture
def node(tmp_path: Path, fast_ingest: bool) -> Iterator[NodeProcess]:  # noqa: F811
    """A node with a 1 s stable time, accepting any caller, on the acceptor path of ``fast_ingest``."""
    process = NodeProcess(tmp_path, node={"fast_ingest": fast_ingest})
    process.start()
    yield process
    process.stop()
