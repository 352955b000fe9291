"""Study assembly: a study is complete once no instance has arrived for ``stable_seconds``.

Input: study rows in RECEIVING (``onconode/state``). Output: transitions RECEIVING → STABLE → QUEUED.
DICOM has no "end of study" message, so stability is the only signal a receiver has (mercure and
Orthanc do the same). The timer is the study's ``last_received_at`` column, not a thread-local, so
a restart neither forgets a study nor restarts its clock. QUEUED is where the analysis picks up.

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
        """Queue every study quiet for long enough; returns their UIDs."""
        cutoff = (time.time() if now is None else now) - self._stable_seconds
        queued = []
        for study_uid in self._db.receiving_since_before(cutoff):
            # received_before re-checks inside the transaction: an instance that arrived since
            # the query keeps the study RECEIVING.
            if self._db.transition(study_uid, StudyState.STABLE,
                                   f"no new instance for {self._stable_seconds:g} s",
                                   expect=[StudyState.RECEIVING], received_before=cutoff):
                self._db.transition(study_uid, StudyState.QUEUED, "waiting for analysis",
                                    expect=[StudyState.STABLE])
                queued.append(study_uid)
        return queued

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
