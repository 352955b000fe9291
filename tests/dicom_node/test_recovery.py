"""Start-up recovery on a real storage tree: stale temporaries, un-indexed files, interrupted studies."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from onconode.dicom_node.identify import identify_file
from onconode.dicom_node.recovery import recover
from onconode.dicom_node.storage import InstanceStorage
from onconode.state import StateDB, StudyState

LIMIT = 1 << 30


def test_recovery_reindexes_files_removes_temporaries_and_resumes(tmp_path: Path, data: Path) -> None:
    storage = InstanceStorage(tmp_path / "store", 0)
    db = StateDB(tmp_path / "state.db")
    sources = sorted((data / "dicom" / "brain-tumor-progression-pgbm-001-t1post").glob("*.dcm"))[:3]
    for source in sources:  # as if the process died after rename, before commit
        identity, _ = identify_file(source.read_bytes(), LIMIT)
        storage.write(identity, source.read_bytes())
    folder = storage.path_for(identity).parent
    (folder / ".half-written.tmp").write_bytes(b"partial")  # left by versions that wrote temporaries here
    (storage.incoming / ".half-written.tmp").write_bytes(b"partial")
    (storage.incoming / "1.2.3.dcm").write_bytes(b"")  # .incoming is no study folder
    (folder / "9.9.9.dcm").write_bytes(b"not dicom")  # damaged: reported, never deleted

    report = recover(storage, db, LIMIT)

    assert (report.temporaries_removed, report.reindexed, report.unreadable) == (2, 3, 1)
    assert not (folder / ".half-written.tmp").exists() and (folder / "9.9.9.dcm").exists()
    assert not (storage.incoming / ".half-written.tmp").exists()
    study_uid = identity.study_uid
    assert len(db.instances(study_uid)) == 3

    db.transition(study_uid, StudyState.ANALYSING, "test")
    assert recover(storage, db, LIMIT).resumed == 1
    assert db.study(study_uid).state == StudyState.QUEUED  # type: ignore[union-attr]
    shutil.rmtree(tmp_path / "store")


def test_files_made_ahead_are_used_once_and_removed_when_not(tmp_path: Path, data: Path) -> None:
    storage = InstanceStorage(tmp_path / "store", 0)
    storage.prepare_files(2)
    deadline = time.monotonic() + 10
    while len(list(storage.incoming.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    ready = set(storage.incoming.iterdir())
    assert len(ready) == 2 and all(p.stat().st_size == 0 for p in ready)

    source = data / "dicom" / "brain-tumor-progression-pgbm-001-t1post" / "IM-0001.dcm"
    path = storage.write(identify_file(source.read_bytes(), LIMIT)[0], source.read_bytes())

    assert path.read_bytes() == source.read_bytes()
    assert not ready <= set(storage.incoming.iterdir())  # one of them became the instance
    storage.close()
    assert not list(storage.incoming.iterdir())
