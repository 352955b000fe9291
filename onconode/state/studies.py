"""Instances, studies, their transitions and analysis results: what ingest, the worker and the API ask."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from onconode.state.database import Database
from onconode.state.engines import Engine
from onconode.state.records import (
    REPROCESSABLE,
    ReceivedInstance,
    RecordOutcome,
    ReleasedStudy,
    SeriesCount,
    StateError,
    Study,
    StudyState,
    Transition,
)
from onconode.values import InstanceIdentity

_STUDY_COLUMNS = ("s.study_uid, s.state, s.reason, "
                  "(SELECT COUNT(*) FROM instances i WHERE i.study_uid = s.study_uid), "
                  "s.first_received_at, s.last_received_at, s.state_changed_at, s.calling_ae, s.calling_host")


class StudyQueries(Database):
    """Instances, studies, transitions and results (mixed into ``StateDB``)."""

    # --- instances -------------------------------------------------------------------------

    def instance_sha256(self, sop_instance_uid: str) -> str | None:
        """The content hash of a stored instance, to acknowledge a re-sent copy without rewriting."""
        with self._read() as db:
            row = db.execute("SELECT sha256 FROM instances WHERE sop_instance_uid = ?",
                             (sop_instance_uid,)).fetchone()
        return row[0] if row else None

    def record_instance(self, instance: ReceivedInstance, calling_host: str | None = None) -> RecordOutcome:
        """Index a stored instance and move its study back to RECEIVING if it had moved on.

        The commit does not wait for the engine's log to reach the disk (``Engine.transaction``,
        ``lazy``): the file was made durable before, and start-up recovery indexes any file the
        index lost.
        """
        ident = instance.identity
        with self._transaction(lazy=True) as db:
            row = db.execute("SELECT sha256 FROM instances WHERE sop_instance_uid = ?",
                             (ident.sop_instance_uid,)).fetchone()
            if row and row[0] == instance.sha256:
                return RecordOutcome.DUPLICATE
            outcome = RecordOutcome.REPLACED if row else RecordOutcome.NEW
            self._touch_study(db, ident.study_uid, instance.received_at, instance.calling_ae, calling_host)
            db.execute(
                "INSERT INTO instances (sop_instance_uid, study_uid, series_uid, sop_class_uid, modality, "
                "transfer_syntax, size, sha256, received_at, calling_ae) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (sop_instance_uid) DO UPDATE SET study_uid = excluded.study_uid, "
                "series_uid = excluded.series_uid, sop_class_uid = excluded.sop_class_uid, "
                "modality = excluded.modality, transfer_syntax = excluded.transfer_syntax, "
                "size = excluded.size, sha256 = excluded.sha256, received_at = excluded.received_at, "
                "calling_ae = excluded.calling_ae",
                (ident.sop_instance_uid, ident.study_uid, ident.series_uid, ident.sop_class_uid,
                 ident.modality, instance.transfer_syntax, instance.size, instance.sha256,
                 instance.received_at, instance.calling_ae))
        return outcome

    def _touch_study(self, db: Engine, study_uid: str, at: float, calling_ae: str, calling_host: str | None) -> None:
        """Note the study's newest instance, or create the study. Receivers on several hosts may do
        this for one study at once: the update locks the row, and a creation that loses the race to
        another's finds the row there and updates it."""
        for _ in range(2):
            row = db.execute("UPDATE studies SET last_received_at = CASE WHEN last_received_at > ? "
                             "THEN last_received_at ELSE ? END, calling_ae = ?, calling_host = ? WHERE study_uid = ? "
                             "RETURNING state", (at, at, calling_ae, calling_host, study_uid)).fetchone()
            if row is not None:
                previous = StudyState(row[0])
                if previous != StudyState.RECEIVING:
                    # An analysis under way describes a study that no longer exists: its lease ends here.
                    self._move(db, study_uid, at, previous, StudyState.RECEIVING,
                               f"new instance while {previous.value}", on_study=False)
                return
            created = db.execute(
                "INSERT INTO studies (study_uid, state, first_received_at, last_received_at, state_changed_at, "
                "calling_ae, calling_host) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (study_uid) DO NOTHING "
                "RETURNING study_uid",
                (study_uid, StudyState.RECEIVING.value, at, at, at, calling_ae, calling_host)).fetchone()
            if created is not None:
                self._log_transition(db, study_uid, at, None, StudyState.RECEIVING, "first instance")
                return
        raise StateError(f"study {study_uid} neither updated nor created")

    def instances(self, study_uid: str) -> list[ReceivedInstance]:
        with self._read() as db:
            rows = db.execute(
                "SELECT study_uid, series_uid, sop_instance_uid, sop_class_uid, modality, transfer_syntax, "
                "size, sha256, received_at, calling_ae FROM instances WHERE study_uid = ? "
                "ORDER BY series_uid, sop_instance_uid", (study_uid,)).fetchall()
        return [ReceivedInstance(InstanceIdentity(*r[:5]), r[5], r[6], r[7], r[8], r[9]) for r in rows]

    def instance_uids(self) -> set[str]:
        with self._read() as db:
            return {r[0] for r in db.execute("SELECT sop_instance_uid FROM instances").fetchall()}

    # --- studies ---------------------------------------------------------------------------

    def study(self, study_uid: str) -> Study | None:
        with self._read() as db:
            row = db.execute(f"SELECT {_STUDY_COLUMNS} FROM studies s WHERE s.study_uid = ?",
                             (study_uid,)).fetchone()
        return _study(row) if row else None

    def studies(self, states: Iterable[StudyState] | None = None) -> list[Study]:
        query = f"SELECT {_STUDY_COLUMNS} FROM studies s"
        params: tuple[str, ...] = ()
        if states is not None:
            params = tuple(s.value for s in states)
            query += f" WHERE s.state IN ({', '.join('?' * len(params))})"
        with self._read() as db:
            rows = db.execute(query + " ORDER BY s.last_received_at", params).fetchall()
        return [_study(r) for r in rows]

    def transitions(self, study_uid: str) -> list[Transition]:
        with self._read() as db:
            rows = db.execute("SELECT study_uid, at, from_state, to_state, reason FROM transitions "
                              "WHERE study_uid = ? ORDER BY id", (study_uid,)).fetchall()
        return [Transition(r[0], r[1], StudyState(r[2]) if r[2] else None, StudyState(r[3]), r[4]) for r in rows]

    def transition(self, study_uid: str, to: StudyState, reason: str,
                   expect: Iterable[StudyState] | None = None, received_before: float | None = None) -> bool:
        """Move a study to ``to``; only if it is in one of ``expect`` and, with ``received_before``,
        only if its last instance arrived before then. Returns whether it moved.

        The conditions are checked inside the transaction, on the locked row, so an instance that
        arrives while the assembler decides cannot be overtaken by a stale "stable" decision. A
        study being analysed under another process's live lease is moved only by that process.
        """
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT state, last_received_at, lease_owner, lease_expires_at FROM studies "
                             "WHERE study_uid = ? FOR UPDATE", (study_uid,)).fetchone()
            if row is None:
                return False
            current = StudyState(row[0])
            if expect is not None and current not in set(expect):
                return False
            if received_before is not None and row[1] > received_before:
                return False
            if current is StudyState.ANALYSING and self._held_by_another(row[2], row[3], now):
                return False
            self._move(db, study_uid, now, current, to, reason)
        return True

    def association_released(self, study_uids: Iterable[str], at: float, settle_seconds: float,
                             calling_ae: str | None = None) -> None:
        """The association ``calling_ae`` opened to deliver instances of these studies was released at
        ``at``: each still RECEIVING, with nothing newer than the release, is complete
        ``settle_seconds`` later, or sooner when that caller's count of the study says so."""
        with self._transaction() as db:
            for study_uid in study_uids:
                db.execute("UPDATE studies SET released_at = ?, settle_until = ?, released_by = ? "
                           "WHERE study_uid = ? AND state = ? AND last_received_at <= ?",
                           (at, at + settle_seconds, calling_ae, study_uid, StudyState.RECEIVING.value, at))

    def released_and_settled(self, now: float) -> list[tuple[str, float]]:
        """Studies still RECEIVING whose delivering association was released, with nothing received
        since, and whose settle time has passed: (study UID, release time)."""
        with self._read() as db:
            rows = db.execute("SELECT study_uid, released_at FROM studies WHERE state = ? AND settle_until <= ? "
                              "AND released_at >= last_received_at ORDER BY released_at",
                              (StudyState.RECEIVING.value, now)).fetchall()
        return [(r[0], float(r[1])) for r in rows]

    def released_and_settling(self, now: float, callers: Iterable[str]) -> list[ReleasedStudy]:
        """Studies still RECEIVING whose delivering association, opened by one of ``callers``, was
        released with nothing received since, and whose settle time has not yet passed."""
        wanted = sorted(set(callers))
        if not wanted:
            return []
        marks = ", ".join("?" * len(wanted))
        with self._read() as db:
            rows = db.execute("SELECT s.study_uid, s.released_at, s.released_by, "
                              "(SELECT COUNT(*) FROM instances i WHERE i.study_uid = s.study_uid) FROM studies s "
                              "WHERE s.state = ? AND s.settle_until > ? AND s.released_at >= s.last_received_at "
                              f"AND s.released_by IN ({marks}) ORDER BY s.released_at",
                              (StudyState.RECEIVING.value, now, *wanted)).fetchall()
        return [ReleasedStudy(r[0], float(r[1]), str(r[2]), int(r[3])) for r in rows]

    def receiving_since_before(self, cutoff: float) -> list[str]:
        """Studies still RECEIVING whose last instance arrived before ``cutoff``."""
        with self._read() as db:
            rows = db.execute("SELECT study_uid FROM studies WHERE state = ? AND last_received_at <= ? "
                              "ORDER BY last_received_at", (StudyState.RECEIVING.value, cutoff)).fetchall()
        return [r[0] for r in rows]

    # --- analysis results ------------------------------------------------------------------

    def add_result(self, study_uid: str, summary: dict[str, Any]) -> bool:
        """Keep an analysis of a study; the newest is the current one (a revision keeps history).

        Recorded only while the study is ANALYSING under this process's lease (or under none, when
        moved there by hand): a worker whose study was taken over, or changed by a new instance,
        records nothing. The row names the claim it was made under, so that a takeover of that claim
        drops it (``claim_study``): one analysis, one row. Returns whether it was recorded.
        """
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT state, lease_owner, lease_id, lease_expires_at FROM studies "
                             "WHERE study_uid = ? FOR UPDATE", (study_uid,)).fetchone()
            if row is None or StudyState(row[0]) is not StudyState.ANALYSING \
                    or self._held_by_another(row[1], row[3], now) or row[1] not in (None, self.owner):
                return False
            db.execute("INSERT INTO results (study_uid, created_at, summary, claim) VALUES (?, ?, ?, ?)",
                       (study_uid, now, json.dumps(summary), row[2]))
        return True

    def latest_result(self, study_uid: str) -> dict[str, Any] | None:
        return self.latest_results([study_uid]).get(study_uid)

    def result_count(self, study_uid: str) -> int:
        """How many analyses of the study are kept."""
        with self._read() as db:
            return int(db.execute("SELECT COUNT(*) FROM results WHERE study_uid = ?", (study_uid,)).fetchone()[0])

    # --- read-only queries and operator actions for the API and CLI ---------------------------

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
        with self._read() as db:
            total = db.execute(f"SELECT COUNT(*) FROM studies s{clause}", params).fetchone()[0]
            rows = db.execute(f"SELECT {_STUDY_COLUMNS} FROM studies s{clause} "
                              "ORDER BY s.last_received_at DESC, s.study_uid LIMIT ? OFFSET ?",
                              [*params, limit, offset]).fetchall()
        return [_study(r) for r in rows], int(total)

    def count_by_state(self) -> dict[StudyState, int]:
        """How many studies are in each state (every state present, zero included)."""
        with self._read() as db:
            rows = db.execute("SELECT state, COUNT(*) FROM studies GROUP BY state").fetchall()
        counts = dict.fromkeys(StudyState, 0)
        counts.update({StudyState(r[0]): int(r[1]) for r in rows})
        return counts

    def instance_totals(self) -> tuple[int, int]:
        """Number of indexed instances and their total size in bytes."""
        with self._read() as db:
            row = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM instances").fetchone()
        return int(row[0]), int(row[1])

    def series_counts(self, study_uid: str) -> list[SeriesCount]:
        """The series of a study as received: UID, modality and number of instances."""
        with self._read() as db:
            rows = db.execute("SELECT series_uid, MIN(modality), COUNT(*) FROM instances "
                              "WHERE study_uid = ? GROUP BY series_uid ORDER BY series_uid", (study_uid,)).fetchall()
        return [SeriesCount(r[0], r[1], int(r[2])) for r in rows]

    def latest_results(self, study_uids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The newest analysis summary of each of ``study_uids`` that has one."""
        uids = list(study_uids)
        if not uids:
            return {}
        with self._read() as db:
            rows = db.execute(
                f"SELECT r.study_uid, r.summary FROM results r WHERE r.study_uid IN ({', '.join('?' * len(uids))}) "
                "AND r.id = (SELECT MAX(id) FROM results x WHERE x.study_uid = r.study_uid)", uids).fetchall()
        return {r[0]: json.loads(r[1]) for r in rows}

    def result_timings(self) -> list[dict[str, float]]:
        """The per-stage timings (ms) of every stored analysis, oldest first, for the latency histograms."""
        with self._read() as db:
            rows = db.execute("SELECT summary FROM results ORDER BY id").fetchall()
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
