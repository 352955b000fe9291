"""Durable files, by one path: temporary file → fsync → rename → fsync of the folder.

Used for what the node receives (``dicom_node/storage.py``) and what it sends (``delivery/outbox.py``):
after ``commit`` (or ``write_file``) returns, the file survives a crash under its final name, and a
failure at any point leaves no temporary file behind. A file is never visible half-written under
its final name.

A ``DurableFile`` exists before its data and its final folder are known, so that ``ReadyFiles`` can
create files ahead of need, off the path a C-STORE sender waits on.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path

TEMP_SUFFIX = ".tmp"


class DurableFile:
    """A file written under a temporary name in ``folder`` until ``commit`` gives it its final one.

    Raises
    ------
    OSError
        From the constructor or ``commit`` for any I/O failure (ENOSPC included); after ``commit``
        fails the temporary file is gone.
    """

    def __init__(self, folder: Path) -> None:
        self.temp = folder / f".{uuid.uuid4().hex}{TEMP_SUFFIX}"
        self._fd: int | None = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)

    def commit(self, data: bytes, path: Path, root: Path, sync_folder: bool = True, replace: bool = True) -> None:
        """Write ``data`` and make it durable under ``path``, creating missing folders below ``root``.

        With ``sync_folder=False`` the caller fsyncs the folder itself (``fsync_folder``), e.g. once
        after writing several files into it. With ``replace=False`` a file already at ``path`` stays
        and ``FileExistsError`` is raised: the new name is made with ``link``, which fails rather than
        replaces, so two writers of one path cannot overwrite each other.

        Raises
        ------
        FileExistsError
            With ``replace=False``, when ``path`` exists; nothing was changed and the temporary is gone.
        """
        assert self._fd is not None, "committed twice or after discard"
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fdatasync(self._fd)
            _drop_cached_pages(self._fd)
            os.close(self._fd)
            self._fd = None
            make_dirs(path.parent, stop=root)
            if replace:
                os.replace(self.temp, path)
            else:
                _link_new(self.temp, path)
        except BaseException:
            self.discard()
            raise
        if sync_folder:
            fsync_folder(path.parent)

    def discard(self) -> None:
        """Close and remove the temporary file, if it is still there."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.temp.unlink(missing_ok=True)


def _link_new(temp: Path, path: Path) -> None:
    """Give ``temp`` the name ``path`` unless that exists (then ``FileExistsError``), atomically.

    ``rename`` replaces whatever is there; ``link`` does not. A file system without hard links gets
    a check before the rename instead, which two simultaneous writers of one path could both pass.
    """
    try:
        os.link(temp, path)
    except FileExistsError:
        raise
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        if path.exists():
            raise FileExistsError(errno.EEXIST, "exists", str(path)) from err
        os.replace(temp, path)
        return
    os.unlink(temp)


def _drop_cached_pages(fd: int) -> None:
    """Give the page cache back the pages of a file just made durable.

    Why: nothing reads a received instance again until its study is stable, and on a virtual machine
    whose host reclaims idle guest memory every page the cache takes for a new file can cost a host
    page fault. On the development VM, after a few hundred MB had been written, copying a data set
    into fresh page-cache pages took 64% of a receiver's CPU (perf) and ingest fell from ~300 to
    ~120 images/s; with the pages dropped after the fsync, the next file reuses them and ingest
    stayed at 250-300 (interleaved runs, four associations). Clean pages only: the data is on disk.
    """
    if hasattr(os, "posix_fadvise"):  # not on macOS
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def prefetch(paths: Iterable[Path]) -> None:
    """Ask the kernel to start reading ``paths`` into the page cache now, without waiting for it.

    The counterpart of ``_drop_cached_pages``: a study is read in full as soon as it is complete
    (with completion at the sender's release, a fraction of a second after its last instance was
    made durable), file after file. Asked for all at once, the reads run on the disk while the
    analysis parses the first headers: on the development VM a 133-slice CT's analysis took 1.2 s
    with the files cached or prefetched and 1.4-1.5 s reading them cold. A file that cannot be
    opened is left to the reader, which reports it.
    """
    if not hasattr(os, "posix_fadvise"):
        return
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)


class ReadyFiles:
    """Empty ``DurableFile``s created ahead of need by a thread of their own.

    Why: on ext4, creating a file right after other files were fsynced can wait for the journal (up
    to 1.5 ms on the development VM); a C-STORE sender would wait with it. Taken from here, the file
    already exists. ``take`` never waits: when none is ready it creates one itself.
    """

    def __init__(self, folder: Path, count: int) -> None:
        self.folder = folder
        self._ready: queue.SimpleQueue[DurableFile] = queue.SimpleQueue()
        self._free_slots = threading.Semaphore(count)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="onconode-ready-files", daemon=True)
        self._thread.start()

    def take(self) -> DurableFile:
        try:
            file = self._ready.get_nowait()
        except queue.Empty:
            return DurableFile(self.folder)
        self._free_slots.release()
        return file

    def close(self) -> None:
        """Stop creating and remove the files not taken."""
        self._closed.set()
        self._thread.join()
        while not self._ready.empty():
            self._ready.get_nowait().discard()

    def _fill(self) -> None:
        while not self._closed.is_set():
            if not self._free_slots.acquire(timeout=0.2):
                continue
            try:
                self._ready.put(DurableFile(self.folder))
            except OSError:  # e.g. the disk is full: try again later; take() reports errors itself
                self._free_slots.release()
                self._closed.wait(1.0)


def write_file(path: Path, data: bytes, root: Path, sync_folder: bool = True) -> None:
    """Write ``data`` to ``path`` durably, creating missing folders below ``root``."""
    make_dirs(path.parent, stop=root)
    DurableFile(path.parent).commit(data, path, root, sync_folder)


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
