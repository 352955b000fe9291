"""The node's state: instances, studies, every study transition as a row, reports, deliveries, leases.

This package alone holds SQL. Each public method is one transaction. State lives in the database,
not in memory, so a restart resumes exactly where the node stopped. The database is the embedded
SQLite file (one host, WAL) or, for several hosts, PostgreSQL (``state.url``): the same API, the
same numbered schema, and claims with leases so that several workers and dispatchers share the work
without doing any of it twice at once (``leases.py``).

Durability split: instance *files* are made durable by ``dicom_node/storage.py`` (fsync before
Success). The index commits without waiting for its log to reach the disk (SQLite
``synchronous=NORMAL``, PostgreSQL ``synchronous_commit=off`` for that transaction only): a committed
row survives a killed OncoNode process but may be lost in a power cut or a crash of the database
server; ``dicom_node/recovery.py`` re-indexes any stored file the index lacks when a receiver starts,
so the files stay the source of truth and each C-STORE costs one fsync fewer. Everything else
(claims, reports, deliveries) commits durably.
"""

from __future__ import annotations

from onconode.config import StateSettings
from onconode.state.deliveries import DeliveryQueries
from onconode.state.leases import LeaseQueries
from onconode.state.records import (
    FINAL_STATES,
    REPROCESSABLE,
    RESUME,
    Claim,
    Delivery,
    DeliveryState,
    LeaseHolder,
    NewDelivery,
    NewReport,
    ReceivedInstance,
    RecordOutcome,
    ReleasedStudy,
    Report,
    SeriesCount,
    StateError,
    Study,
    StudyState,
    Transition,
    TransitionListener,
)
from onconode.state.studies import StudyQueries


class StateDB(StudyQueries, DeliveryQueries, LeaseQueries):
    """The one access layer to the state database; safe to share between threads.

    ``StateDB(path)`` opens SQLite, ``StateDB("postgresql://...")`` PostgreSQL (``open_state`` picks
    from the settings). The schema is migrated on open.

    Raises
    ------
    StateError
        When the database cannot be opened or migrated (``SchemaTooNew`` when it is newer).
    """


def open_state(settings: StateSettings) -> StateDB:
    """The state the settings name: ``state.url`` (PostgreSQL) when set, else ``state.database``."""
    if settings.url is not None:
        return StateDB(settings.url.get_secret_value())
    return StateDB(settings.database)


__all__ = ["FINAL_STATES", "REPROCESSABLE", "RESUME", "Claim", "Delivery", "DeliveryState", "LeaseHolder",
           "NewDelivery", "NewReport", "ReceivedInstance", "RecordOutcome", "ReleasedStudy", "Report",
           "SeriesCount", "StateDB", "StateError", "Study", "StudyState", "Transition", "TransitionListener",
           "open_state"]
