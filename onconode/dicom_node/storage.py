"""Durable files for received instances: ``<root>/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm``.

Input: an ``InstanceIdentity`` (UIDs already validated) and the Part 10 bytes to write.
Output: the final path, once the bytes survive a crash.

The one write path is ``durable.DurableFile``: a temporary file in ``<root>/.incoming`` → fsync →
a new name in the series folder (``link``, which never replaces a stored instance) → fsync of that
folder. Only after all four may C-STORE answer Success: a power cut after that keeps the instance;
before it, the sender gets no Success and resends. The temporary files are created ahead of need (``durable.ReadyFiles``, while the listener
runs), which is why they live in one folder of their own rather than in a series folder. A
temporary file is removed on failure, and any that a killed process left behind is removed at the
next start (``remove_stale_temporaries``). Several processes, on several hosts, may write into one
storage root (``onconode serve --role receive`` twice): each keeps its temporaries in a folder of its
own, ``.incoming/<host>+<pid>+<start>`` (``state/owner.py``), so that one that starts never removes
the files another has made ready.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from onconode.config import StorageSettings
from onconode.durable import TEMP_SUFFIX, DurableFile, ReadyFiles
from onconode.state.owner import holder_gone, process_owner
from onconode.values import InstanceIdentity

SUFFIX = ".dcm"
INCOMING = ".incoming"
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


class LowDiskSpace(OSError):
    """Writing would leave less free space than ``storage.min_free_mb``; nothing was written."""


class AlreadyStored(OSError):
    """The instance's path holds a file already; it was kept, and nothing was written."""


class StorageFull(OSError):
    """The disk filled (or the quota ran out) during the write; the temporary file was removed."""


class InstanceStorage:
    """The folder tree of received instances."""

    def __init__(self, root: Path, min_free_bytes: int) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes
        self.incoming = root / INCOMING / process_owner().replace("/", "+")
        self.incoming.mkdir(parents=True, exist_ok=True)
        self._ready: ReadyFiles | None = None

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> InstanceStorage:
        """The tree ``storage`` configures; the node and each receiver process open it alike."""
        return cls(settings.root, settings.min_free_mb * 1024 * 1024)

    def path_for(self, identity: InstanceIdentity) -> Path:
        return self.root / identity.study_uid / identity.series_uid / f"{identity.sop_instance_uid}{SUFFIX}"

    def prepare_files(self, count: int) -> None:
        """Keep ``count`` empty temporary files ready for ``write`` until ``close``."""
        self.close()
        self._ready = ReadyFiles(self.incoming, count)

    def close(self) -> None:
        if self._ready is not None:
            self._ready.close()
            self._ready = None

    def write(self, identity: InstanceIdentity, data: bytes) -> Path:
        """Write ``data`` durably to the instance's path; a file already there is never replaced.

        Raises
        ------
        AlreadyStored
            When the instance's path holds a file already (kept as it is; nothing was written).
        LowDiskSpace
            When writing would leave less than the minimum free space (0 disables the guard).
        StorageFull
            When the disk fills during the write.
        OSError
            For any other I/O failure. In every case nothing is left behind.
        """
        if self.min_free_bytes and shutil.disk_usage(self.root).free - len(data) < self.min_free_bytes:
            raise LowDiskSpace(errno.ENOSPC, "free space below storage.min_free_mb")
        final = self.path_for(identity)
        try:
            file = self._ready.take() if self._ready is not None else DurableFile(self.incoming)
            file.commit(data, final, self.root, replace=False)
        except FileExistsError as err:
            raise AlreadyStored(errno.EEXIST, "a file is stored under this SOP Instance UID") from err
        except OSError as err:
            if err.errno in _NO_SPACE:
                raise StorageFull(err.errno, "disk full while writing") from err
            raise
        return final

    def instance_files(self) -> Iterator[Path]:
        """Every stored instance file (not temporaries), for reconciliation with the index."""
        for study in _subdirs(self.root):
            for series in _subdirs(study):
                with os.scandir(series) as entries:
                    for entry in entries:
                        if entry.is_file() and entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
                            yield Path(entry.path)

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files a killed process left behind; returns how many. Called before this
        process writes; the folders of other processes are left alone unless that process was of
        this host and no longer runs."""
        shared = self.root / INCOMING
        gone = [f for f in shared.iterdir() if f.is_dir() and f != self.incoming
                and holder_gone(f.name.replace("+", "/"))]
        folders = [shared, self.incoming, *gone] + [series for study in _subdirs(self.root)
                                                     for series in _subdirs(study)]
        removed = 0
        for folder in folders:
            for temp in folder.glob(f".*{TEMP_SUFFIX}"):
                temp.unlink(missing_ok=True)
                removed += 1
        for folder in gone:
            try:
                folder.rmdir()
            except OSError:  # it holds something that is not a temporary: left for a person to see
                pass
        return removed


def _subdirs(folder: Path) -> Iterator[Path]:
    """The study (or series) folders in ``folder``; not ``.incoming``, whose files are temporary."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                yield Path(entry.path)
