"""The node's state in SQLite (WAL): instances, studies, and every study transition as a row.

This module alone holds SQL. Each public method is one transaction. State lives in the database,
not in memory, so a restart resumes exactly where the node stopped.

Durability split: instance *files* are made durable by ``dicom_node/storage.py`` (fsync before
Success). The index runs with ``synchronous=NORMAL``: a committed row survives a killed process
(it is in the WAL in the OS cache) but may be lost in a power cut; ``dicom_node/recovery.py``
re-indexes any stored file the index lacks at start-up, so the files stay the source of truth
and each C-STORE costs one fsync fewer.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from onconode.dicom_node.identify import InstanceIdentity
from onconode.events import Event, log_event

log = logging.getLogger(__name__)


class StudyState(str, Enum):
    RECEIVING = "receiving"
    STABLE = "stable"
    QUEUED = "queued"
    ANALYSING = "analysing"
    REPORTED = "reported"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    NO_MODEL = "no_model"
    FAILED = "failed"


FINAL_STATES = frozenset({StudyState.DELIVERED, StudyState.NO_MODEL, StudyState.FAILED})
# What a restart does with a study that was in the middle of something.
RESUME = {StudyState.STABLE: StudyState.QUEUED, StudyState.ANALYSING: StudyState.QUEUED}


class StateError(RuntimeError):
    """The database could not complete a transaction (disk full, locked beyond the timeout, ...)."""


class RecordOutcome(str, Enum):
    NEW = "new"
    DUPLICATE = "duplicate"  # same SOP Instance UID, same bytes: acknowledged, nothing changes
    REPLACED = "replaced"  # same SOP Instance UID, different bytes: the newer version wins


@dataclass(frozen=True)
class ReceivedInstance:
    """One stored instance as the index knows it."""

    identity: InstanceIdentity
    transfer_syntax: str
    size: int
    sha256: str
    received_at: float
    calling_ae: str


@dataclass(frozen=True)
class Study:
    study_uid: str
    state: StudyState
    reason: str | None
    instances: int
    first_received_at: float
    last_received_at: float
    state_changed_at: float
    calling_ae: str | None
    calling_host: str | None


@dataclass(frozen=True)
class SeriesCount:
    series_uid: str
    modality: str
    instances: int


TransitionListener = Callable[["Transition"], None]
# States from which an operator may ask for a study to be analysed again.
REPROCESSABLE = frozenset({StudyState.REPORTED, StudyState.DELIVERING, StudyState.DELIVERED,
                           StudyState.NO_MODEL, StudyState.FAILED, StudyState.STABLE})


@dataclass(frozen=True)
class Transition:
    study_uid: str
    at: float
    from_state: StudyState | None
    to_state: StudyState
    reason: str | None


class DeliveryState(str, Enum):
    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"  # retry limit reached: the dead letter (``onconode deadletter list|replay``)


@dataclass(frozen=True)
class NewReport:
    """A report just written to the outbox; ``fingerprint`` says what it was built from."""

    study_uid: str
    folder: Path
    sr_sop_uid: str
    sr_path: Path
    fingerprint: str


@dataclass(frozen=True)
class Report:
    id: int
    study_uid: str
    created_at: float
    folder: Path
    sr_sop_uid: str
    sr_path: Path
    fingerprint: str


@dataclass(frozen=True)
class NewDelivery:
    """One object for one destination; ``seq`` orders the sends (SC images before the SR)."""

    destination: str
    kind: str
    seq: int
    path: Path
    object_uid: str


@dataclass(frozen=True)
class Delivery:
    id: int
    report_id: int
    study_uid: str
    destination: str
    kind: str
    seq: int
    path: Path
    object_uid: str
    state: DeliveryState
    attempts: int
    next_try_at: float
    last_error: str | None
    sent_at: float | None


_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE studies (
    study_uid TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    reason TEXT,
    first_received_at REAL NOT NULL,
    last_received_at REAL NOT NULL,
    state_changed_at REAL NOT NULL,
    calling_ae TEXT,
    calling_host TEXT
);
CREATE INDEX studies_by_state ON studies (state, last_received_at);
CREATE TABLE instances (
    sop_instance_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies (study_uid),
    series_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    modality TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    received_at REAL NOT NULL,
    calling_ae TEXT NOT NULL
);
CREATE INDEX instances_by_study ON instances (study_uid, series_uid);
CREATE TABLE transitions (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies (study_uid),
    at REAL NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX transitions_by_study ON transitions (study_uid, id);
CREATE TABLE results (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies (study_uid),
    created_at REAL NOT NULL,
    summary TEXT NOT NULL
);
CREATE INDEX results_by_study ON results (study_uid, id);
-- delivery: reports written to the outbox, one delivery row per destination x object
CREATE TABLE reports (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies (study_uid),
    created_at REAL NOT NULL,
    folder TEXT NOT NULL,
    sr_sop_uid TEXT NOT NULL,
    sr_path TEXT NOT NULL,
    fingerprint TEXT NOT NULL
);
CREATE INDEX reports_by_study ON reports (study_uid, id);
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY,
    report_id INTEGER NOT NULL REFERENCES reports (id),
    study_uid TEXT NOT NULL,
    destination TEXT NOT NULL,
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL,
    path TEXT NOT NULL,
    object_uid TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_try_at REAL NOT NULL,
    last_error TEXT,
    sent_at REAL,
    UNIQUE (report_id, destination, object_uid)
);
CREATE INDEX deliveries_due ON deliveries (state, next_try_at);
CREATE INDEX deliveries_by_study ON deliveries (study_uid, state);
"""

