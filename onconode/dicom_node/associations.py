"""Per-connection statistics of the listener, and the summary each connection ends with.

Input: what the listener learns about a connection, keyed by the peer's (host, port): admitted
(holding an association slot), accepted, instances stored, released or aborted, closed, or ended
before it became an association. Output: one ``AssociationSummary`` per connection, logged once
and told to the listeners (metrics, audit trail), however the connection ended; and the slot it
held given back.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from onconode.dicom_node.policy import AssociationSlots
from onconode.events import Event, log_event, tell_listeners
from onconode.values import AssociationListener, AssociationSummary

log = logging.getLogger(__name__)

_NORMAL_ENDS = ("accepted", "released", "aborted")




@dataclass
class _Connection:
    host: str
    port: int
    calling_ae: str = "-"
    outcome: str = "open"
    reason: str | None = None
    instances: int = 0
    duplicates: int = 0
    failures: int = 0
    bytes: int = 0
    studies: set[str] = field(default_factory=set)
    holds_slot: bool = False
    opened: float = field(default_factory=time.monotonic)


class AssociationBook:
    """The open connections of one process and what each has done so far."""

    def __init__(self, slots: AssociationSlots) -> None:
        self.listeners: list[AssociationListener] = []
        self._slots = slots
        self._open: dict[tuple[str, int], _Connection] = {}
        self._lock = threading.Lock()

    def _entry(self, host: str, port: int) -> _Connection:
        with self._lock:
            return self._open.setdefault((host, port), _Connection(host, port))

    def opened(self, host: str, port: int) -> None:
        self._entry(host, port)

    def admitted(self, host: str, port: int, calling_ae: str) -> None:
        """The A-ASSOCIATE-RQ passed the policy and took a slot, given back when the connection ends."""
        entry = self._entry(host, port)
        entry.calling_ae, entry.holds_slot = calling_ae, True

    def accepted(self, host: str, port: int, calling_ae: str) -> None:
        entry = self._entry(host, port)
        entry.calling_ae, entry.outcome = calling_ae, "accepted"

    def ended(self, host: str, port: int, released: bool) -> None:
        """EVT_RELEASED or EVT_ABORTED; a reason the guard gave stays."""
        self._entry(host, port).outcome = "released" if released else "aborted"

    def refused(self, host: str, port: int, outcome: str, reason: str) -> None:
        """The guard ended the association; the connection closes next."""
        entry = self._entry(host, port)
        entry.outcome, entry.reason = outcome, reason

    def stored(self, host: str, port: int, new_bytes: int, duplicate: bool, success: bool,
               study_uid: str | None = None) -> None:
        entry = self._entry(host, port)
        if study_uid is not None:
            entry.studies.add(study_uid)
        if not success:
            entry.failures += 1
        elif duplicate:
            entry.duplicates += 1
        else:
            entry.instances += 1
            entry.bytes += new_bytes

    def calling_ae(self, host: str, port: int) -> str:
        return self._entry(host, port).calling_ae

    def closed(self, host: str, port: int, aborted: bool, released: bool) -> None:
        """The connection closed (EVT_CONN_CLOSE, or the server's last word on it: whichever comes
        first concludes it); its summary goes out."""
        with self._lock:
            entry = self._open.pop((host, port), None)
        if entry is None:
            return
        if entry.outcome == "accepted":
            # The peer may close on our A-ABORT or A-RELEASE-RP before EVT_ABORTED / EVT_RELEASED
            # has run on the association thread; the flags are set before those PDUs go out.
            entry.outcome = "aborted" if aborted else "released" if released else "accepted"
        elif entry.outcome == "open":
            entry.outcome = "failed"
            entry.reason = entry.reason or "closed before its association was negotiated"
        self._conclude(entry)

    def ended_early(self, host: str, port: int, outcome: str, reason: str, calling_ae: str | None) -> None:
        """A connection that never became an association: rejected, aborted, failed (TLS, silence)."""
        with self._lock:
            entry = self._open.pop((host, port), None) or _Connection(host, port)
        entry.outcome, entry.reason = outcome, reason
        if calling_ae is not None:
            entry.calling_ae = calling_ae
        self._conclude(entry)

    def _conclude(self, entry: _Connection) -> None:
        """One log line and one summary for every connection, however it ended; its slot back."""
        if entry.holds_slot:
            entry.holds_slot = False
            self._slots.give_back()
        summary = AssociationSummary(entry.calling_ae, entry.host, entry.outcome, entry.reason, entry.instances,
                                     entry.duplicates, entry.failures, entry.bytes,
                                     round((time.monotonic() - entry.opened) * 1000), tuple(sorted(entry.studies)))
        log_event(log, Event.ASSOCIATION, level=logging.INFO if entry.outcome in _NORMAL_ENDS else logging.WARNING,
                  calling_ae=entry.calling_ae, host=entry.host, port=entry.port, outcome=entry.outcome,
                  reason=entry.reason, instances=entry.instances, duplicates=entry.duplicates,
                  failures=entry.failures, bytes=entry.bytes, ms=summary.ms)
        tell_listeners(self.listeners, summary, about=f"association calling_ae={summary.calling_ae}", logger=log)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)
