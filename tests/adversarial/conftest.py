"""Nodes for the adversarial tests: short timeouts and small limits, on both acceptor paths, served
in the node's process or by two receiver processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dicom_node.acceptors import fast_ingest  # noqa: F401  (the acceptor-path fixture)
from tests.support import NodeProcess

TIMEOUT = 2.0  # node.network_timeout_seconds and node.handshake_timeout_seconds
MAX_ASSOCIATIONS = 3
MAX_PDU = 65536
MAX_DATASET = 1 << 20  # the smallest node.max_dataset_bytes allows


def hostile_settings(fast: bool, receivers: int) -> dict[str, object]:
    return {"fast_ingest": fast, "receiver_processes": receivers, "network_timeout_seconds": TIMEOUT,
            "handshake_timeout_seconds": TIMEOUT, "max_associations": MAX_ASSOCIATIONS,
            "max_pdu_bytes": MAX_PDU, "max_dataset_bytes": MAX_DATASET}


@pytest.fixture(scope="package", params=[1, 2], ids=["one-process", "two-receivers"])
def hostile(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
            fast_ingest: bool) -> Iterator[NodeProcess]:  # noqa: F811
    """A node for hostile peers; tests leave it serving, and each checks that it does."""
    node = NodeProcess(tmp_path_factory.mktemp("hostile"), node=hostile_settings(fast_ingest, request.param))
    node.start()
    yield node
    node.stop()


def node_with(tmp_path: Path, fast: bool, receivers: int = 1, node: dict[str, object] | None = None,
              **sections: object) -> NodeProcess:
    """A node of its own for a test that needs settings the shared one does not have."""
    return NodeProcess(tmp_path, node={**hostile_settings(fast, receivers), **(node or {})}, **sections)
