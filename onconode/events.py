"""Structured log lines: ``event=<name> key=value ...``, one line per event.

Every component logs through ``log_event`` so that operators can grep one format and so that the
fields that may appear are visible in one place. Values are identifiers, counts and reasons only:
never a patient's name, ID or birth date, never pixel data or whole data sets.
"""

from __future__ import annotations

import logging
from enum import Enum


class Event(str, Enum):
    NODE_STARTED = "node_started"
    NODE_STOPPED = "node_stopped"
    RECOVERY = "recovery"
    MODELS = "models"
    ASSOCIATION = "association"
    STORE_FAILED = "store_failed"
    STUDY_TRANSITION = "study_transition"
    ANALYSED = "analysed"
    REPORT_PREPARED = "report_prepared"
    DELIVERY_SENT = "delivery_sent"
    DELIVERY_FAILED = "delivery_failed"
    DELIVERY_DEAD = "delivery_dead"


def _format(value: object) -> str:
    text = str(value.value) if isinstance(value, Enum) else str(value)
    if not text or any(c in text for c in ' "='):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def log_event(logger: logging.Logger, event: Event, level: int = logging.INFO, **fields: object) -> None:
    """Log one ``event=... key=value`` line; ``None`` values are left out."""
    if not logger.isEnabledFor(level):
        return
    parts = [f"event={event.value}"]
    parts += [f"{key}={_format(value)}" for key, value in fields.items() if value is not None]
    logger.log(level, " ".join(parts))
