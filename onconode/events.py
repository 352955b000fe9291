"""Structured log lines: ``event=<name> key=value ...``, one line per event.

Every component logs through ``log_event`` so that operators can grep one format and so that the
fields that may appear are visible in one place. Values are identifiers, counts and reasons only:
never a patient's name, ID or birth date, never pixel data or whole data sets.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path
from typing import Any, TextIO


class Event(str, Enum):
    NODE_STARTED = "node_started"
    NODE_STOPPED = "node_stopped"
    RECOVERY = "recovery"
    MODELS = "models"
    ASSOCIATION = "association"
    RECEIVER_EXITED = "receiver_exited"
    STORE_FAILED = "store_failed"
    STUDY_TRANSITION = "study_transition"
    ANALYSED = "analysed"
    LIBRARY_WARNING = "library_warning"
    REPORT_PREPARED = "report_prepared"
    DELIVERY_SENT = "delivery_sent"
    DELIVERY_FAILED = "delivery_failed"
    DELIVERY_DEAD = "delivery_dead"
    SCHEMA_MIGRATED = "schema_migrated"
    LEASE = "lease"  # a claim taken over, a lease lost, a leader elected


def _format(value: object) -> str:
    text = str(value.value) if isinstance(value, Enum) else str(value)
    if not text or any(c in text for c in ' "='):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def tell_listeners(listeners: Iterable[Callable[..., Any]], *args: Any, about: str = "-",
                   logger: logging.Logger | None = None) -> None:
    """Call each listener with ``args``. A listener's bug (audit, metrics) is logged and goes no
    further: the caller's work (a committed transition, a stored instance, a delivery) stands."""
    report = logger or logging.getLogger(__name__)
    for listener in listeners:
        try:
            listener(*args)
        except Exception:  # noqa: BLE001  (logged with its traceback; the caller goes on)
            report.exception("event=listener_error about=%s", about)


def log_event(logger: logging.Logger, event: Event, level: int = logging.INFO, **fields: object) -> None:
    """Log one ``event=... key=value`` line; ``None`` values are left out."""
    if not logger.isEnabledFor(level):
        return
    parts = [f"event={event.value}"]
    parts += [f"{key}={_format(value)}" for key, value in fields.items() if value is not None]
    logger.log(level, " ".join(parts))


# Libraries whose messages quote data element values (names, IDs, UIDs) as they find them.
_VALUE_QUOTING_LIBRARIES = ("pydicom", "highdicom")


class _WithholdLibraryText(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] in _VALUE_QUOTING_LIBRARIES:
            record.msg = f"event={Event.LIBRARY_WARNING.value} library={record.name} source={record.module}:{record.lineno}"
            record.args = ()
        return True


def withhold_library_values() -> None:
    """Keep data values that libraries quote out of the log: warnings and pydicom/highdicom records
    are logged as where they came from, without their text.

    pydicom and highdicom warn with the offending value in the message (e.g. a Patient's Name that
    is "unlikely to represent the intended person name"); in a node that is patient data in a log.
    Call after the root handlers exist.
    """
    log = logging.getLogger("onconode.warnings")

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        log_event(log, Event.LIBRARY_WARNING, level=logging.WARNING, category=category.__name__,
                  source=f"{Path(filename).parent.name}/{Path(filename).name}:{lineno}")

    warnings.showwarning = show
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WithholdLibraryText())


def configure_logging(level: str) -> None:
    """Log lines to stderr at ``level``, library values withheld (the node and its receiver processes)."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    withhold_library_values()
    # pynetdicom logs every DIMSE message at INFO; our own association line replaces that.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, logging.getLogger().level))
