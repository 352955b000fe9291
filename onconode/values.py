"""Values every stage shares: the identity of a stored instance, what one association did, and the
validators for the identifiers that reach a file path, a database row or an association.

Each returns ``None`` when the value is acceptable, otherwise a short reason that is safe to log
(it never echoes the value back beyond its length), in the spirit of pynetdicom's
``_validators.py``: callers decide what a failure means on their surface (a DIMSE status, a
configuration error).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# PS3.5 9.1: components of digits separated by ".", no leading zero in a component of more than one
# digit, at most 64 characters. The first component is 0, 1 or 2 (ISO/IEC 8824 root arcs).
_UID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))*")
UID_MAX_LENGTH = 64

# PS3.5 6.2, VR AE: at most 16 characters of the default repertoire without backslash or control
# characters; leading and trailing spaces are not significant, and a title of only spaces is not valid.
_AE_TITLE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")


def check_uid(value: object) -> str | None:
    """Return why ``value`` is not a valid DICOM UID, or ``None`` when it is."""
    if not isinstance(value, str):
        return "not a string"
    if not value:
        return "empty"
    if len(value) > UID_MAX_LENGTH:
        return f"longer than {UID_MAX_LENGTH} characters ({len(value)})"
    if not _UID.fullmatch(value):
        return "not in the UID grammar [0-2](.(0|[1-9][0-9]*))*"
    return None


# A quoted part of a library's message: what it quotes is usually the value it refused.
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def unquoted(message: str) -> str:
    """A library's error message, first line only, with every quoted part replaced by '…': the value
    it quotes may come from a data set (a name, a birth date), which no log or reason may hold."""
    return _QUOTED.sub("'…'", message.splitlines()[0] if message else "")


def check_ae_title(value: object) -> str | None:
    """Return why ``value`` is not a valid AE title, or ``None`` when it is."""
    if not isinstance(value, str):
        return "not a string"
    if not _AE_TITLE.fullmatch(value):
        return "not 1-16 printable characters without backslash"
    if not value.strip():
        return "only spaces"
    return None


@dataclass(frozen=True)
class InstanceIdentity:
    """Where an instance belongs; every UID has passed ``check_uid``."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str


@dataclass(frozen=True)
class AssociationSummary:
    """What one association did, told to listeners (metrics, audit) when its connection closes."""

    calling_ae: str
    host: str
    outcome: str  # accepted (still open at close), released, aborted, rejected, failed (e.g. TLS handshake)
    reason: str | None
    instances: int
    duplicates: int
    failures: int
    bytes: int
    ms: int
    # The studies it stored instances of (new or duplicate): a released association is the sender's
    # "that was all", one of the signals that a study is complete (assembler.py).
    study_uids: tuple[str, ...] = ()


AssociationListener = Callable[[AssociationSummary], None]
