"""The connection, its schema and its transactions, shared by the query modules.

Each public method of ``StateDB`` is one transaction (``_transaction``) or one read (``_read``);
transitions logged inside a transaction are told to listeners only after it commits. The engine
(SQLite or PostgreSQL, ``engines.py``) is chosen by what the database is named with: a path or a
``postgresql://`` URL.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from onconode.events import Event, log_event, tell_listeners
from onconode.state.engines import Engine, open_engine
from onconode.state.owner import process_owner
from onconode.state.records import StateError, StudyState, Transition, TransitionListener
from onconode.state.schema import MIGRATIONS, SCHEMA_VERSION, statements

log = logging.getLogger("onconode.state")

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Database", "SchemaTooNew"]


class SchemaTooNew(StateError):
    """The database was written by a newer OncoNode; this one will not touch it."""


class Database:
    """The connection, its lock, and the transaction, transition and lease plumbing."""

    def __init__(self, target: Path | str) -> None:
        self._lock = threading.Lock()
        self._listeners: list[TransitionListener] = []
        self._pending: list[Transition] = []  # transitions of the open transaction, told after commit
        self._closed = False
        # Names this process in every lease it takes (owner.py).
        self.owner = process_owner()
        try:
            self._engine: Engine = open_engine(target)
        except Exception as err:  # the engine's own error types are not known before it loads
            raise StateError(f"database: {err}") from err
        self._migrate()

    @property
    def engine(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.name

    @property
    def where(self) -> str:
        """The database, named for a person (no password)."""
        return self._engine.where

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._engine.close()

    def _check_open(self) -> None:
        if self._closed:  # a bug of the caller, not a database failure
            raise RuntimeError("the state database was closed")

    @contextmanager
    def _read(self) -> Iterator[Engine]:
        """The connection for reads outside a transaction; engine errors become ``StateError``."""
        with self._lock:
            self._check_open()
            try:
                yield self._engine
            except self._engine.errors as err:
                raise StateError(f"database: {err}") from err

    @contextmanager
    def _transaction(self, lazy: bool = False) -> Iterator[Engine]:
        with self._lock:
            self._check_open()
            self._pending = []
            try:
                with self._engine.transaction(lazy):
                    yield self._engine
            except self._engine.errors as err:
                raise StateError(f"database: {err}") from err
            finally:
                committed, self._pending = self._pending, []
        self.notify(committed)  # reached only after the commit; outside the lock

    def notify(self, transitions: list[Transition]) -> None:
        """Tell the listeners about committed transitions: this connection's, or those a receiver
        process committed on its own (``dicom_node/receivers.py``)."""
        for transition in transitions:
            tell_listeners(self._listeners, transition, about=f"transition study={transition.study_uid}", logger=log)

    def _migrate(self) -> None:
        """Bring the schema to ``SCHEMA_VERSION``, one numbered step at a time, in one transaction
        that holds the schema lock (SQLite's write lock, a PostgreSQL advisory lock): processes that
        start together migrate once, and a second run changes nothing.

        Raises
        ------
        SchemaTooNew
            When the database's version is above this OncoNode's.
        StateError
            When a step fails; nothing of the migration is kept.
        """
        with self._transaction() as db:
            version = db.schema_version()
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(f"database schema version {version}, this OncoNode knows {SCHEMA_VERSION}: "
                                   "run the newer OncoNode, or restore a backup")
            for number, step in enumerate(MIGRATIONS, start=1):
                if number > version:
                    for statement in statements(db.migration_script(step)):
                        db.execute(statement)
            if version < SCHEMA_VERSION:
                db.set_schema_version(SCHEMA_VERSION)
                log_event(log, Event.SCHEMA_MIGRATED, engine=db.name, schema_from=version, schema_to=SCHEMA_VERSION)
            db.execute("INSERT INTO meta (key, value) VALUES ('node_id', ?) ON CONFLICT (key) DO NOTHING",
                       (uuid.uuid4().hex,))

    def schema_version(self) -> int:
        """The schema version the database holds now (``onconode doctor``)."""
        with self._transaction() as db:
            return db.schema_version()

    def node_id(self) -> str:
        """This installation's identity (a UUID made when the database was created): the device
        serial number on every object OncoNode writes, and the ID in the shared storage marker."""
        value = self.meta("node_id")
        assert value is not None, "made by _migrate"
        return value

    def meta(self, key: str) -> str | None:
        with self._read() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_meta_once(self, key: str, value: str) -> str:
        """Record ``key`` unless it is recorded already; returns the value that stands."""
        with self._transaction() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (key, value))
            return str(db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    def add_transition_listener(self, listener: TransitionListener) -> None:
        """Call ``listener(transition)`` after each committed transition (the audit trail uses it)."""
        self._listeners.append(listener)

    def _log_transition(self, db: Engine, study_uid: str, at: float,
                        from_state: StudyState | None, to: StudyState, reason: str) -> None:
        db.execute("INSERT INTO transitions (study_uid, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)",
                   (study_uid, at, from_state.value if from_state else None, to.value, reason))
        self._pending.append(Transition(study_uid, at, from_state, to, reason))
        log_event(log, Event.STUDY_TRANSITION, study=study_uid,
                  from_state=from_state.value if from_state else "-", to=to.value, reason=reason)

    def _move(self, db: Engine, study_uid: str, at: float, from_state: StudyState | None, to: StudyState,
              reason: str, on_study: bool = True) -> None:
        """The one update of a study's state, with its transition row (``reason``, also kept on the
        study unless ``on_study`` is false); leaving ANALYSING ends the analysis's lease."""
        release = ", lease_owner = NULL, lease_id = NULL, lease_expires_at = NULL, heartbeat_at = NULL" \
            if to is not StudyState.ANALYSING else ""
        db.execute(f"UPDATE studies SET state = ?, reason = ?, state_changed_at = ?{release} WHERE study_uid = ?",
                   (to.value, reason if on_study else None, at, study_uid))
        self._log_transition(db, study_uid, at, from_state, to, reason)

    def _held_by_another(self, lease_owner: str | None, lease_expires_at: float | None,
                         now: float | None = None) -> bool:
        """Whether a study's analysis lease is held, unexpired, by another process: then only that
        process may move the study on (an expired one may be taken over, and is free to finish)."""
        if lease_owner is None or lease_owner == self.owner:
            return False
        return lease_expires_at is not None and lease_expires_at >= (time.time() if now is None else now)
