"""The SQLite connection, its schema and its transactions, shared by the query modules.

Each public method of ``StateDB`` is one transaction (``_transaction``); transitions logged inside
one are told to listeners only after it commits.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from onconode.events import Event, log_event
from onconode.state.records import StateError, StudyState, Transition, TransitionListener

log = logging.getLogger("onconode.state")

SCHEMA = """
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
# Version n of the schema is MIGRATIONS[:n] applied in order; a step is never edited once shipped.
MIGRATIONS = (
    SCHEMA,
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
)
SCHEMA_VERSION = len(MIGRATIONS)


class Database:
    """The connection, its lock and the transaction and transition plumbing."""

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
        self.notify(committed)  # reached only after COMMIT; outside the lock

    def notify(self, transitions: list[Transition]) -> None:
        """Tell the listeners about committed transitions: this connection's, or those a receiver
        process committed on its own (``dicom_node/receivers.py``)."""
        for transition in transitions:
            for listener in self._listeners:
                try:
                    listener(transition)
                except Exception:  # a listener's bug must not undo or block a committed transition
                    log.exception("event=transition_listener_error study=%s", transition.study_uid)

    def _migrate(self) -> None:
        """Bring the schema to ``SCHEMA_VERSION``, one numbered step at a time, in one transaction:
        a database written by an older OncoNode is upgraded, never rebuilt."""
        with self._transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"database schema version {version}, this OncoNode knows {SCHEMA_VERSION}")
            for number, script in enumerate(MIGRATIONS, start=1):
                if number > version:
                    for statement in script.split(";"):
                        if statement.strip():
                            db.execute(statement)
            if version < SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            if db.execute("SELECT value FROM meta WHERE key = 'node_id'").fetchone() is None:
                db.execute("INSERT INTO meta (key, value) VALUES ('node_id', ?)", (uuid.uuid4().hex,))

    def node_id(self) -> str:
        """This installation's identity (a UUID made when the database was created): the device
        serial number on every object OncoNode writes."""
        with self._lock:
            return str(self._conn.execute("SELECT value FROM meta WHERE key = 'node_id'").fetchone()[0])

    def add_transition_listener(self, listener: TransitionListener) -> None:
        """Call ``listener(transition)`` after each committed transition (the audit trail uses it)."""
        self._listeners.append(listener)

    def _log_transition(self, db: sqlite3.Connection, study_uid: str, at: float,
                        from_state: StudyState | None, to: StudyState, reason: str) -> None:
        db.execute("INSERT INTO transitions (study_uid, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)",
                   (study_uid, at, from_state.value if from_state else None, to.value, reason))
        self._pending.append(Transition(study_uid, at, from_state, to, reason))
        log_event(log, Event.STUDY_TRANSITION, study=study_uid,
                  from_state=from_state.value if from_state else "-", to=to.value, reason=reason)
