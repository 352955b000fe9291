"""Receiving real studies over real associations: pynetdicom and DCMTK senders, restart, kill -9."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pydicom
from pynetdicom import AE
from pynetdicom.presentation import build_context

from onconode.dicom_node.scu import PeerAddress, find_dicom_files, send_paths
from onconode.state import StudyState
from tests.support import NodeProcess, dataset_bytes, echo_status, require


def _peer(node: NodeProcess) -> PeerAddress:
    return PeerAddress("ONCONODE", "127.0.0.1", node.port)


def _stored_path(node: NodeProcess, source: Path) -> Path:
    ds = pydicom.dcmread(source, stop_before_pixels=True)
    return node.store / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"


def test_every_shared_object_sent_by_pynetdicom_is_stored_byte_identical(node: NodeProcess, data: Path) -> None:
    sources, _ = find_dicom_files([data / "dicom"])
    report = send_paths([data / "dicom"], _peer(node))

    assert report.all_succeeded, report.summary()
    assert report.sent == len(sources) == 384  # every object in the shared data (see its README)
    for source in sources:
        stored = _stored_path(node, source.path)
        assert dataset_bytes(stored) == dataset_bytes(source.path), source.path
        meta = pydicom.filereader.read_file_meta_info(stored)
        assert meta.TransferSyntaxUID == source.transfer_syntax  # stored as received, JPEG Lossless included
    assert node.leftovers() == []


def test_dcmtk_storescu_study_is_stored_and_becomes_stable_then_queued(node: NodeProcess, data: Path) -> None:
    storescu = require("storescu")
    series = data / "dicom" / "lung-pet-ct-dx-a0002-ct"  # JPEG Lossless SV1
    files = sorted(series.glob("*.dcm"))
    done = subprocess.run([storescu, "-xs", "-aet", "STORESCU", "-aec", "ONCONODE", "+sd", "127.0.0.1", str(node.port),
                           str(series)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr

    study_uid = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    # No model is installed in this node, so the analysis stage ends the study "no applicable model".
    study = node.wait_for_state(study_uid, StudyState.NO_MODEL)
    assert study.instances == len(files) == 30
    history = [t.to_state for t in node.db().transitions(study_uid)]
    assert history == [StudyState.RECEIVING, StudyState.STABLE, StudyState.QUEUED, StudyState.ANALYSING,
                       StudyState.NO_MODEL]
    for source in files:
        stored = pydicom.dcmread(_stored_path(node, source))
        original = pydicom.dcmread(source)
        # storescu may re-encode the header, but must not transcode: compressed frames are equal.
        assert stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert stored.PixelData == original.PixelData


def test_dcmtk_echoscu_and_storescu_of_uncompressed_series_is_byte_identical(node: NodeProcess, data: Path) -> None:
    echoscu, storescu = require("echoscu"), require("storescu")
    assert subprocess.run([echoscu, "-aec", "ONCONODE", "127.0.0.1", str(node.port)], timeout=30, check=False).returncode == 0
    series = data / "dicom" / "lidc-idri-0001"  # the one series storescu sends unchanged (PEERS.md)
    done = subprocess.run([storescu, "-aec", "ONCONODE", "+sd", "127.0.0.1", str(node.port), str(series)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    for source in sorted(series.glob("*.dcm")):
        assert dataset_bytes(_stored_path(node, source)) == dataset_bytes(source)


def test_resent_identical_instances_are_acknowledged_and_not_duplicated(node: NodeProcess, data: Path) -> None:
    series = data / "dicom" / "brain-tumor-progression-pgbm-001-t1post"
    first = send_paths([series], _peer(node))
    second = send_paths([series], _peer(node))

    assert first.sent == second.sent == 24 and second.all_succeeded
    assert len(node.stored_files()) == 24
    node.wait_for_log("duplicates=24")
    study_uid = pydicom.dcmread(next(series.glob("*.dcm")), stop_before_pixels=True).StudyInstanceUID
    assert node.study(study_uid).instances == 24  # type: ignore[union-attr]


def test_state_survives_a_restart_and_a_late_instance_reopens_the_study(tmp_path: Path, data: Path) -> None:
    series = data / "dicom" / "upenn-gbm-00001-t1post"
    files = sorted(series.glob("*.dcm"))
    study_uid = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    node = NodeProcess(tmp_path)
    node.start()
    try:
        assert send_paths(files[:-1], _peer(node)).all_succeeded
        node.wait_for_state(study_uid, StudyState.NO_MODEL)  # no model installed in this node
        node.stop()

        node.start()
        study = node.study(study_uid)
        assert study is not None and study.state == StudyState.NO_MODEL and study.instances == len(files) - 1

        assert send_paths(files[-1:], _peer(node)).all_succeeded
        study = node.wait_for_state(study_uid, StudyState.NO_MODEL)
        assert study.instances == len(files)
        reasons = [t.reason for t in node.db().transitions(study_uid)]
        assert "new instance while no_model" in reasons
    finally:
        node.stop()


def test_kill_9_during_a_133_slice_study_loses_nothing_acknowledged(tmp_path: Path, data: Path) -> None:
    files = sorted((data / "dicom" / "lidc-idri-0001").glob("*.dcm"))
    study_uid = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    node = NodeProcess(tmp_path, study={"stable_seconds": 30})
    node.start()
    acknowledged: list[str] = []

    def send_until_cut() -> None:
        ae = AE(ae_title="KILLTEST")
        ae.requested_contexts = [build_context(pydicom.uid.CTImageStorage, [pydicom.uid.ExplicitVRLittleEndian])]
        assoc = ae.associate("127.0.0.1", node.port, ae_title="ONCONODE")
        for path in files:
            if not assoc.is_established:
                return
            response = assoc.send_c_store(path)
            if response and response.Status == 0x0000:
                acknowledged.append(path.stem)
        assoc.release()

    sender = threading.Thread(target=send_until_cut)
    sender.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    node.kill()
    sender.join(timeout=60)
    assert 40 <= len(acknowledged) < len(files), "the kill must land mid-study"

    node.start()
    try:
        db = node.db()
        indexed = {i.identity.sop_instance_uid for i in db.instances(study_uid)}
        for name in acknowledged:
            path = _stored_path(node, data / "dicom" / "lidc-idri-0001" / f"{name}.dcm")
            assert path.is_file() and path.stem in indexed, name
        assert node.leftovers() == []

        assert send_paths(files, _peer(node)).all_succeeded
        assert len(db.instances(study_uid)) == len(files) == 133
        assert len(node.stored_files()) == 133
        for source in files:
            assert dataset_bytes(_stored_path(node, source)) == dataset_bytes(source)
        assert echo_status(node.port) == 0
    finally:
        node.stop()
