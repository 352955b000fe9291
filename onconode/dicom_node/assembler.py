"""Study assembly: when a study is complete.

Input: study rows in RECEIVING (``onconode/state``). Output: transitions RECEIVING → STABLE → QUEUED,
the reason naming the signal that completed the study. DICOM has no "end of study" message; these
signals stand in for it:

- the sender released the association that delivered the study's newest instance, and nothing
  arrived for the settle time after (``study.settle_seconds``, per caller ``callers[].settle_seconds``).
  A PACS routing a stable study sends it in one association and releases it; waiting the full
  stability time again after that only doubles the wait. A caller that is also a Query/Retrieve
  peer (``callers[].count_query``) is asked once per release how many instances it holds of the
  study; when all of them are here, the study is complete without the settle time.
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

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial

from onconode.background import PollingLoop
from onconode.config import Caller
from onconode.dicom_node.scu import PeerAddress, study_instance_count
from onconode.state import ReleasedStudy, StateDB, StateError, StudyState

log = logging.getLogger(__name__)

# study UID -> how many instances one caller holds of the study, None when it does not say; raises
# OSError or RuntimeError when it cannot be asked.
CountOf = Callable[[str], "int | None"]

LEADER_LEASE = "assembler"


def counters_for(callers: Sequence[Caller], own_ae: str) -> dict[str, CountOf]:
    """How to ask each ``count_query`` caller for a study's count: a C-FIND to its host and port."""
    return {c.ae_title: partial(study_instance_count, PeerAddress(c.ae_title, c.host, c.port), calling_ae=own_ae)
            for c in callers if c.count_query and c.host is not None and c.port is not None}


class Assembler(PollingLoop):
    name = "assembler"

    def __init__(self, db: StateDB, stable_seconds: float, poll_seconds: float,
                 lease_seconds: float | None = None, counters: Mapping[str, CountOf] | None = None) -> None:
        """``lease_seconds``: run only while holding the leader lease (None: always, for one process).
        ``counters``: per calling AE title, how to ask that caller for a study's instance count."""
        super().__init__(poll_seconds)
        self._db = db
        self._stable_seconds = stable_seconds
        self._lease_seconds = lease_seconds
        self._counters = dict(counters or {})
        self._asked: set[tuple[str, float]] = set()   # (study, release) pairs asked about, still settling

    def run_once(self, now: float | None = None) -> list[str]:
        """Queue every complete study; returns their UIDs."""
        now = time.time() if now is None else now
        queued = []
        settling = self._db.released_and_settling(now, self._counters)
        self._asked &= {(s.study_uid, s.released_at) for s in settling}
        for study in settling:
            reason = self._counted(study)
            if reason is not None and self._complete(study.study_uid, study.released_at, reason):
                queued.append(study.study_uid)
        for study_uid, released_at in self._db.released_and_settled(now):
            if self._complete(study_uid, released_at, "the sender released the association that delivered it; "
                              "nothing new since"):
                queued.append(study_uid)
        cutoff = now - self._stable_seconds
        for study_uid in self._db.receiving_since_before(cutoff):
            if self._complete(study_uid, cutoff, f"no new instance for {self._stable_seconds:g} s"):
                queued.append(study_uid)
        return queued

    def _counted(self, study: ReleasedStudy) -> str | None:
        """The completion reason when the releasing caller holds exactly what is stored; asked once
        per release, so a caller that is away or disagrees costs one query and then the settle time."""
        key = (study.study_uid, study.released_at)
        if key in self._asked:
            return None
        self._asked.add(key)
        try:
            count = self._counters[study.released_by](study.study_uid)
        except (OSError, RuntimeError) as err:
            log.warning("event=count_query_failed caller=%s error=%s", study.released_by, type(err).__name__)
            return None
        if count is None or count != study.instances:
            return None
        return (f"the sender released the association that delivered it and holds {count} instances of it "
                "(C-FIND NumberOfStudyRelatedInstances), all of them here")

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
