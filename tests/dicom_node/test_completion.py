"""When a study is complete: the sender's release of the association that delivered it (after a
settle time, or at once when the sender, asked by C-FIND, holds exactly what is here), or, failing
that, the quiet time; each over real associations (both acceptor paths, a real Orthanc as the
Query/Retrieve peer), and the assembler's clock rules on the state alone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.presentation import build_context

from onconode.config import Caller
from onconode.dicom_node.assembler import Assembler
from onconode.dicom_node.scu import PeerAddress, send_paths
from onconode.state import StateDB, StudyState
from onconode.state.records import ReceivedInstance
from onconode.values import InstanceIdentity
from tests import peers
from tests.support import NodeProcess, wait_for

RELEASED = "the sender released the association that delivered it; nothing new since"
COUNTED = ("the sender released the association that delivered it and holds {} instances of it "
           "(C-FIND NumberOfStudyRelatedInstances), all of them here")


def _instance(sop: str, at: float, study: str = "1.2.3") -> ReceivedInstance:
    return ReceivedInstance(InstanceIdentity(study, "1.2.3.4", sop, "1.2.840.10008.5.1.4.1.1.2", "CT"),
                            "1.2.840.10008.1.2.1", 10, "a" * 64, at, "PACS")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StateDB]:
    state = StateDB(tmp_path / "state.db")
    yield state
    state.close()


def _reasons(db: StateDB, study_uid: str) -> list[str | None]:
    return [t.reason for t in db.transitions(study_uid) if t.to_state == StudyState.STABLE]


def test_a_released_association_completes_its_study_after_the_settle_time(db: StateDB) -> None:
    db.record_instance(_instance("1.1", at=1000.0))
    db.association_released(["1.2.3"], at=1000.5, settle_seconds=2)
    assembler = Assembler(db, stable_seconds=60, poll_seconds=1)
    assert assembler.run_once(now=1002.0) == []  # still settling
    assert assembler.run_once(now=1002.5) == ["1.2.3"]
    assert _reasons(db, "1.2.3") == [RELEASED]


def test_an_instance_after_the_release_waits_for_its_own_signal(db: StateDB) -> None:
    db.record_instance(_instance("1.1", at=1000.0))
    db.association_released(["1.2.3"], at=1000.5, settle_seconds=2)
    db.record_instance(_instance("1.2", at=1001.0))  # a second association, within the settle time
    assembler = Assembler(db, stable_seconds=60, poll_seconds=1)
    assert assembler.run_once(now=1010.0) == []  # the first release does not cover the second's instance
    db.association_released(["1.2.3"], at=1011.0, settle_seconds=2)
    assert assembler.run_once(now=1013.0) == ["1.2.3"]


def test_without_a_release_the_quiet_time_decides(db: StateDB) -> None:
    db.record_instance(_instance("1.1", at=1000.0))
    assembler = Assembler(db, stable_seconds=10, poll_seconds=1)
    assert assembler.run_once(now=1005.0) == []
    assert assembler.run_once(now=1010.0) == ["1.2.3"]
    assert _reasons(db, "1.2.3") == ["no new instance for 10 s"]


def test_a_release_of_a_study_no_longer_receiving_changes_nothing(db: StateDB) -> None:
    db.record_instance(_instance("1.1", at=1000.0))
    db.transition("1.2.3", StudyState.DELIVERED, "done")
    db.association_released(["1.2.3"], at=1001.0, settle_seconds=0)
    assert Assembler(db, stable_seconds=60, poll_seconds=1).run_once(now=1100.0) == []
    assert db.study("1.2.3").state == StudyState.DELIVERED  # type: ignore[union-attr]


def test_a_caller_holding_exactly_what_is_here_completes_the_study_at_once(db: StateDB) -> None:
    db.record_instance(_instance("1.1", at=1000.0))
    db.record_instance(_instance("1.2", at=1000.1))
    db.association_released(["1.2.3"], at=1000.5, settle_seconds=30, calling_ae="PACS")
    asked: list[str] = []

    def count(study_uid: str) -> int:
        asked.append(study_uid)
        return 2

    assembler = Assembler(db, stable_seconds=60, poll_seconds=1, counters={"PACS": count})
    assert assembler.run_once(now=1000.6) == ["1.2.3"]
    assert asked == ["1.2.3"]  # of the PACS, the caller that released it
    assert _reasons(db, "1.2.3") == [COUNTED.format(2)]


def test_a_caller_holding_more_is_asked_once_and_the_settle_time_decides(db: StateDB) -> None:
    db.record_instance(_instance("1.1", at=1000.0))
    db.association_released(["1.2.3"], at=1000.5, settle_seconds=5, calling_ae="PACS")
    asked: list[str] = []

    def count(study_uid: str) -> int:
        asked.append(study_uid)
        return 3  # the PACS holds instances that have not arrived (yet)

    assembler = Assembler(db, stable_seconds=60, poll_seconds=1, counters={"PACS": count})
    assert assembler.run_once(now=1001.0) == []
    assert assembler.run_once(now=1002.0) == []
    assert asked == ["1.2.3"]
    assert assembler.run_once(now=1005.5) == ["1.2.3"]
    assert _reasons(db, "1.2.3") == [RELEASED]


@pytest.mark.parametrize("error", [OSError("unreachable"), RuntimeError("rejected")])
def test_a_caller_that_cannot_be_asked_leaves_the_settle_time_to_decide(db: StateDB, error: Exception) -> None:
    db.record_instance(_instance("1.1", at=1000.0))
    db.association_released(["1.2.3"], at=1000.5, settle_seconds=2, calling_ae="PACS")

    def count(study_uid: str) -> int:
        raise error

    assembler = Assembler(db, stable_seconds=60, poll_seconds=1, counters={"PACS": count})
    assert assembler.run_once(now=1001.0) == []
    assert assembler.run_once(now=1002.5) == ["1.2.3"]
    assert _reasons(db, "1.2.3") == [RELEASED]


def test_only_the_releasing_caller_is_asked(db: StateDB) -> None:
    db.record_instance(_instance("1.1", at=1000.0))
    db.association_released(["1.2.3"], at=1000.5, settle_seconds=2, calling_ae="MODALITY")

    def count(study_uid: str) -> int:
        raise AssertionError("a caller that did not release the study was asked")

    assert Assembler(db, 60, 1, counters={"PACS": count}).run_once(now=1001.0) == []


def test_a_count_query_needs_the_callers_address() -> None:
    with pytest.raises(ValueError, match="count_query needs the caller's host and port"):
        Caller(ae_title="PACS", count_query=True)
    assert Caller(ae_title="PACS", host="127.0.0.1", port=4242, count_query=True).count_query


def _send(node: NodeProcess, files: list[Path], release: bool, calling_ae: str = "PACS") -> None:
    ae = AE(ae_title=calling_ae)
    contexts = {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
                for ds in (pydicom.dcmread(f, stop_before_pixels=True) for f in files)}
    ae.requested_contexts = [build_context(sop, [syntax]) for sop, syntax in sorted(contexts)]
    assoc = ae.associate("127.0.0.1", node.port, ae_title="ONCONODE")
    assert assoc.is_established
    for path in files:
        assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0x0000
    if release:
        assoc.release()
    else:
        assoc.abort()


@pytest.fixture
def slow_node(tmp_path: Path, fast_ingest: bool) -> Iterator[NodeProcess]:
    """Quiet time 8 s, settle 0.5 s, the PACS caller 0.2 s: which signal completed a study shows in
    when it was queued and in its history."""
    process = NodeProcess(tmp_path, node={"fast_ingest": fast_ingest},
                          study={"stable_seconds": 8, "settle_seconds": 0.5, "poll_seconds": 0.1},
                          callers=[{"ae_title": "PACS", "settle_seconds": 0.2}])
    process.start()
    yield process
    process.stop()


def test_a_series_sent_and_released_is_analysed_without_the_quiet_time(slow_node: NodeProcess, data: Path) -> None:
    files = sorted((data / "dicom" / "brain-tumor-progression-pgbm-001-t1post").glob("*.dcm"))
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    sent = time.monotonic()
    _send(slow_node, files, release=True)
    slow_node.wait_for_state(study_uid, StudyState.NO_MODEL, timeout=30)
    # Well inside the 8 s quiet time: the release, not the silence, completed it.
    assert time.monotonic() - sent < 8
    assert _reasons(slow_node.db(), study_uid) == [RELEASED]


def test_an_aborted_association_leaves_the_study_to_the_quiet_time(slow_node: NodeProcess, data: Path) -> None:
    files = sorted((data / "dicom" / "brain-tumor-progression-pgbm-001-t1post").glob("*.dcm"))[:5]
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    _send(slow_node, files, release=False)
    slow_node.wait_for_state(study_uid, StudyState.NO_MODEL, timeout=30)
    assert _reasons(slow_node.db(), study_uid) == ["no new instance for 8 s"]


@pytest.mark.peers
@pytest.mark.parametrize("sent_to_node", [5, 3])
def test_orthanc_asked_by_c_find_completes_a_study_it_holds_in_full(tmp_path: Path, data: Path,
                                                                    sent_to_node: int) -> None:
    """Orthanc holds five slices of a study. Sent all five, the node completes the study as soon as
    the association is released (Orthanc's count matches); sent three, the settle time decides."""
    files = sorted((data / "dicom" / "brain-tumor-progression-pgbm-001-t1post").glob("*.dcm"))[:5]
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    orthanc = peers.Orthanc(tmp_path / "orthanc", node_port=None)
    orthanc.start()
    (tmp_path / "node").mkdir()
    node = NodeProcess(tmp_path / "node", study={"stable_seconds": 60, "settle_seconds": 30, "poll_seconds": 0.1},
                       callers=[{"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.dicom_port,
                                 "count_query": True, "settle_seconds": 3}])
    try:
        assert send_paths(files, PeerAddress("ORTHANC", "127.0.0.1", orthanc.dicom_port),
                          calling_ae="MODALITY").all_succeeded
        node.start()
        sent = time.monotonic()
        _send(node, files[:sent_to_node], release=True, calling_ae="ORTHANC")

        def completed() -> list[str | None]:
            db = node.db()
            try:
                return _reasons(db, study_uid)
            finally:
                db.close()

        wait_for(lambda: bool(completed()), 20, "the study's completion")
        took = time.monotonic() - sent
        if sent_to_node == 5:
            assert completed() == [COUNTED.format(5)]
            assert took < 3  # neither the caller's 3 s settle time nor the quiet time
        else:
            assert completed() == [RELEASED]
            assert took >= 3
    finally:
        node.stop()
        orthanc.stop()
