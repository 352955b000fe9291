"""The SQLite state layer on a real database file."""

from __future__ import annotations

from pathlib import Path

import pytest

from onconode.dicom_node.assembler import Assembler
from onconode.dicom_node.identify import InstanceIdentity
from onconode.state.database import SCHEMA_VERSION
from onconode.state import ReceivedInstance, RecordOutcome, StateDB, StudyState


def _instance(sop: str, sha: str = "a" * 64, at: float = 1000.0, study: str = "1.2.3") -> ReceivedInstance:
    return ReceivedInstance(InstanceIdentity(study, "1.2.3.4", sop, "1.2.840.10008.5.1.4.1.1.2", "CT"),
                            "1.2.840.10008.1.2.1", 10, sha, at, "PACS")


@pytest.fixture
def db(tmp_path: Path) -> StateDB:
    return StateDB(tmp_path / "state.db")


def test_database_is_wal_and_versioned(db: StateDB, tmp_path: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(tmp_path / "state.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2


def test_a_version_1_database_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    import sqlite3

    from onconode.state.database import MIGRATIONS

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])
    conn.execute("INSERT INTO studies VALUES ('1.2.3', 'receiving', NULL, 1, 1, 1, 'A', 'h')")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    db = StateDB(path)
    try:
        assert db.study("1.2.3") is not None
        node = db.node_id()
        assert len(node) == 32
    finally:
        db.close()
    reopened = StateDB(path)
    try:
        assert reopened.node_id() == node  # made once, kept
    finally:
        reopened.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    import sqlite3

    StateDB(tmp_path / "state.db").close()
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute("PRAGMA user_version=99")
    conn.commit()
    with pytest.raises(RuntimeError, match="schema version 99"):
        StateDB(tmp_path / "state.db")


def test_new_duplicate_and_replaced_instances(db: StateDB) -> None:
    assert db.record_instance(_instance("1.1")) == RecordOutcome.NEW
    assert db.record_instance(_instance("1.1")) == RecordOutcome.DUPLICATE
    assert db.record_instance(_instance("1.1", sha="b" * 64)) == RecordOutcome.REPLACED
    assert db.instance_sha256("1.1") == "b" * 64
    assert len(db.instances("1.2.3")) == 1
    assert db.study("1.2.3").instances == 1  # type: ignore[union-attr]


def test_study_becomes_stable_then_queued_only_after_the_quiet_time(db: StateDB) -> None:
    db.record_instance(_instance("1.1", at=1000.0))
    assembler = Assembler(db, stable_seconds=10, poll_seconds=1)
    assert assembler.run_once(now=1009.0) == []
    db.record_instance(_instance("1.2", at=1005.0))
    assert assembler.run_once(now=1012.0) == []  # the second instance restarted the clock
    assert assembler.run_once(now=1015.0) == ["1.2.3"]
    assert [t.to_state for t in db.transitions("1.2.3")] == [
        StudyState.RECEIVING, StudyState.STABLE, StudyState.QUEUED]


def test_transition_respects_expected_state_and_late_instances(db: StateDB) -> None:
    db.record_instance(_instance("1.1", at=1000.0))
    assert not db.transition("1.2.3", StudyState.QUEUED, "x", expect=[StudyState.STABLE])
    assert not db.transition("1.2.3", StudyState.STABLE, "x", received_before=999.0)
    assert not db.transition("9.9", StudyState.STABLE, "no such study")
    assert db.transition("1.2.3", StudyState.STABLE, "quiet", expect=[StudyState.RECEIVING], received_before=1000.0)
    assert db.study("1.2.3").state == StudyState.STABLE  # type: ignore[union-attr]


def test_a_new_instance_reopens_a_finished_study(db: StateDB) -> None:
    db.record_instance(_instance("1.1"))
    db.transition("1.2.3", StudyState.DELIVERED, "done")
    db.record_instance(_instance("1.2"))
    study = db.study("1.2.3")
    assert study is not None and study.state == StudyState.RECEIVING
    assert db.transitions("1.2.3")[-1].reason == "new instance while delivered"


def test_studies_filter_by_state(db: StateDB) -> None:
    db.record_instance(_instance("1.1", study="1.2.3"))
    db.record_instance(_instance("2.1", study="1.2.4"))
    db.transition("1.2.4", StudyState.QUEUED, "test")
    assert [s.study_uid for s in db.studies([StudyState.QUEUED])] == ["1.2.4"]
    assert len(db.studies()) == 2
