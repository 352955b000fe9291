"""Every kind of bad data set gets its own failure status, leaves nothing on disk, logs no PHI,
and the node keeps answering C-ECHO on other associations."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom import AE
from pynetdicom.presentation import build_context

from onconode.dicom_node.status import StoreStatus
from tests.support import NodeProcess, echo_status

SECRET_NAME = "Secretname^Jane"
SECRET_ID = "PID-SECRET-4711"
SOURCE = "dicom/misc/ct-localizer-ap.dcm"
SR_SOURCE = "dicom/misc/ct-dose-rdsr-siemens-flash.dcm"
LONG_UID = "1.2." + ".".join(["123456789"] * 7)  # grammatical, 73 characters


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, fast_ingest: bool) -> Iterator[NodeProcess]:
    process = NodeProcess(tmp_path_factory.mktemp("bad-input"), node={"fast_ingest": fast_ingest})
    process.start()
    yield process
    process.stop()


def _part10(sop_class: str, sop_instance: str, data_set: bytes) -> bytes:
    """A Part 10 file whose File Meta names the command's UIDs and whose data set is ``data_set``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue() + data_set


def _edited(data: Path, source: str, edit: Callable[[Dataset], None]) -> tuple[str, str, bytes]:
    """(command SOP class, command SOP instance, data set bytes) of a real object after ``edit``."""
    ds = pydicom.dcmread(data / source)
    sop_class, sop_instance = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
    ds.PatientName, ds.PatientID = SECRET_NAME, SECRET_ID
    edit(ds)
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, ds)
    return str(ds.SOPClassUID) if edit is _as_ct else sop_class, sop_instance, out.getvalue()


def _drop(keyword: str) -> Callable[[Dataset], None]:
    return lambda ds: delattr(ds, keyword)


def _set(keyword: str, value: str) -> Callable[[Dataset], None]:
    return lambda ds: setattr(ds, keyword, value)


def _as_ct(ds: Dataset) -> None:
    """A dose report whose SOP Class UID (and so the command's) claims CT Image Storage."""
    ds.SOPClassUID = pydicom.uid.CTImageStorage


CASES = {
    "random bytes": (StoreStatus.CANNOT_DECODE, None),
    "no SOP Instance UID": (StoreStatus.MISSING_UID, (SOURCE, _drop("SOPInstanceUID"))),
    "no Study Instance UID": (StoreStatus.MISSING_UID, (SOURCE, _drop("StudyInstanceUID"))),
    "no Series Instance UID": (StoreStatus.MISSING_UID, (SOURCE, _drop("SeriesInstanceUID"))),
    "study UID ../../etc": (StoreStatus.INVALID_UID, (SOURCE, _set("StudyInstanceUID", "../../etc"))),
    "series UID over 64 characters": (StoreStatus.INVALID_UID, (SOURCE, _set("SeriesInstanceUID", LONG_UID))),
    "SOP Instance UID differs from the command": (
        StoreStatus.INSTANCE_UID_MISMATCH, (SOURCE, _set("SOPInstanceUID", "1.2.3.4.5.6"))),
    "dose SR claiming to be a CT image": (StoreStatus.SOP_CLASS_MISMATCH, (SR_SOURCE, _as_ct)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data_set_gets_its_status_and_the_node_keeps_serving(
        case: str, node: NodeProcess, data: Path, tmp_path: Path) -> None:
    expected, recipe = CASES[case]
    if recipe is None:
        sop_class, sop_instance = pydicom.uid.CTImageStorage, "1.2.826.0.1.3680043.10.1.1"
        body = random.Random(7).randbytes(4096)
    else:
        sop_class, sop_instance, body = _edited(data, *recipe)
    path = tmp_path / "bad.dcm"
    path.write_bytes(_part10(sop_class, sop_instance, body))

    ae = AE(ae_title="BADSCU")
    ae.requested_contexts = [build_context(sop_class, [pydicom.uid.ExplicitVRLittleEndian])]
    assoc = ae.associate("127.0.0.1", node.port, ae_title="ONCONODE")
    assert assoc.is_established
    response = assoc.send_c_store(path)
    assoc.release()

    assert response.Status == expected
    assert echo_status(node.port) == 0
    assert node.stored_files() == [] and node.leftovers() == []
    log = node.log()
    assert f"status=0x{expected:04X}" in log
    assert "Secretname" not in log and SECRET_ID not in log
