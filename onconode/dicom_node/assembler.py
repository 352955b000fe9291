"""Study assembly: when a study is complete.

Input: study rows in RECEIVING (``onconode/state``). Output: transitions RECEIVING → STABLE → QUEUED,
the reason naming the signal that completed the study. DICOM has no "end of study" message; two
signals stand in for it:

- the sender released the association that delivered the study's newest instance, and nothing
  arrived for the settle time after (``study.settle_seconds``, per caller ``callers[].settle_seconds``).
  A PACS routing a stable study sends it in one association and releases it; waiting the full
  stability time again after that only doubles the wait.
- no instance arrived for ``stable_seconds``: the fallback for senders that keep associations open
  or abort them (mercure and Orthanc use only this one).

The clocks are the study's ``last_received_at``, ``released_at`` and ``settle_until`` columns, not a
thread-local, so a restart neither forgets a study nor restarts its clock. QUEUED is where the
analysis picks up. An instance after that moves the study back to RECEIVING and a revised result.

Several processes may run an assembler (each receive and analyse role does); one at a time does the
work, the holder of the lease ``LEADER_LEASE`` (``StateDB.hold_lease``, renewed each round). When it
dies another takes over once the lease expires; when it stops cleanly it gives the lease back.
"""

from __future__ import annotations

import time

from onconode.background import PollingLoop
from onconode.state import StateDB, StateError, StudyState

LEADER_LEASE = "assembler"


class Assembler(PollingLoop):
    name = "assembler"

    def __init__(self, db: StateDB, stable_seconds: float, poll_seconds: float,
                 lease_seconds: float | None = None) -> None:
        """``lease_seconds``: run only while holding the leader lease (None: always, for one process)."""
        super().__init__(poll_seconds)
        self._db = db
        self._stable_seconds = stable_seconds
        self._lease_seconds = lease_seconds

    def run_once(self, now: float | None = None) -> list[str]:
        """Queue every complete study; returns their UIDs."""
        now = time.time() if now is None else now
        queued = []
        for study_uid, released_at in self._db.released_and_settled(now):
            if self._complete(study_uid, released_at, "the sender released the association that delivered it; "
                              "nothing new since"):
                queued.append(study_uid)
        cutoff = now - self._stable_seconds
        for study_uid in self._db.receiving_since_before(cutoff):
            if self._complete(study_uid, cutoff, f"no new instance for {self._stable_seconds:g} s"):
                queued.append(study_uid)
        return queued

    def _complete(self, study_uid: str, received_before: float, reason: str) -> bool:
        # received_before re-checks inside the transaction: an instance that arrived since the query
        # keeps the study RECEIVING.
        if not self._db.transition(study_uid, StudyState.STABLE, reason, expect=[StudyState.RECEIVING],
                                   received_before=received_before):
            return False
        self._db.transition(study_uid, StudyState.QUEUED, "waiting for analysis", expect=[StudyState.STABLE])
        return True

    def step(self) -> bool:
        if self._lease_seconds is None or self._db.hold_lease(LEADER_LEASE, self._lease_seconds):
            self.run_once()
        return False  # the clock, not the queue, decides when there is more to do

    def stop(self) -> None:
        super().stop()
        if self._lease_seconds is not None:
            try:
                self._db.release_lease(LEADER_LEASE)
            except StateError:  # the database is away: the lease expires by itself
                pass
