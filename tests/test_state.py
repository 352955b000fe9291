"""The state layer on both engines: a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from onconode.dicom_node.assembler import Assembler
from onconode.state import ReceivedInstance, RecordOutcome, StateDB, StudyState
from onconode.state.database import MIGRATIONS, SCHEMA_VERSION, SchemaTooNew
from onconode.state.schema import statements
from onconode.values import InstanceIdentity
from tests.state import raw


def _instance(sop: str, sha: str = "a" * 64, at: float = 1000.0, study: str = "1.2.3") -> ReceivedInstance:
    return ReceivedInstance(InstanceIdentity(study, "1.2.3.4", sop, "1.2.840.10008.5.1.4.1.1.2", "CT"),
                            "1.2.840.10008.1.2.1", 10, sha, at, "PACS")


@pytest.fixture
def db(state_target: Path | str) -> Iterator[StateDB]:
    state = StateDB(state_target)
    yield state
    state.close()


def test_database_is_versioned(db: StateDB, state_target: Path | str) -> None:
    assert raw.schema_version(state_target) == db.schema_version() == SCHEMA_VERSION == 5  # numbered migrations: tables, meta, leases, releases, releasing caller


def test_sqlite_database_is_wal(tmp_path: Path) -> None:
    StateDB(tmp_path / "state.db").close()
    conn = sqlite3.connect(tmp_path / "state.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_version_1_database_is_migrated_and_keeps_its_rows(state_target: Path | str) -> None:
    old = MIGRATIONS[0].sqlite if isinstance(state_target, Path) else MIGRATIONS[0].postgresql
    raw.script(state_target, statements(old))
    raw.execute(state_target, "INSERT INTO studies VALUES ('1.2.3', 'receiving', NULL, 1, 1, 1, 'A', 'h')")
    raw.set_schema_version(state_target, 1)
    db = StateDB(state_target)
    try:
        assert db.study("1.2.3") is not None
        node = db.node_id()
        assert len(node) == 32
    finally:
        db.close()
    reopened = StateDB(state_target)
    try:
        assert reopened.node_id() == node  # made once, kept
        assert reopened.schema_version() == SCHEMA_VERSION
    finally:
        reopened.close()


def test_newer_schema_is_refused(state_target: Path | str) -> None:
    StateDB(state_target).close()
    raw.set_schema_version(state_target, 99)
    with pytest.raises(SchemaTooNew, match="schema version 99"):
        StateDB(state_target)


def test_new_duplicate_and_replaced_instances(db: StateDB) -> None:
    assert db.record_instance(_instance("1.1")) == RecordOutcome.NEW
    assert db.record_instance(_instance("1.1")) == RecordOutcome.DUPLICATE
    assert db.record_instance(_instance("1.1", sha="b" * 64)) == RecordOutcome.REPLACED
    assert db.instance_sha256("1.1") == "b" * 64
    assert len(db.instances("1.2.3")) == 1
    assert db.study("1.2.3").instances == 1  # type: ignore[union-attr]
    assert db.instance_totals() == (1, 10)


def test_study_becomes_stable_then_queued_only_after_the_quiet_time(db: StateDB) -> None:
    db.record_instance(_instance("1.1", at=1000.0))
    assembler = Assembler(db, stable_seconds=10, poll_seconds=1)
    assert assembler.run_once(now=1009.0) == []
    db.record_instance(_instance("1.2", at=1005.0))
    assert assembler.run_once(now=1012.0) == []  # the second instance restarted the clock
    assert assembler.run_once(now=1015.0) == ["1.2.3"]
    assert [t.to_state for t in db.transitions("1.2.3")] == [
        StudyState.RECEIVING, StudyState.STABLE, StudyState.QUEUED]


def test_an_instance_older_than_the_newest_keeps_the_clock(db: StateDB) -> None:
    db.record_instance(_instance("1.1", at=1005.0))
    db.record_instance(_instance("1.2", at=1000.0))  # recovered late, with its file's older time
    assert db.study("1.2.3").last_received_at == 1005.0  # type: ignore[union-attr]


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
    assert study is not None and study.state == StudyState.RECEIVING and study.reason is None
    assert db.transitions("1.2.3")[-1].reason == "new instance while delivered"


def test_studies_filter_by_state_and_page(db: StateDB) -> None:
    db.record_instance(_instance("1.1", study="1.2.3", at=1000.0))
    db.record_instance(_instance("2.1", study="1.2.4", at=2000.0))
    db.transition("1.2.4", StudyState.QUEUED, "test")
    assert [s.study_uid for s in db.studies([StudyState.QUEUED])] == ["1.2.4"]
    assert len(db.studies()) == 2
    page, total = db.list_studies(since=1500.0, limit=1, offset=0)
    assert total == 1 and [s.study_uid for s in page] == ["1.2.4"]
    counts = db.count_by_state()
    assert counts[StudyState.QUEUED] == 1 and counts[StudyState.RECEIVING] == 1 and counts[StudyState.FAILED] == 0


def test_results_keep_every_analysis_and_the_newest_is_current(db: StateDB) -> None:
    db.record_instance(_instance("1.1"))
    db.transition("1.2.3", StudyState.ANALYSING, "by hand")
    assert db.add_result("1.2.3", {"outcome": "analysed", "timings_ms": {"decode": 5}})
    assert db.add_result("1.2.3", {"outcome": "analysed", "timings_ms": {"decode": 7}})
    assert db.latest_result("1.2.3") == {"outcome": "analysed", "timings_ms": {"decode": 7}}
    assert db.result_count("1.2.3") == 2 and db.result_timings() == [{"decode": 5.0}, {"decode": 7.0}]
    db.transition("1.2.3", StudyState.NO_MODEL, "done")
    assert not db.add_result("1.2.3", {"outcome": "late"})  # no longer being analysed: nothing recorded


def test_released_studies_settling_name_their_caller_and_count(db: StateDB) -> None:
    """On both engines: the assembler's C-FIND candidates are the studies released by the asked
    callers, still settling, with nothing received since; each with the instances stored."""
    for sop, study in (("1.1", "1.2.3"), ("1.2", "1.2.3"), ("2.1", "2.2.2"), ("3.1", "3.3.3")):
        db.record_instance(_instance(sop, at=1000.0, study=study))
    db.association_released(["1.2.3"], at=1001.0, settle_seconds=10, calling_ae="PACS")
    db.association_released(["2.2.2"], at=1001.0, settle_seconds=10, calling_ae="MODALITY")
    db.association_released(["3.3.3"], at=1001.0, settle_seconds=1, calling_ae="PACS")
    settling = db.released_and_settling(1005.0, ["PACS"])
    assert [(s.study_uid, s.released_by, s.instances) for s in settling] == [("1.2.3", "PACS", 2)]
    assert db.released_and_settling(1005.0, []) == []
    assert db.released_and_settling(1020.0, ["PACS"]) == []  # settled: the other path completes it
