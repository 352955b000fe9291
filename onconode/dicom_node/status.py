"""C-STORE and C-ECHO statuses OncoNode answers, one member per failure path (PS3.4 B.2.3, PS3.7 C).

Handlers return these members, never bare numbers, so that a sender's log line maps to exactly one
place in our code. Codes inside a range the standard reserves (A7xx, A9xx, Cxxx) are ours to
choose; they are documented here so that a PACS administrator can look them up.
"""

from __future__ import annotations

from enum import IntEnum


class StoreStatus(IntEnum):
    """Status of a C-STORE response."""

    SUCCESS = 0x0000
    # Failure: Duplicate SOP Instance (PS3.7 Annex C, general status 0111H). A different object came
    # under the SOP Instance UID of one already stored: the first is kept, nothing is written, and
    # the sender is told. The same object again is Success (idempotent), never this.
    DUPLICATE_CONFLICT = 0x0111
    # Refused: Out of Resources (PS3.4 B.2.3, A7xx)
    OUT_OF_RESOURCES_DISK_GUARD = 0xA700  # free space below storage.min_free_mb: nothing written
    OUT_OF_RESOURCES_WRITE = 0xA701  # the write failed (ENOSPC, I/O error): the temporary file is removed
    OUT_OF_RESOURCES_INDEX = 0xA702  # the database could not record the instance
    TOO_LARGE_INFLATED = 0xA703  # a deflated data set inflates past node.max_dataset_bytes
    # Error: Data Set does not match SOP Class (PS3.4 B.2.3, A900)
    SOP_CLASS_MISMATCH = 0xA900
    # Error: Cannot understand (PS3.4 B.2.3, Cxxx)
    CANNOT_DECODE = 0xC210  # malformed: a value or item runs past the bytes received, tags out of order
    UNEXPECTED_ERROR = 0xC211  # a bug: logged with its traceback (pynetdicom answers the same for escapes)
    TRANSFER_SYNTAX_MISMATCH = 0xC212  # not in the context's transfer syntax (VR encoding, native/encapsulated)
    PIXEL_DATA_LENGTH = 0xC213  # native Pixel Data not Rows x Columns x Frames x Samples x Bits Allocated
    MISSING_UID = 0xC220  # Study, Series or SOP Instance UID absent or empty
    INVALID_UID = 0xC221  # a UID outside the DICOM UID grammar or longer than 64 characters
    INSTANCE_UID_MISMATCH = 0xC222  # data set SOP Instance UID differs from the command's

    @property
    def is_success(self) -> bool:
        return self == StoreStatus.SUCCESS