_REPORT_COLUMNS = "id, study_uid, created_at, folder, sr_sop_uid, sr_path, fingerprint"
_DELIVERY_COLUMNS = ("id, report_id, study_uid, destination, kind, seq, path, object_uid, state, attempts, "
                     "next_try_at, last_error, sent_at")
_STUDY_COLUMNS = ("s.study_uid, s.state, s.reason, "
                  "(SELECT COUNT(*) FROM instances i WHERE i.study_uid = s.study_uid), "
                  "s.first_received_at, s.last_received_at, s.state_changed_at, s.calling_ae, s.calling_host")


class StateDB:
    """The one access layer to the SQLite database; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        self._listeners: list[TransitionListener] = []
        self._pending: list[Transition] = []  # transitions of the open transaction, told after commit
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._pending = []
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as err:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise StateError(f"database: {err}") from err
            finally:
                committed, self._pending = self._pending, []
        self._notify(committed)  # reached only after COMMIT; outside the lock

    def _notify(self, transitions: list[Transition]) -> None:
        for transition in transitions:
            for listener in self._listeners:
                try:
                    listener(transition)
                except Exception:  # a listener's bug must not undo or block a committed transition
                    log.exception("event=transition_listener_error study=%s", transition.study_uid)

    def _migrate(self) -> None:
        with self._transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            elif version != _SCHEMA_VERSION:
                raise RuntimeError(f"database schema version {version}, this OncoNode knows {_SCHEMA_VERSION}")

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

    def add_transition_listener(self, listener: TransitionListener) -> None:
        """Call ``listener(transition)`` after each committed transition (the audit trail uses it)."""
        self._listeners.append(listener)

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

    def delivery_totals(self) -> dict[DeliveryState, int]:
        """Deliveries of all studies by state (every state present), for the metrics."""
        counts = dict.fromkeys(DeliveryState, 0)
        with self._lock:
            rows = self._conn.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall()
        counts.update({DeliveryState(r[0]): int(r[1]) for r in rows})
        return counts

    def _log_transition(self, db: sqlite3.Connection, study_uid: str, at: float,
                        from_state: StudyState | None, to: StudyState, reason: str) -> None:
        db.execute("INSERT INTO transitions (study_uid, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)",
                   (study_uid, at, from_state.value if from_state else None, to.value, reason))
        self._pending.append(Transition(study_uid, at, from_state, to, reason))
        log_event(log, Event.STUDY_TRANSITION, study=study_uid,
                  from_state=from_state.value if from_state else "-", to=to.value, reason=reason)


    # --- delivery: outbox reports and per-object delivery rows ----------------------------------
    # A delivery row is created in the same transaction as its report, before any send; a send's
    # success is one row update, so a restart neither loses nor repeats a delivered object.

    def record_report(self, report: NewReport, deliveries: Sequence[NewDelivery]) -> int:
        """Record a report written to the outbox and its pending deliveries; returns the report id."""
        now = time.time()
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO reports (study_uid, created_at, folder, sr_sop_uid, sr_path, fingerprint) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (report.study_uid, now, str(report.folder), report.sr_sop_uid, str(report.sr_path),
                 report.fingerprint))
            report_id = int(cursor.lastrowid or 0)
            db.executemany(
                "INSERT INTO deliveries (report_id, study_uid, destination, kind, seq, path, object_uid, "
                "state, attempts, next_try_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                [(report_id, report.study_uid, d.destination, d.kind, d.seq, str(d.path), d.object_uid,
                  DeliveryState.PENDING.value, now) for d in deliveries])
        return report_id

    def latest_report(self, study_uid: str) -> Report | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {_REPORT_COLUMNS} FROM reports WHERE study_uid = ? "
                                     "ORDER BY id DESC LIMIT 1", (study_uid,)).fetchone()
        return _report(row) if row else None

    def reports(self, study_uid: str) -> list[Report]:
        with self._lock:
            rows = self._conn.execute(f"SELECT {_REPORT_COLUMNS} FROM reports WHERE study_uid = ? ORDER BY id",
                                      (study_uid,)).fetchall()
        return [_report(r) for r in rows]

    def due_deliveries(self, now: float) -> list[Delivery]:
        """Pending deliveries whose next try is due, in send order (report, destination, seq)."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE state = ? AND next_try_at <= ? "
                "ORDER BY report_id, destination, seq, id", (DeliveryState.PENDING.value, now)).fetchall()
        return [_delivery(r) for r in rows]

    def deliveries(self, study_uid: str | None = None, state: DeliveryState | None = None) -> list[Delivery]:
        query = f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE 1 = 1"
        params: list[str] = []
        if study_uid is not None:
            query += " AND study_uid = ?"
            params.append(study_uid)
        if state is not None:
            query += " AND state = ?"
            params.append(state.value)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY id", params).fetchall()
        return [_delivery(r) for r in rows]

    def next_delivery_due(self) -> float | None:
        """When the earliest pending delivery is due (for the dispatcher's sleep)."""
        with self._lock:
            row = self._conn.execute("SELECT MIN(next_try_at) FROM deliveries WHERE state = ?",
                                     (DeliveryState.PENDING.value,)).fetchone()
        return row[0] if row and row[0] is not None else None

    def delivery_sent(self, delivery_id: int) -> None:
        with self._transaction() as db:
            db.execute("UPDATE deliveries SET state = ?, attempts = attempts + 1, sent_at = ?, last_error = NULL "
                       "WHERE id = ? AND state = ?",
                       (DeliveryState.SENT.value, time.time(), delivery_id, DeliveryState.PENDING.value))

    def delivery_failed(self, delivery_id: int, error: str, next_try_at: float | None) -> None:
        """Count a failed attempt: retry at ``next_try_at``, or dead letter when it is None."""
        state = DeliveryState.PENDING if next_try_at is not None else DeliveryState.DEAD
        with self._transaction() as db:
            db.execute("UPDATE deliveries SET state = ?, attempts = attempts + 1, next_try_at = ?, "
                       "last_error = ? WHERE id = ? AND state = ?",
                       (state.value, next_try_at if next_try_at is not None else time.time(), error[:500],
                        delivery_id, DeliveryState.PENDING.value))

    def delivery_counts(self, study_uid: str) -> dict[DeliveryState, int]:
        with self._lock:
            rows = self._conn.execute("SELECT state, COUNT(*) FROM deliveries WHERE study_uid = ? GROUP BY state",
                                      (study_uid,)).fetchall()
        counts = {s: 0 for s in DeliveryState}
        counts.update({DeliveryState(r[0]): r[1] for r in rows})
        return counts

    def replay_dead(self, delivery_ids: Iterable[int] | None = None) -> list[str]:
        """Move dead deliveries (all, or the given ids) back to pending with a fresh attempt count,
        and their studies back to DELIVERING; returns the studies touched."""
        now = time.time()
        with self._transaction() as db:
            query = "SELECT id, study_uid FROM deliveries WHERE state = ?"
            params: list[object] = [DeliveryState.DEAD.value]
            if delivery_ids is not None:
                ids = list(delivery_ids)
                query += f" AND id IN ({', '.join('?' * len(ids))})"
                params += ids
            rows = db.execute(query, params).fetchall()
            for delivery_id, _ in rows:
                db.execute("UPDATE deliveries SET state = ?, attempts = 0, next_try_at = ? WHERE id = ?",
                           (DeliveryState.PENDING.value, now, delivery_id))
            studies = sorted({r[1] for r in rows})
            for study_uid in studies:
                row = db.execute("SELECT state FROM studies WHERE study_uid = ?", (study_uid,)).fetchone()
                if row and StudyState(row[0]) == StudyState.FAILED:
                    reason = "dead letter replayed"
                    db.execute("UPDATE studies SET state = ?, reason = ?, state_changed_at = ? "
                               "WHERE study_uid = ?", (StudyState.DELIVERING.value, reason, now, study_uid))
                    self._log_transition(db, study_uid, now, StudyState.FAILED, StudyState.DELIVERING, reason)
        return studies


def _report(row: tuple) -> Report:  # type: ignore[type-arg]
    return Report(row[0], row[1], row[2], Path(row[3]), row[4], Path(row[5]), row[6])


def _delivery(row: tuple) -> Delivery:  # type: ignore[type-arg]
    return Delivery(row[0], row[1], row[2], row[3], row[4], row[5], Path(row[6]), row[7],
                    DeliveryState(row[8]), row[9], row[10], row[11], row[12])


def _study(row: tuple) -> Study:  # type: ignore[type-arg]
    return Study(row[0], StudyState(row[1]), row[2], row[3], row[4], row[5], row[6], row[7], row[8])
