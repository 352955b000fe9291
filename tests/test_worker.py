"""The worker inside a real node: a study sent over DICOM is analysed and ends REPORTED, NO_MODEL or
FAILED, with its result, timings and overlays recorded."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from onconode.dicom_node.scu import PeerAddress, send_paths
from onconode.state import StudyState
from tests.inference.tiny_model import write_model
from tests.support import NodeProcess

RULES = [{"name": "chest-ct", "modality": "CT", "min_slices": 10, "target": "lung", "model": "test-ct"}]


def _study_uid(folder: Path) -> str:
    return str(pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True).StudyInstanceUID)


def _node(tmp_path: Path, rules: list[dict[str, object]]) -> NodeProcess:
    write_model(tmp_path / "models", "test-ct", "CT", size=64)
    return NodeProcess(tmp_path, routing=rules, analysis={"models": str(tmp_path / "models")},
                       storage={"results": str(tmp_path / "results")})


def test_a_received_ct_study_is_analysed_and_reported(tmp_path: Path, data: Path) -> None:
    series = data / "dicom" / "lung-pet-ct-dx-a0002-ct"
    node = _node(tmp_path, RULES)
    node.start()
    try:
        assert send_paths([series], PeerAddress("ONCONODE", "127.0.0.1", node.port)).all_succeeded
        study_uid = _study_uid(series)
        # With no destination (the sender is not a caller with a port) delivery settles at once.
        study = node.wait_for_state(study_uid, StudyState.DELIVERED, timeout=60)
        assert study.reason == "no destination configured"
        reported = [t for t in node.db().transitions(study_uid) if t.to_state == StudyState.REPORTED]
        result = node.db().latest_result(study_uid)
        assert result is not None and result["outcome"] == "analysed" and result["model"] == "test-ct"
        # One conclusion, said the same way in the result row and the transition.
        assert reported[-1].reason == result["conclusion"]["headline"]
        assert result["conclusion"]["probability"] == result["positive_probability"]
        assert set(result["timings_ms"]) >= {"decode", "preprocess", "inference", "gradcam", "analysis_total"}
        assert result["overlays"] and all((tmp_path / "results" / study_uid / name).is_file()
                                          for name in result["overlays"])
        states = [t.to_state for t in node.db().transitions(study_uid)]
        assert states[-5:] == [StudyState.QUEUED, StudyState.ANALYSING, StudyState.REPORTED,
                               StudyState.DELIVERING, StudyState.DELIVERED]
        # highdicom warns about this single-component Patient's Name by quoting it: never into the log.
        assert "Lung_Dx" not in node.log()
    finally:
        node.stop()


def test_a_study_no_rule_matches_ends_no_model_with_the_reason(tmp_path: Path, data: Path) -> None:
    series = data / "dicom" / "brain-tumor-progression-pgbm-001-t1post"  # MR: the CT rule does not match
    node = _node(tmp_path, RULES)
    node.start()
    try:
        assert send_paths([series], PeerAddress("ONCONODE", "127.0.0.1", node.port)).all_succeeded
        study = node.wait_for_state(_study_uid(series), StudyState.NO_MODEL, timeout=60)
        assert study.reason is not None and "no applicable model" in study.reason
    finally:
        node.stop()


def test_a_broken_model_stops_the_start_naming_the_model(tmp_path: Path) -> None:
    manifest = write_model(tmp_path / "models", "test-ct", "CT", size=64)
    (tmp_path / "models" / "test-ct.onnx").write_bytes(b"tampered")
    node = NodeProcess(tmp_path, analysis={"models": str(manifest.parent)})
    with pytest.raises(RuntimeError, match=r"(?s)exited with 2.*model test-ct.*sha256"):
        node.start(timeout=20)
