"""Work claimed, not assumed: analysis claims on studies and named leases for singleton jobs.

A worker claims the longest-waiting QUEUED study, or an ANALYSING one whose lease expired (its
holder died or stalled), with ``SELECT ... FOR UPDATE SKIP LOCKED``: workers on several hosts never
wait for each other's claims, and never get the same study. The claim is a lease (owner, expiry,
heartbeat) that the worker renews while it works (``heartbeat.py``); only its holder moves the
study on (``StateDB.transition``, ``record_report``, ``add_result``). A named lease
(``hold_lease``) elects the one process that runs a job that must run in one place at a time,
such as stability detection: whoever holds it renews it each round; another takes it once it
expires.
"""

from __future__ import annotations

import logging
import time
import uuid

from onconode.events import Event, log_event
from onconode.state.database import Database
from onconode.state.owner import holder_gone
from onconode.state.records import Claim, DeliveryState, LeaseHolder, StudyState

log = logging.getLogger("onconode.state")


class LeaseQueries(Database):
    """Claims, their renewal, and named leases (mixed into ``StateDB``)."""

    def claim_study(self, lease_seconds: float) -> Claim | None:
        """Lease the study that has waited longest for analysis to this process and move it to
        ANALYSING; None when none waits.

        A study taken over from an expired lease keeps no trace of that claim's analysis: a result
        row written under it is removed, since that analysis never finished.
        """
        now = time.time()
        with self._transaction() as db:
            row = db.execute(
                "SELECT study_uid, state, lease_owner, lease_id FROM studies WHERE state = ? "
                "OR (state = ? AND lease_expires_at < ?) ORDER BY state_changed_at LIMIT 1 FOR UPDATE SKIP LOCKED",
                (StudyState.QUEUED.value, StudyState.ANALYSING.value, now)).fetchone()
            if row is None:
                return None
            study_uid, state, previous_owner, previous_claim = row[0], StudyState(row[1]), row[2], row[3]
            claim = Claim(study_uid, uuid.uuid4().hex, now + lease_seconds,
                          previous_owner if state is StudyState.ANALYSING else None)
            if claim.taken_over_from is not None:
                db.execute("DELETE FROM results WHERE study_uid = ? AND claim = ?", (study_uid, previous_claim))
                reason = f"taken over by {self.owner}: the lease of {claim.taken_over_from} expired"
            else:
                reason = f"claimed by {self.owner}"
            self._move(db, study_uid, now, state, StudyState.ANALYSING, reason, on_study=False)
            db.execute("UPDATE studies SET lease_owner = ?, lease_id = ?, lease_expires_at = ?, heartbeat_at = ? "
                       "WHERE study_uid = ?", (self.owner, claim.lease_id, claim.expires_at, now, study_uid))
        if claim.taken_over_from is not None:
            log_event(log, Event.LEASE, logging.WARNING, study=study_uid, action="taken_over",
                      previous=claim.taken_over_from)
        return claim

    def renew_study_lease(self, claim: Claim, lease_seconds: float) -> bool:
        """Extend the claim's lease; False once the study is no longer analysed under it (taken over,
        or moved back to RECEIVING by a new instance)."""
        now = time.time()
        with self._transaction() as db:
            return db.execute("UPDATE studies SET lease_expires_at = ?, heartbeat_at = ? WHERE study_uid = ? "
                              "AND state = ? AND lease_id = ?",
                              (now + lease_seconds, now, claim.study_uid, StudyState.ANALYSING.value,
                               claim.lease_id)).rowcount == 1

    def study_lease(self, study_uid: str) -> tuple[str, float] | None:
        """Who holds the study's analysis lease and until when (None when nobody does)."""
        with self._read() as db:
            row = db.execute("SELECT lease_owner, lease_expires_at FROM studies WHERE study_uid = ?",
                             (study_uid,)).fetchone()
        return (str(row[0]), float(row[1])) if row and row[0] is not None else None

    # --- named leases ------------------------------------------------------------------------

    def hold_lease(self, name: str, lease_seconds: float) -> bool:
        """Take or renew the lease ``name`` for this process; False while another holds it unexpired.

        One statement, atomic on both engines: the row is created, renewed by its holder, or taken
        over once expired; otherwise it is left as it is and nothing comes back.
        """
        now = time.time()
        with self._transaction() as db:
            row = db.execute(
                "INSERT INTO leases (name, owner, acquired_at, expires_at, heartbeat_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at, "
                "heartbeat_at = excluded.heartbeat_at, acquired_at = CASE WHEN leases.owner = excluded.owner "
                "THEN leases.acquired_at ELSE excluded.acquired_at END "
                "WHERE leases.owner = excluded.owner OR leases.expires_at < ? RETURNING acquired_at",
                (name, self.owner, now, now + lease_seconds, now, now)).fetchone()
        if row is not None and row[0] == now:
            log_event(log, Event.LEASE, lease=name, action="acquired", owner=self.owner)
        return row is not None

    def release_lease(self, name: str) -> None:
        """Give up the lease ``name`` if this process holds it (a clean stop: another takes it at once)."""
        with self._transaction() as db:
            db.execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, self.owner))

    def lease_holder(self, name: str) -> LeaseHolder | None:
        with self._read() as db:
            row = db.execute("SELECT name, owner, acquired_at, expires_at, heartbeat_at FROM leases WHERE name = ?",
                             (name,)).fetchone()
        return LeaseHolder(*row) if row else None

    # --- start-up ----------------------------------------------------------------------------

    def expire_leases_of_gone_holders(self) -> int:
        """Expire every lease held by a process of this host that no longer runs (``owner.py``), so
        that its work is taken up now rather than after the lease; returns how many holders.

        Holders on other hosts are left to expire: a slow host and a dead one look the same from here.
        """
        with self._read() as db:
            owners = {r[0] for r in db.execute(
                "SELECT lease_owner FROM studies WHERE state = ? AND lease_owner IS NOT NULL UNION "
                "SELECT lease_owner FROM deliveries WHERE state = ? AND lease_owner IS NOT NULL UNION "
                "SELECT owner FROM leases", (StudyState.ANALYSING.value, DeliveryState.PENDING.value)).fetchall()}
        gone = sorted(o for o in owners if o != self.owner and holder_gone(o))
        if not gone:
            return 0
        marks = ", ".join("?" * len(gone))
        with self._transaction() as db:
            db.execute(f"UPDATE studies SET lease_expires_at = 0 WHERE lease_owner IN ({marks})", gone)
            db.execute("UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL "
                       f"WHERE lease_owner IN ({marks})", gone)
            db.execute(f"DELETE FROM leases WHERE owner IN ({marks})", gone)
        for owner in gone:
            log_event(log, Event.LEASE, action="expired", owner=owner, reason="its process no longer runs")
        return len(gone)
