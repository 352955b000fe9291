"""What the state database holds, as plain values: study states, instances, transitions, reports
and deliveries. No SQL here (``database.py`` and its two query modules hold it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from onconode.values import InstanceIdentity


class StudyState(str, Enum):
    RECEIVING = "receiving"
    STABLE = "stable"
    QUEUED = "queued"
    ANALYSING = "analysing"
    REPORTED = "reported"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    NO_MODEL = "no_model"
    FAILED = "failed"


FINAL_STATES = frozenset({StudyState.DELIVERED, StudyState.NO_MODEL, StudyState.FAILED})
# What a restart does with a study that was in the middle of something. An ANALYSING study whose
# lease another live process holds is left to it (``StateDB.transition`` refuses to move it).
RESUME = {StudyState.STABLE: StudyState.QUEUED, StudyState.ANALYSING: StudyState.QUEUED}


class StateError(RuntimeError):
    """The database could not complete a transaction (disk full, locked beyond the timeout, ...)."""


class RecordOutcome(str, Enum):
    NEW = "new"
    DUPLICATE = "duplicate"  # same SOP Instance UID, same bytes: acknowledged, nothing changes
    REPLACED = "replaced"  # same SOP Instance UID, different bytes: the newer version wins


@dataclass(frozen=True)
class ReceivedInstance:
    """One stored instance as the index knows it."""

    identity: InstanceIdentity
    transfer_syntax: str
    size: int
    sha256: str
    received_at: float
    calling_ae: str


@dataclass(frozen=True)
class Study:
    study_uid: str
    state: StudyState
    reason: str | None
    instances: int
    first_received_at: float
    last_received_at: float
    state_changed_at: float
    calling_ae: str | None
    calling_host: str | None


@dataclass(frozen=True)
class SeriesCount:
    series_uid: str
    modality: str
    instances: int


TransitionListener = Callable[["Transition"], None]
# States from which an operator may ask for a study to be analysed again.
REPROCESSABLE = frozenset({StudyState.REPORTED, StudyState.DELIVERING, StudyState.DELIVERED,
                           StudyState.NO_MODEL, StudyState.FAILED, StudyState.STABLE})


@dataclass(frozen=True)
class ReleasedStudy:
    """A study whose delivering association was released and which is still settling."""

    study_uid: str
    released_at: float
    released_by: str        # the calling AE title of that association
    instances: int          # instances stored for the study so far


@dataclass(frozen=True)
class Transition:
    study_uid: str
    at: float
    from_state: StudyState | None
    to_state: StudyState
    reason: str | None


class DeliveryState(str, Enum):
    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"  # retry limit reached: the dead letter (``onconode deadletter list|replay``)


@dataclass(frozen=True)
class NewReport:
    """A report just written to the outbox; ``fingerprint`` says what it was built from."""

    study_uid: str
    folder: Path
    sr_sop_uid: str
    sr_path: Path
    fingerprint: str


@dataclass(frozen=True)
class Report:
    id: int
    study_uid: str
    created_at: float
    folder: Path
    sr_sop_uid: str
    sr_path: Path
    fingerprint: str


@dataclass(frozen=True)
class NewDelivery:
    """One object for one destination; ``seq`` orders the sends (the SR first)."""

    destination: str
    kind: str
    seq: int
    path: Path
    object_uid: str


@dataclass(frozen=True)
class Delivery:
    id: int
    report_id: int
    study_uid: str
    destination: str
    kind: str
    seq: int
    path: Path
    object_uid: str
    state: DeliveryState
    attempts: int
    next_try_at: float
    last_error: str | None
    sent_at: float | None


@dataclass(frozen=True)
class Claim:
    """A study this process analyses until ``expires_at`` (renewed by its heartbeat);
    ``taken_over_from`` names the holder whose lease expired, when it was not queued."""

    study_uid: str
    lease_id: str
    expires_at: float
    taken_over_from: str | None = None


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a named lease (``owner.py`` says how a holder is named) and until when."""

    name: str
    owner: str
    acquired_at: float
    expires_at: float
    heartbeat_at: float
