"""Store one received instance: identify and check → hash → write durably → index → a status.

Input: a ``StoreRequest`` (the data set bytes as received, the command's UIDs, the presentation
context's transfer syntax, the caller) and the ``StoreResources`` it is stored with. Output: a
``StoreOutcome``: the status to answer and what was stored. ``store_instance`` never raises: each
failure path returns its own ``StoreStatus`` and logs one line without any value of the data set,
and Success comes only after the file is durable and indexed.

Duplicates. A SOP Instance UID names one object for good (a changed object gets a new UID,
PS3.3 C.12.1.1.1), so:
- the same bytes again (by SHA-256) answer Success and write nothing: a resend is idempotent;
- different bytes under a UID already stored answer DUPLICATE_CONFLICT (0x0111, "Duplicate SOP
  Instance", PS3.7 Annex C) and write nothing: the first object is kept, as Orthanc keeps it by
  default (``OverwriteInstances: false``). Replacing it would silently change a study that may
  already be analysed, with an object the sender itself got wrong; a failure makes the sender say
  so. The check holds between simultaneous associations too: a file is never replaced on disk
  (``storage.AlreadyStored``), and one found there unindexed is compared byte for byte.
"""

from __future__ import annotations

import hashlib
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass

from onconode.dicom_node.identify import InvalidInstance, identify
from onconode.dicom_node.part10 import part10_bytes
from onconode.dicom_node.status import StoreStatus
from onconode.dicom_node.storage import AlreadyStored, InstanceStorage, LowDiskSpace, StorageFull
from onconode.events import Event, log_event
from onconode.state import ReceivedInstance, RecordOutcome, StateDB, StateError
from onconode.values import InstanceIdentity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreRequest:
    """One C-STORE as received."""

    data_set: bytes
    sop_class_uid: str  # the command's Affected SOP Class UID
    sop_instance_uid: str  # the command's Affected SOP Instance UID
    transfer_syntax: str  # the presentation context's
    calling_ae: str
    calling_host: str


@dataclass(frozen=True)
class StoreOutcome:
    """The status to answer and, on Success, whether anything new was stored."""

    status: StoreStatus
    stored_bytes: int = 0  # bytes of a new instance; 0 for a duplicate or a failure
    duplicate: bool = False
    study_uid: str | None = None  # on Success: the study the instance belongs to


@dataclass(frozen=True)
class StoreResources:
    """What instances are stored with, shared by the associations of one process."""

    storage: InstanceStorage
    db: StateDB
    hashing: Executor  # SHA-256 beside the write and its fsync (hashlib releases the GIL)
    max_dataset_bytes: int


def store_instance(request: StoreRequest, resources: StoreResources) -> StoreOutcome:
    """Store ``request`` durably and answer its status; nothing escapes (a bug answers 0xC211)."""
    try:
        return _store(request, resources)
    except Exception:
        log.exception("event=store_failed status=0x%04X reason=unexpected", StoreStatus.UNEXPECTED_ERROR)
        return StoreOutcome(StoreStatus.UNEXPECTED_ERROR)


def _store(request: StoreRequest, resources: StoreResources) -> StoreOutcome:
    try:
        identity = identify(request.data_set, request.transfer_syntax, request.sop_class_uid,
                            request.sop_instance_uid, resources.max_dataset_bytes)
    except InvalidInstance as err:
        return _refused(err.status, err.reason, request)
    encoded = part10_bytes(request.data_set, request.sop_class_uid, request.sop_instance_uid,
                           request.transfer_syntax)
    # Only a SOP Instance UID already indexed needs the digest before the write.
    hashing = resources.hashing.submit(_sha256, encoded)
    known = resources.db.instance_sha256(identity.sop_instance_uid)
    if known is not None:
        if known != hashing.result():
            return _conflict(request, identity)
        if resources.storage.path_for(identity).is_file():
            return StoreOutcome(StoreStatus.SUCCESS, duplicate=True, study_uid=identity.study_uid)
    try:
        resources.storage.write(identity, encoded)
    except AlreadyStored:
        # On disk but not indexed: another association storing it this moment, or a stop between the
        # rename and the index. The bytes decide.
        if _sha256(resources.storage.path_for(identity).read_bytes()) != hashing.result():
            return _conflict(request, identity)
    except LowDiskSpace as err:
        return _refused(StoreStatus.OUT_OF_RESOURCES_DISK_GUARD, str(err), request, identity)
    except StorageFull as err:
        return _refused(StoreStatus.OUT_OF_RESOURCES_WRITE, str(err), request, identity)
    except OSError as err:
        return _refused(StoreStatus.OUT_OF_RESOURCES_WRITE, f"write failed: {err.strerror}", request, identity)
    received = ReceivedInstance(identity, request.transfer_syntax, len(encoded), hashing.result(), time.time(),
                                request.calling_ae)
    try:
        outcome = resources.db.record_instance(received, calling_host=request.calling_host)
    except StateError as err:
        # The file is durable; the next start re-indexes it (recovery.py). The sender retries.
        return _refused(StoreStatus.OUT_OF_RESOURCES_INDEX, str(err), request, identity)
    if outcome == RecordOutcome.DUPLICATE:
        return StoreOutcome(StoreStatus.SUCCESS, duplicate=True, study_uid=identity.study_uid)
    return StoreOutcome(StoreStatus.SUCCESS, stored_bytes=len(encoded), study_uid=identity.study_uid)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _conflict(request: StoreRequest, identity: InstanceIdentity) -> StoreOutcome:
    return _refused(StoreStatus.DUPLICATE_CONFLICT,
                    "another object is stored under this SOP Instance UID; the first is kept", request, identity)


def _refused(status: StoreStatus, reason: str, request: StoreRequest,
             identity: InstanceIdentity | None = None) -> StoreOutcome:
    log_event(log, Event.STORE_FAILED, level=logging.WARNING, status=f"0x{status:04X}", reason=reason,
              sop=identity.sop_instance_uid if identity else None, calling_ae=request.calling_ae,
              host=request.calling_host)
    return StoreOutcome(status)
