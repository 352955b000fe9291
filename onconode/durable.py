"""Durable files, by one path: temporary file → fsync → rename → fsync of the folder.

Used for what the node receives (``dicom_node/storage.py``) and what it sends (``delivery/outbox.py``):
after ``write_file`` returns, the file survives a crash under its final name, and a failure at any
point leaves no temporary file behind. A file is never visible half-written under its final name.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def write_file(path: Path, data: bytes, root: Path, sync_folder: bool = True) -> None:
    """Write ``data`` to ``path`` durably, creating missing folders below ``root``.

    With ``sync_folder=False`` the caller fsyncs the folder itself (``sync_folder``), e.g. once after
    writing several files into it.

    Raises
    ------
    OSError
        For any I/O failure (ENOSPC included); the temporary file is removed.
    """
    make_dirs(path.parent, stop=root)
    temp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    if sync_folder:
        fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(folder: Path, stop: Path) -> None:
    """Create ``folder`` and its missing parents below ``stop``, fsyncing each new entry's parent."""
    if folder.is_dir():
        return
    missing = []
    current = folder
    while not current.is_dir() and current != stop:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        # Another thread may have created it a moment ago: fsync the parent either way, since a
        # caller's success must not depend on whether that thread has finished its own fsync.
        path.mkdir(exist_ok=True)
        fsync_folder(path.parent)
