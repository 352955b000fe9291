"""Instances, studies, their transitions and analysis results: what ingest, the worker and the API ask."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from onconode.dicom_node.identify import InstanceIdentity
from onconode.state.database import Database
from onconode.state.records import (
    REPROCESSABLE,
    ReceivedInstance,
    RecordOutcome,
    SeriesCount,
    Study,
    StudyState,
    Transition,
)

_STUDY_COLUMNS = ("s.study_uid, s.state, s.reason, "
                  "(SELECT COUNT(*) FROM instances i WHERE i.study_uid = s.study_uid), "
                  "s.first_received_at, s.last_received_at, s.state_changed_at, s.calling_ae, s.calling_host")


class StudyQueries(Database):
    """Instances, studies, transitions and results (mixed into ``StateDB``)."""

    # --- instances -------------------------------------------------------------------------

    def instance_sha256(self, sop_instance_uid: str) -> str | None:
        """The content hash of a stored instance, to acknowledge a re-sent copy without rewriting."""
        with self._lock:
            row = self._conn.execute("SELECT sha256 FROM instances WHERE sop_instance_uid = ?",
                                     (sop_instance_uid,)).fetchone()
        return row[0] if row else None

    def record_instance(self, instance: ReceivedInstance, calling_host: str | None = None) -> RecordOutcome:
        """Index a stored instance and move its study back to RECEIVING if it had moved on."""
        ident = instance.identity
        with self._transaction() as db:
            row = db.execute("SELECT sha256 FROM instances WHERE sop_instance_uid = ?",
                             (ident.sop_instance_uid,)).fetchone()
            if row and row[0] == instance.sha256:
                return RecordOutcome.DUPLICATE
            outcome = RecordOutcome.REPLACED if row else RecordOutcome.NEW
            self._touch_study(db, ident.study_uid, instance.received_at, instance.calling_ae, calling_host)
            db.execute(
                "INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (sop_instance_uid) DO UPDATE SET study_uid = excluded.study_uid, "
                "series_uid = excluded.series_uid, sop_class_uid = excluded.sop_class_uid, "
                "modality = excluded.modality, transfer_syntax = excluded.transfer_syntax, "
                "size = excluded.size, sha256 = excluded.sha256, received_at = excluded.received_at, "
                "calling_ae = excluded.calling_ae",
                (ident.sop_instance_uid, ident.study_uid, ident.series_uid, ident.sop_class_uid,
                 ident.modality, instance.transfer_syntax, instance.size, instance.sha256,
                 instance.received_at, instance.calling_ae))
        return outcome

    def _touch_study(self, db: sqlite3.Connection, study_uid: str, at: float, calling_ae: str,
                     calling_host: str | None) -> None:
        row = db.execute("SELECT state FROM studies WHERE study_uid = ?", (study_uid,)).fetchone()
        if row is None:
            db.execute("INSERT INTO studies VALUES (?, ?, NULL, ?, ?, ?, ?, ?)",
                       (study_uid, StudyState.RECEIVING.value, at, at, at, calling_ae, calling_host))
            self._log_transition(db, study_uid, at, None, StudyState.RECEIVING, "first instance")
            return
        db.execute("UPDATE studies SET last_received_at = MAX(last_received_at, ?), calling_ae = ?, "
                   "calling_host = ? WHERE study_uid = ?", (at, calling_ae, calling_host, study_uid))
        previous = StudyState(row[0])
        if previous != StudyState.RECEIVING:
            db.execute("UPDATE studies SET state = ?, reason = NULL, state_changed_at = ? WHERE study_uid = ?",
                       (StudyState.RECEIVING.value, at, study_uid))
            self._log_transition(db, study_uid, at, previous, StudyState.RECEIVING,
                                 f"new instance while {previous.value}")

    def instances(self, study_uid: str) -> list[ReceivedInstance]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT study_uid, series_uid, sop_instance_uid, sop_class_uid, modality, transfer_syntax, "
                "size, sha256, received_at, calling_ae FROM instances WHERE study_uid = ? "
                "ORDER BY series_uid, sop_instance_uid", (study_uid,)).fetchall()
        return [ReceivedInstance(InstanceIdentity(*r[:5]), r[5], r[6], r[7], r[8], r[9]) for r in rows]

    def instance_uids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._conn.execute("SELECT sop_instance_uid FROM instances")}

    # --- studies ---------------------------------------------------------------------------

    def study(self, study_uid: str) -> Study | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {_STUDY_COLUMNS} FROM studies s WHERE s.study_uid = ?",
                                     (study_uid,)).fetchone()
        return _study(row) if row else None

    def studies(self, states: Iterable[StudyState] | None = None) -> list[Study]:
        query = f"SELECT {_STUDY_COLUMNS} FROM studies s"
        params: tuple[str, ...] = ()
        if states is not None:
            params = tuple(s.value for s in states)
            query += f" WHERE s.state IN ({', '.join('?' * len(params))})"
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY s.last_received_at", params).fetchall()
        return [_study(r) for r in rows]

    def transitions(self, study_uid: str) -> list[Transition]:
        with self._lock:
            rows = self._conn.execute("SELECT study_uid, at, from_state, to_state, reason FROM transitions "
                                      "WHERE study_uid = ? ORDER BY id", (study_uid,)).fetchall()
        return [Transition(r[0], r[1], StudyState(r[2]) if r[2] else None, StudyState(r[3]), r[4]) for r in rows]

    def transition(self, study_uid: str, to: StudyState, reason: str,
                   expect: Iterable[StudyState] | None = None, received_before: float | None = None) -> bool:
        """Move a study to ``to``; only if it is in one of ``expect`` and, with ``received_before``,
        only if its last instance arrived before then. Returns whether it moved.

        The conditions are checked inside the transaction, so an instance that arrives while the
        assembler decides cannot be overtaken by a stale "stable" decision.
        """
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT state, last_received_at FROM studies WHERE study_uid = ?",
                             (study_uid,)).fetchone()
            if row is None:
                return False
            current = StudyState(row[0])
            if expect is not None and current not in set(expect):
                return False
            if received_before is not None and row[1] > received_before:
                return False
            db.execute("UPDATE studies SET state = ?, reason = ?, state_changed_at = ? WHERE study_uid = ?",
                       (to.value, reason, now, study_uid))
            self._log_transition(db, study_uid, now, current, to, reason)
        return True

    def claim_queued(self) -> str | None:
        """Move the longest-waiting QUEUED study to ANALYSING and return its UID (None if none waits)."""
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT study_uid FROM studies WHERE state = ? ORDER BY state_changed_at LIMIT 1",
                             (StudyState.QUEUED.value,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE studies SET state = ?, reason = NULL, state_changed_at = ? WHERE study_uid = ?",
                       (StudyState.ANALYSING.value, now, row[0]))
            self._log_transition(db, row[0], now, StudyState.QUEUED, StudyState.ANALYSING, "picked by the worker")
        return str(row[0])

    def receiving_since_before(self, cutoff: float) -> list[str]:
        """Studies still RECEIVING whose last instance arrived before ``cutoff``."""
        with self._lock:
            rows = self._conn.execute("SELECT study_uid FROM studies WHERE state = ? AND last_received_at <= ? "
                                      "ORDER BY last_received_at",
                                      (StudyState.RECEIVING.value, cutoff)).fetchall()
        return [r[0] for r in rows]

    # --- analysis results ------------------------------------------------------------------

    def add_result(self, study_uid: str, summary: dict[str, Any]) -> None:
        """Keep every analysis of a study; the newest is the current one (a revision keeps history)."""
        with self._transaction() as db:
            db.execute("INSERT INTO results (study_uid, created_at, summary) VALUES (?, ?, ?)",
                       (study_uid, time.time(), json.dumps(summary)))

    def latest_result(self, study_uid: str) -> dict[str, Any] | None:
        return self.latest_results([study_uid]).get(study_uid)

    # --- read-only queries and operator actions for the API and CLI (issue 6) ----------------

    def list_studies(self, states: Iterable[StudyState] | None = None, since: float | None = None,
                     until: float | None = None, limit: int = 50, offset: int = 0) -> tuple[list[Study], int]:
        """One page of studies, newest first, and the total that match the filters.

        ``since``/``until`` bound the time of the study's last received instance (epoch seconds).
        """
        where: list[str] = []
        params: list[str | float] = []
        if states is not None:
            values = [s.value for s in states]
            where.append(f"s.state IN ({', '.join('?' * len(values))})")
            params += values
        if since is not None:
            where.append("s.last_received_at >= ?")
            params.append(since)
        if until is not None:
            where.append("s.last_received_at < ?")
            params.append(until)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        with self._lock:
            total = self._conn.execute(f"SELECT COUNT(*) FROM studies s{clause}", params).fetchone()[0]
            rows = self._conn.execute(f"SELECT {_STUDY_COLUMNS} FROM studies s{clause} "
                                      "ORDER BY s.last_received_at DESC, s.study_uid LIMIT ? OFFSET ?",
                                      [*params, limit, offset]).fetchall()
        return [_study(r) for r in rows], int(total)

    def count_by_state(self) -> dict[StudyState, int]:
        """How many studies are in each state (every state present, zero included)."""
        with self._lock:
            rows = self._conn.execute("SELECT state, COUNT(*) FROM studies GROUP BY state").fetchall()
        counts = dict.fromkeys(StudyState, 0)
        counts.update({StudyState(r[0]): int(r[1]) for r in rows})
        return counts

    def instance_totals(self) -> tuple[int, int]:
        """Number of indexed instances and their total size in bytes."""
        with self._lock:
            row = self._conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM instances").fetchone()
        return int(row[0]), int(row[1])

    def series_counts(self, study_uid: str) -> list[SeriesCount]:
        """The series of a study as received: UID, modality and number of instances."""
        with self._lock:
            rows = self._conn.execute("SELECT series_uid, MIN(modality), COUNT(*) FROM instances "
                                      "WHERE study_uid = ? GROUP BY series_uid ORDER BY series_uid",
                                      (study_uid,)).fetchall()
        return [SeriesCount(r[0], r[1], int(r[2])) for r in rows]

    def latest_results(self, study_uids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The newest analysis summary of each of ``study_uids`` that has one."""
        uids = list(study_uids)
        if not uids:
            return {}
        with self._lock:
            rows = self._conn.execute(
                f"SELECT r.study_uid, r.summary FROM results r WHERE r.study_uid IN ({', '.join('?' * len(uids))}) "
                "AND r.id = (SELECT MAX(id) FROM results x WHERE x.study_uid = r.study_uid)", uids).fetchall()
        return {r[0]: json.loads(r[1]) for r in rows}

    def result_timings(self) -> list[dict[str, float]]:
        """The per-stage timings (ms) of every stored analysis, oldest first, for the latency histograms."""
        with self._lock:
            rows = self._conn.execute("SELECT summary FROM results ORDER BY id").fetchall()
        timings = []
        for (summary,) in rows:
            value = json.loads(summary).get("timings_ms")
            if isinstance(value, dict):
                timings.append({str(k): float(v) for k, v in value.items() if isinstance(v, (int, float))})
        return timings

    def request_reprocess(self, study_uid: str, reason: str = "reprocess requested") -> bool:
        """Queue a study again for analysis; only from a state where nothing is working on it.

        Returns whether it moved. A study still RECEIVING, or QUEUED/ANALYSING already, is left alone.
        """
        return self.transition(study_uid, StudyState.QUEUED, reason, expect=REPROCESSABLE)


def _study(row: tuple) -> Study:  # type: ignore[type-arg]
    return Study(row[0], StudyState(row[1]), row[2], row[3], row[4], row[5], row[6], row[7], row[8])
