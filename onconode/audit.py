"""The audit trail: one JSON object per line for every association, study transition and delivery.

Input: association summaries from ``dicom_node/scp.py``, committed transitions from ``onconode/state``
(a listener) and delivery outcomes from the delivery stage. Output: lines appended to
``audit.path``, each flushed and fsynced before the call returns, so the trail survives a crash.

The trail holds identifiers (UIDs, AE titles, hosts), counts and reasons, never a patient's name,
ID or birth date: the study UID is the link between records, so no patient identifier is needed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from enum import Enum
from pathlib import Path
from typing import Any

from onconode.state import Transition


class AuditKind(str, Enum):
    ASSOCIATION = "association"
    TRANSITION = "transition"
    DELIVERY = "delivery"


class AuditLog:
    """Appends audit records to a file; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()

    def association(self, *, calling_ae: str, host: str, outcome: str, reason: str | None, instances: int,
                    bytes_received: int, failures: int, ms: int) -> None:
        """One association, written when its connection closes (accepted, rejected or aborted)."""
        self.write(AuditKind.ASSOCIATION, calling_ae=calling_ae, host=host, outcome=outcome,
                   accepted=outcome != "rejected", reason=reason, instances=instances, bytes=bytes_received,
                   failures=failures, ms=ms)

    def transition(self, transition: Transition) -> None:
        """A committed study transition (``StateDB.add_transition_listener(audit.transition)``)."""
        self.write(AuditKind.TRANSITION, study=transition.study_uid,
                   from_state=transition.from_state.value if transition.from_state else None,
                   to_state=transition.to_state.value, reason=transition.reason, event_at=transition.at)

    def delivery(self, *, study_uid: str, destination: str, object_name: str, outcome: str, attempt: int,
                 error: str | None = None) -> None:
        """One delivery attempt of one object to one destination."""
        self.write(AuditKind.DELIVERY, study=study_uid, destination=destination, object=object_name,
                   outcome=outcome, attempt=attempt, error=error)

    def write(self, kind: AuditKind, **fields: Any) -> None:
        record = {"at": round(time.time(), 3), "kind": kind.value}
        record.update({k: v for k, v in fields.items() if v is not None})
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)


def read_audit(path: Path) -> list[dict[str, Any]]:
    """Every record of an audit file, in order (for the CLI and tests)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
