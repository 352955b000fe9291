"""Outbox reports and their per-object delivery rows: what the dispatcher, the API and the CLI ask."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from onconode.state.database import Database
from onconode.state.records import Delivery, DeliveryState, NewDelivery, NewReport, Report, StudyState

_REPORT_COLUMNS = "id, study_uid, created_at, folder, sr_sop_uid, sr_path, fingerprint"
_DELIVERY_COLUMNS = ("id, report_id, study_uid, destination, kind, seq, path, object_uid, state, attempts, "
                     "next_try_at, last_error, sent_at")
_SEND_ORDER = "report_id, destination, seq, id"


class DeliveryQueries(Database):
    """Reports and deliveries (mixed into ``StateDB``).

    A delivery row is created in the same transaction as its report, before any send, and a send's
    success is one row update after the peer's answer: an object is delivered at least once. A node
    that dies between the peer's answer and that update sends the object again after restart; the
    same SOP Instance UID (which a PACS stores once) or the same conditional-create identifiers (which
    a FHIR server resolves to the stored resources) make the repeat harmless.

    Dispatchers on several hosts claim due rows (``claim_deliveries``): a row is sent by the holder of
    its lease only, so never by two dispatchers at once, and by another once the lease expires.
    """

    def delivery_totals(self) -> dict[DeliveryState, int]:
        """Deliveries of all studies by state (every state present), for the metrics."""
        counts = dict.fromkeys(DeliveryState, 0)
        with self._read() as db:
            rows = db.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall()
        counts.update({DeliveryState(r[0]): int(r[1]) for r in rows})
        return counts

    def record_report(self, report: NewReport, deliveries: Sequence[NewDelivery],
                      reported: str | None = None) -> int | None:
        """Record a report written to the outbox and its pending deliveries; returns the report id.

        With ``reported`` (the transition's reason), the study moves ANALYSING → REPORTED in the same
        transaction, and nothing is recorded (None) unless it is still ANALYSING, and under this
        process's lease when it has one: a report of a study that received instances while it was
        analysed describes a study that no longer exists, and one whose analysis another worker took
        over is that worker's to record. Either way it must never be delivered.
        """
        now = time.time()
        with self._transaction() as db:
            if reported is not None:
                row = db.execute("SELECT state, lease_owner, lease_expires_at FROM studies WHERE study_uid = ? "
                                 "FOR UPDATE", (report.study_uid,)).fetchone()
                if row is None or StudyState(row[0]) is not StudyState.ANALYSING \
                        or self._held_by_another(row[1], row[2], now) or row[1] not in (None, self.owner):
                    return None
                self._move(db, report.study_uid, now, StudyState.ANALYSING, StudyState.REPORTED, reported)
            report_id = int(db.execute(
                "INSERT INTO reports (study_uid, created_at, folder, sr_sop_uid, sr_path, fingerprint) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (report.study_uid, now, str(report.folder), report.sr_sop_uid, str(report.sr_path),
                 report.fingerprint)).fetchone()[0])
            if deliveries:
                db.executemany(
                    "INSERT INTO deliveries (report_id, study_uid, destination, kind, seq, path, object_uid, "
                    "state, attempts, next_try_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                    [(report_id, report.study_uid, d.destination, d.kind, d.seq, str(d.path), d.object_uid,
                      DeliveryState.PENDING.value, now) for d in deliveries])
        return report_id

    def latest_report(self, study_uid: str) -> Report | None:
        with self._read() as db:
            row = db.execute(f"SELECT {_REPORT_COLUMNS} FROM reports WHERE study_uid = ? "
                             "ORDER BY id DESC LIMIT 1", (study_uid,)).fetchone()
        return _report(row) if row else None

    def reports(self, study_uid: str) -> list[Report]:
        with self._read() as db:
            rows = db.execute(f"SELECT {_REPORT_COLUMNS} FROM reports WHERE study_uid = ? ORDER BY id",
                              (study_uid,)).fetchall()
        return [_report(r) for r in rows]

    def due_deliveries(self, now: float) -> list[Delivery]:
        """Pending deliveries whose next try is due, in send order (report, destination, seq)."""
        with self._read() as db:
            rows = db.execute(f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE state = ? AND next_try_at <= ? "
                              f"ORDER BY {_SEND_ORDER}", (DeliveryState.PENDING.value, now)).fetchall()
        return [_delivery(r) for r in rows]

    def claim_deliveries(self, now: float, lease_seconds: float, limit: int = 100) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries that no live lease holds to this process, in send order.

        ``SKIP LOCKED``: rows another dispatcher is claiming this moment are passed over, not waited
        for. Two dispatchers claiming at once may split one report's objects between them; each sends
        its share in order.
        """
        with self._transaction() as db:
            ids = [r[0] for r in db.execute(
                "SELECT id FROM deliveries WHERE state = ? AND next_try_at <= ? "
                f"AND (lease_expires_at IS NULL OR lease_expires_at < ?) ORDER BY {_SEND_ORDER} LIMIT ? "
                "FOR UPDATE SKIP LOCKED", (DeliveryState.PENDING.value, now, now, limit)).fetchall()]
            if not ids:
                return []
            marks = ", ".join("?" * len(ids))
            db.execute(f"UPDATE deliveries SET lease_owner = ?, lease_expires_at = ? WHERE id IN ({marks})",
                       [self.owner, now + lease_seconds, *ids])
            rows = db.execute(f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id IN ({marks}) "
                              f"ORDER BY {_SEND_ORDER}", ids).fetchall()
        return [_delivery(r) for r in rows]

    def renew_deliveries(self, delivery_ids: Sequence[int], lease_seconds: float) -> int:
        """Extend this process's leases on ``delivery_ids`` still pending; returns how many it holds."""
        if not delivery_ids:
            return 0
        with self._transaction() as db:
            return db.execute(
                f"UPDATE deliveries SET lease_expires_at = ? WHERE id IN ({', '.join('?' * len(delivery_ids))}) "
                "AND state = ? AND lease_owner = ?",
                [time.time() + lease_seconds, *delivery_ids, DeliveryState.PENDING.value, self.owner]).rowcount

    def release_deliveries(self, delivery_ids: Sequence[int]) -> None:
        """Give back this process's leases on ``delivery_ids`` (those it did not get to)."""
        if not delivery_ids:
            return
        with self._transaction() as db:
            db.execute("UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL "
                       f"WHERE id IN ({', '.join('?' * len(delivery_ids))}) AND lease_owner = ?",
                       [*delivery_ids, self.owner])

    def deliveries(self, study_uid: str | None = None, state: DeliveryState | None = None) -> list[Delivery]:
        query = f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE 1 = 1"
        params: list[str] = []
        if study_uid is not None:
            query += " AND study_uid = ?"
            params.append(study_uid)
        if state is not None:
            query += " AND state = ?"
            params.append(state.value)
        with self._read() as db:
            rows = db.execute(query + " ORDER BY id", params).fetchall()
        return [_delivery(r) for r in rows]

    def delivery_sent(self, delivery_id: int) -> None:
        """Record a peer's success. It is recorded whoever holds the lease now: the object is there."""
        with self._transaction() as db:
            db.execute("UPDATE deliveries SET state = ?, attempts = attempts + 1, sent_at = ?, last_error = NULL, "
                       "lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND state = ?",
                       (DeliveryState.SENT.value, time.time(), delivery_id, DeliveryState.PENDING.value))

    def delivery_failed(self, delivery_id: int, error: str, next_try_at: float | None) -> None:
        """Count a failed attempt: retry at ``next_try_at``, or dead letter when it is None. Not
        counted when another dispatcher holds the row now (it took over an expired lease)."""
        state = DeliveryState.PENDING if next_try_at is not None else DeliveryState.DEAD
        with self._transaction() as db:
            db.execute("UPDATE deliveries SET state = ?, attempts = attempts + 1, next_try_at = ?, "
                       "last_error = ?, lease_owner = NULL, lease_expires_at = NULL "
                       "WHERE id = ? AND state = ? AND (lease_owner IS NULL OR lease_owner = ?)",
                       (state.value, next_try_at if next_try_at is not None else time.time(), error[:500],
                        delivery_id, DeliveryState.PENDING.value, self.owner))

    def delivery_counts(self, study_uid: str) -> dict[DeliveryState, int]:
        with self._read() as db:
            rows = db.execute("SELECT state, COUNT(*) FROM deliveries WHERE study_uid = ? GROUP BY state",
                              (study_uid,)).fetchall()
        counts = {s: 0 for s in DeliveryState}
        counts.update({DeliveryState(r[0]): int(r[1]) for r in rows})
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
                if not ids:
                    return []
                query += f" AND id IN ({', '.join('?' * len(ids))})"
                params += ids
            rows = db.execute(query + " FOR UPDATE", params).fetchall()
            for delivery_id, _ in rows:
                db.execute("UPDATE deliveries SET state = ?, attempts = 0, next_try_at = ? WHERE id = ?",
                           (DeliveryState.PENDING.value, now, delivery_id))
            studies = sorted({r[1] for r in rows})
            for study_uid in studies:
                row = db.execute("SELECT state FROM studies WHERE study_uid = ? FOR UPDATE", (study_uid,)).fetchone()
                if row and StudyState(row[0]) == StudyState.FAILED:
                    self._move(db, study_uid, now, StudyState.FAILED, StudyState.DELIVERING, "dead letter replayed")
        return studies


def _report(row: tuple) -> Report:  # type: ignore[type-arg]
    return Report(row[0], row[1], row[2], Path(row[3]), row[4], Path(row[5]), row[6])


def _delivery(row: tuple) -> Delivery:  # type: ignore[type-arg]
    return Delivery(row[0], row[1], row[2], row[3], row[4], row[5], Path(row[6]), row[7],
                    DeliveryState(row[8]), row[9], row[10], row[11], row[12])
