"""Every role sees the same storage and the same database: the marker file that ties them together.

Roles on several hosts share one database and one storage root (NFS, CephFS, ...). A host whose
mount is missing sees an empty local folder at the storage root; a host pointed at another database
sees someone else's files. Either would go unnoticed: the index says an instance is stored and the
file is not there, or files pile up under an index that never hears of them. So the storage root
holds ``MARKER``, a file naming the database's ``node_id``, and the database records that its
storage was set up (``meta.storage_marker``). At start every role checks both:

- marker present, same ID: this is the database's storage;
- marker present, another ID: the storage of another installation;
- marker absent, database says its storage was set up: the shared storage is not mounted here;
- marker absent, database never set up a storage: the first start (or the first since this check
  exists): the marker is written, then recorded in the database, in that order, so that a crash in
  between is finished by the next start rather than refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from onconode.durable import DurableFile

MARKER = ".onconode-storage"
SET_UP_KEY = "storage_marker"  # in the meta table: this database has set up its storage


class StorageMismatch(RuntimeError):
    """The storage root is not the one this database was set up with; the message says how."""


class _MarkerState(Protocol):
    def node_id(self) -> str: ...

    def meta(self, key: str) -> str | None: ...

    def set_meta_once(self, key: str, value: str) -> str: ...


def read_marker(root: Path) -> str | None:
    """The ID in the storage root's marker, or None when there is none.

    Raises
    ------
    StorageMismatch
        When the marker exists but cannot be read.
    """
    try:
        return (root / MARKER).read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StorageMismatch(f"storage root {root}: cannot read {MARKER}: {err.strerror}") from err


def marker_problem(root: Path, found: str | None, node_id: str | None, set_up: bool) -> str | None:
    """What is wrong between a storage root's marker (``found``) and a database (its ``node_id``,
    and whether it ``set_up`` a storage), in one sentence; None when nothing is (or the marker is
    still to be written)."""
    if found is None:
        if set_up:
            return (f"storage root {root} has no {MARKER}, but this database's storage was set up before: mount "
                    "the shared storage there (or set storage.root to where it is mounted)")
        return None
    if found != node_id:
        return (f"storage root {root} belongs to another OncoNode database (its {MARKER} names {found[:12]}, "
                f"this database is {(node_id or 'new')[:12]}): every role must use the same state and the same "
                "storage.root")
    return None


def check_shared_storage(db: _MarkerState, root: Path) -> str:
    """Check (or, the first time, set up) that ``root`` is the storage of ``db``; returns the ID.

    Raises
    ------
    StorageMismatch
        When the storage root is another installation's, or the database's storage is not there.
    """
    node_id = db.node_id()
    found = read_marker(root)
    problem = marker_problem(root, found, node_id, db.meta(SET_UP_KEY) is not None)
    if problem is None and found is None:
        found = _write_marker(root, node_id)
        problem = marker_problem(root, found, node_id, set_up=False)
    if problem is not None:
        raise StorageMismatch(problem)
    db.set_meta_once(SET_UP_KEY, node_id)
    return node_id


def _write_marker(root: Path, node_id: str) -> str:
    """Write the marker durably unless another process just did; returns the ID that stands."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        DurableFile(root).commit(f"{node_id}\n".encode(), root / MARKER, root, replace=False)
    except FileExistsError:  # another role starting at the same moment
        return read_marker(root) or ""
    except OSError as err:
        raise StorageMismatch(f"storage root {root}: cannot write {MARKER}: {err.strerror}") from err
    return node_id
