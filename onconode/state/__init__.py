"""The node's state in SQLite (WAL): instances, studies, and every study transition as a row.

This module alone holds SQL. Each public method is one transaction. State lives in the database,
not in memory, so a restart resumes exactly where the node stopped.

Durability split: instance *files* are made durable by ``dicom_node/storage.py`` (fsync before
Success). The index runs with ``synchronous=NORMAL``: a committed row survives a killed process
(it is in the WAL in the OS cache) but may be lost in a power cut; ``dicom_node/recovery.py``
re-indexes any stored file the index lacks at start-up, so the files stay the source of truth
and each C-STORE costs one fsync fewer.
"""

from __future__ import annotations

from onconode.state.deliveries import DeliveryQueries
from onconode.state.records import (
    FINAL_STATES,
    REPROCESSABLE,
    RESUME,
    Delivery,
    DeliveryState,
    NewDelivery,
    NewReport,
    ReceivedInstance,
    RecordOutcome,
    Report,
    SeriesCount,
    StateError,
    Study,
    StudyState,
    Transition,
    TransitionListener,
)
from onconode.state.studies import StudyQueries


class StateDB(StudyQueries, DeliveryQueries):
    """The one access layer to the SQLite database; safe to share between threads."""


__all__ = ["FINAL_STATES", "REPROCESSABLE", "RESUME", "Delivery", "DeliveryState", "NewDelivery", "NewReport",
           "ReceivedInstance", "RecordOutcome", "Report", "SeriesCount", "StateDB", "StateError", "Study",
           "StudyState", "Transition", "TransitionListener"]
