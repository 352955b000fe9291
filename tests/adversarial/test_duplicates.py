"""A SOP Instance UID that comes again: the same object is Success (idempotent); a different object
is refused with 0x0111 (Duplicate SOP Instance) and the first one is kept, byte for byte, also when
the two arrive at the same moment on two associations."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pydicom
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from onconode.dicom_node.status import StoreStatus
from tests.adversarial.payloads import CT_SLICE, SECRET_ID, encoded, part10, real
from tests.adversarial.test_corrupt import send_file
from tests.support import NodeProcess, dataset_bytes, echo_status


def _two_versions(data: Path, tmp_path: Path) -> tuple[pydicom.Dataset, Path, Path]:
    """A real slice, and an edit of it with the same UIDs (another window, other pixels)."""
    ds = real(data, CT_SLICE)
    first = tmp_path / "first.dcm"
    first.write_bytes(part10(CTImageStorage, ds.SOPInstanceUID, ExplicitVRLittleEndian, encoded(ds)))
    ds.WindowCenter = 40
    ds.PixelData = bytes(len(ds.PixelData))
    second = tmp_path / "second.dcm"
    second.write_bytes(part10(CTImageStorage, ds.SOPInstanceUID, ExplicitVRLittleEndian, encoded(ds)))
    return ds, first, second


def _stored(node: NodeProcess, ds: pydicom.Dataset) -> Path:
    return node.store / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"


def test_a_different_object_under_a_stored_uid_is_refused_and_the_first_kept(
        hostile: NodeProcess, data: Path, tmp_path: Path) -> None:
    ds, first, second = _two_versions(data, tmp_path)
    assert send_file(hostile.port, first, CTImageStorage, ExplicitVRLittleEndian) == StoreStatus.SUCCESS
    stored = _stored(hostile, ds)
    indexed = hostile.db().instance_sha256(ds.SOPInstanceUID)

    assert send_file(hostile.port, second, CTImageStorage, ExplicitVRLittleEndian) == StoreStatus.DUPLICATE_CONFLICT
    assert dataset_bytes(stored) == dataset_bytes(first)  # the first is kept as it came
    assert hostile.db().instance_sha256(ds.SOPInstanceUID) == indexed
    log = hostile.wait_for_log("status=0x0111")
    assert SECRET_ID not in log

    # The same object again is acknowledged and changes nothing.
    assert send_file(hostile.port, first, CTImageStorage, ExplicitVRLittleEndian) == StoreStatus.SUCCESS
    assert dataset_bytes(stored) == dataset_bytes(first) and hostile.leftovers() == []
    assert echo_status(hostile.port) == 0


def test_two_objects_racing_under_one_uid_store_one_and_refuse_the_other(
        hostile: NodeProcess, data: Path, tmp_path: Path) -> None:
    ds, first, second = _two_versions(data, tmp_path)
    statuses: dict[Path, int | None] = {}
    start = threading.Barrier(2)

    def send(path: Path) -> None:
        start.wait()
        statuses[path] = send_file(hostile.port, path, CTImageStorage, ExplicitVRLittleEndian)

    threads = [threading.Thread(target=send, args=(p,)) for p in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(statuses.values(), key=lambda s: s or 0) == [StoreStatus.SUCCESS, StoreStatus.DUPLICATE_CONFLICT]
    winner = next(path for path, status in statuses.items() if status == StoreStatus.SUCCESS)
    stored = _stored(hostile, ds)
    assert dataset_bytes(stored) == dataset_bytes(winner)
    assert hostile.db().instance_sha256(ds.SOPInstanceUID) == hashlib.sha256(stored.read_bytes()).hexdigest()
