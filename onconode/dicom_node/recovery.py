"""Start-up recovery: make the index agree with the files, and resume interrupted studies.

Input: the storage tree and the state database after any stop, clean or not. Output: a
``RecoveryReport``. Files are the source of truth for instances (they were fsynced before Success);
the index may lack the last rows after a power cut or a crash between rename and commit, and a
killed process may leave temporary files. Nothing here deletes a stored instance.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from onconode.dicom_node.identify import InvalidInstance, identify_file
from onconode.dicom_node.storage import InstanceStorage
from onconode.events import Event, log_event
from onconode.state import RESUME, ReceivedInstance, StateDB

log = logging.getLogger(__name__)

RECOVERED_CALLER = "(recovered)"


@dataclass(frozen=True)
class RecoveryReport:
    temporaries_removed: int
    reindexed: int
    unreadable: int
    resumed: int


def recover(storage: InstanceStorage, db: StateDB, max_dataset_bytes: int) -> RecoveryReport:
    """Index what is on disk and not indexed, remove temporaries, resume interrupted studies; files are
    read as C-STOREs are (``identify_file``), a deflated one inflating to ``max_dataset_bytes`` at most."""
    removed = storage.remove_stale_temporaries()
    known = db.instance_uids()
    reindexed = unreadable = 0
    for path in storage.instance_files():
        if path.stem in known:
            continue
        data = path.read_bytes()
        try:
            identity, transfer_syntax = identify_file(data, max_dataset_bytes)
        except InvalidInstance as err:
            unreadable += 1
            log_event(log, Event.RECOVERY, level=logging.ERROR, file=path.name, problem=err.reason)
            continue
        if storage.path_for(identity) != path:
            unreadable += 1
            log_event(log, Event.RECOVERY, level=logging.ERROR, file=path.name, problem="file is not where its UIDs say")
            continue
        db.record_instance(ReceivedInstance(identity, transfer_syntax, len(data),
                                            hashlib.sha256(data).hexdigest(), path.stat().st_mtime,
                                            RECOVERED_CALLER))
        reindexed += 1
    resumed = 0
    for study in db.studies(RESUME):
        resumed += db.transition(study.study_uid, RESUME[study.state], "resumed after restart", expect=[study.state])
    report = RecoveryReport(removed, reindexed, unreadable, resumed)
    log_event(log, Event.RECOVERY, temporaries_removed=removed, reindexed=reindexed, unreadable=unreadable,
              resumed=resumed)
    return report
