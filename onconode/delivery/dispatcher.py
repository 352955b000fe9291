"""The delivery thread: send due deliveries, retry with exponential backoff, then dead letter.

Input: the delivery rows in ``onconode/state`` (written by ``outbox.Reporter``) and the senders.
Output: rows marked sent or dead, and study states REPORTED → DELIVERING → DELIVERED, or FAILED
with a reason, once no delivery of the study is pending.

Attempts and next-try times are rows, not memory: a restarted node picks up exactly the pending
objects, and an object recorded as sent is never sent again. Delivery is at least once: a node that
dies between the peer's answer and the "sent" row sends that object again, under the same SOP
Instance UID (a PACS keeps one copy) or the same FHIR conditional-create identifiers.

Dispatchers on several hosts share the rows: each pass claims the due rows with a lease
(``StateDB.claim_deliveries``) that a heartbeat renews while it sends, so no object is sent by two
dispatchers at once; rows of a dispatcher that died are claimed by another once the lease expires.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping

from onconode.background import PollingLoop
from onconode.config import DeliverySettings, Settings
from onconode.delivery.senders import DicomSender, FhirSender, Sender, without_peer_text
from onconode.events import Event, log_event, tell_listeners
from onconode.state import Delivery, DeliveryState, StateDB, StateError, StudyState
from onconode.state.heartbeat import Heartbeat

log = logging.getLogger(__name__)


# Told after each attempt is recorded: (delivery before the attempt, "sent" | "retry" | "dead", error).
OutcomeListener = Callable[[Delivery, str, "str | None"], None]


def backoff(attempts: int, first: float, ceiling: float) -> float:
    """Seconds before the next try after ``attempts`` failed ones: first, 2·first, 4·first, ..."""
    return float(min(ceiling, first * (2 ** max(0, attempts - 1))))


class Dispatcher(PollingLoop):
    """A background loop (``start()``/``stop()``); ``run_once()`` is one pass, usable on its own."""

    name = "dispatcher"

    def __init__(self, db: StateDB, senders: Mapping[str, Sender], settings: DeliverySettings,
                 lease_seconds: float = 30) -> None:
        super().__init__(settings.poll_seconds)
        self.lease_seconds = lease_seconds
        self._open: set[int] = set()  # claimed rows of this pass not yet recorded (their leases are renewed)
        self._open_lock = threading.Lock()
        self.db = db
        self.senders = dict(senders)
        self.settings = settings
        self._listeners: list[OutcomeListener] = []

    def add_outcome_listener(self, listener: OutcomeListener) -> None:
        """Call ``listener`` after each recorded attempt (the audit trail and the metrics use it)."""
        self._listeners.append(listener)

    def _tell(self, delivery: Delivery, outcome: str, error: str | None) -> None:
        tell_listeners(self._listeners, delivery, outcome, error, about=f"delivery study={delivery.study_uid}",
                       logger=log)

    def step(self) -> bool:
        try:
            self.run_once()
        except StateError:
            raise
        except Exception:  # a bug in one pass must not stop delivery; the rows keep the work
            log.exception("event=dispatcher_error")
        return False

    def run_once(self) -> None:
        for study in self.db.studies([StudyState.REPORTED]):
            pending = self.db.delivery_counts(study.study_uid)[DeliveryState.PENDING]
            self.db.transition(study.study_uid, StudyState.DELIVERING, f"{pending} objects to deliver",
                               expect=[StudyState.REPORTED])
        claimed = self.db.claim_deliveries(time.time(), self.lease_seconds)
        if claimed:
            ids = [d.id for d in claimed]
            with self._open_lock:
                self._open = set(ids)
            try:
                with Heartbeat(self._renew, self.lease_seconds / 3, what=f"{len(ids)} deliveries") as beat:
                    for (_, destination, kind), group in itertools.groupby(
                            claimed, key=lambda d: (d.report_id, d.destination, d.kind)):
                        if beat.lost:  # stalled past the lease: another dispatcher has these rows now
                            break
                        self._send(destination, kind, list(group))
            finally:
                self.db.release_deliveries(ids)  # those a failure kept it from: due again at once
        self._settle()

    def _renew(self) -> bool:
        """Keep the leases of the claimed rows not yet recorded as sent or failed."""
        with self._open_lock:
            open_ids = sorted(self._open)
        return not open_ids or self.db.renew_deliveries(open_ids, self.lease_seconds) > 0

    def _recorded(self, delivery: Delivery) -> None:
        with self._open_lock:
            self._open.discard(delivery.id)

    def _send(self, destination: str, kind: str, deliveries: list[Delivery]) -> None:
        sender = self.senders.get(kind)
        if sender is None:
            for d in deliveries:
                self._failed(d, f"no sender for destination kind {kind!r}", permanent=True)
            return
        for delivery, outcome in sender.send(destination, deliveries):
            if outcome.error is None:
                self.db.delivery_sent(delivery.id)
                self._recorded(delivery)
                log_event(log, Event.DELIVERY_SENT, study=delivery.study_uid, sop=delivery.object_uid,
                          destination=destination, kind=kind, attempt=delivery.attempts + 1)
                self._tell(delivery, "sent", None)
            else:
                self._failed(delivery, outcome.error, outcome.permanent)

    def _failed(self, delivery: Delivery, error: str, permanent: bool = False) -> None:
        self._recorded(delivery)
        attempts = delivery.attempts + 1
        if permanent or attempts >= self.settings.max_attempts:
            self.db.delivery_failed(delivery.id, error, None)
            log_event(log, Event.DELIVERY_DEAD, logging.WARNING, study=delivery.study_uid,
                      sop=delivery.object_uid, destination=delivery.destination, attempts=attempts,
                      reason=without_peer_text(error))
            self._tell(delivery, "dead", without_peer_text(error))
            return
        wait = backoff(attempts, self.settings.backoff_seconds, self.settings.max_backoff_seconds)
        self.db.delivery_failed(delivery.id, error, time.time() + wait)
        log_event(log, Event.DELIVERY_FAILED, logging.WARNING, study=delivery.study_uid, sop=delivery.object_uid,
                  destination=delivery.destination, attempts=attempts, retry_in_s=round(wait, 1),
                  reason=without_peer_text(error))
        self._tell(delivery, "retry", without_peer_text(error))

    def _settle(self) -> None:
        """DELIVERING studies with nothing pending end DELIVERED, or FAILED when any object is dead."""
        for study in self.db.studies([StudyState.DELIVERING]):
            counts = self.db.delivery_counts(study.study_uid)
            if counts[DeliveryState.PENDING]:
                continue
            dead = self.db.deliveries(study.study_uid, DeliveryState.DEAD)
            if dead:
                last = dead[-1]
                reason = (f"{len(dead)} object(s) in the dead letter; last: {last.destination}: "
                          f"{without_peer_text(last.last_error or '')}")
                self.db.transition(study.study_uid, StudyState.FAILED, reason, expect=[StudyState.DELIVERING])
            else:
                sent = counts[DeliveryState.SENT]
                self.db.transition(study.study_uid, StudyState.DELIVERED,
                                   f"{sent} objects delivered" if sent else "no destination configured",
                                   expect=[StudyState.DELIVERING])


def from_settings(settings: Settings, db: StateDB) -> Dispatcher:
    """The dispatcher with one sender per kind, as ``onconode serve`` runs it."""
    calling_ae = settings.delivery.calling_ae or settings.node.ae_title
    senders: dict[str, Sender] = {"dicom": DicomSender(calling_ae), "fhir": FhirSender(settings.destinations.fhir)}
    return Dispatcher(db, senders, settings.delivery, settings.state.lease_seconds)
