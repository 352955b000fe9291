"""One real node for the API and audit tests (the ``processed`` fixture in ``tests/conftest.py``): tiny ONNX models, a routing rule, two real studies sent and processed.

The node runs as ``onconode serve`` (``tests.support.NodeProcess``) with its HTTP API on a free
loopback port. It receives the Brain-Tumor-Progression T1 post series (routed to the test MR
model: a result with overlays) and the enhanced multi-frame CT (no rule: "no applicable model").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest

from onconode.dicom_node.scu import PeerAddress, send_paths
from onconode.state import FINAL_STATES, StudyState
from tests.inference.tiny_model import write_model
from tests.support import NodeProcess, data_root

MR_SERIES = "brain-tumor-progression-pgbm-001-t1post"
MULTIFRAME = "enhanced-multiframe"
# Where an analysed study ends: REPORTED while no delivery stage is wired, DELIVERED once it is.
ANALYSED_END = ("reported", "delivered")
QUIET_SECONDS = 2.0  # REPORTED counts as the end once nothing moved it on for this long


@dataclass
class Processed:
    node: NodeProcess
    data: Path
    mr_study: str
    multiframe_study: str

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.node.api_url, headers=headers, timeout=10)

    def send(self, path: Path) -> None:
        report = send_paths([path], PeerAddress("ONCONODE", "127.0.0.1", self.node.port))
        assert report.all_succeeded, report.summary()


def study_uid(folder: Path) -> str:
    first = min(folder.glob("*.dcm"))
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)


def wait_until_done(node: NodeProcess, uid: str, timeout: float = 60) -> StudyState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study = node.study(uid)
        if study is not None and (study.state in FINAL_STATES or (
                study.state == StudyState.REPORTED and time.time() - study.state_changed_at > QUIET_SECONDS)):
            return study.state
        time.sleep(0.2)
    raise AssertionError(f"study {uid} not processed after {timeout} s: {node.study(uid)}\n{node.log()[-3000:]}")


def processed_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processed]:
    root = data_root()
    if root is None:
        pytest.skip("shared DICOM data not found: set ONCONODE_DATA (default ../shared/data)")
    folder = tmp_path_factory.mktemp("api-node")
    models = folder / "models"
    write_model(models, "test-mr", "MR")
    node = NodeProcess(folder, analysis={"models": str(models), "intra_op_threads": 1}, routing=[
        {"name": "brain-mr", "modality": "MR", "model": "test-mr", "target": "brain", "min_slices": 10,
         "max_analysed_slices": 6}])
    node.start()
    try:
        run = Processed(node, root, study_uid(root / "dicom" / MR_SERIES), study_uid(root / "dicom" / MULTIFRAME))
        run.send(root / "dicom" / MR_SERIES)
        run.send(root / "dicom" / MULTIFRAME)
        wait_until_done(node, run.mr_study)
        wait_until_done(node, run.multiframe_study)
        yield run
    finally:
        node.stop()
