"""Identification and structure checks of received data sets on real files (the association-level
cases are in test_bad_input and tests/adversarial/test_corrupt)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.filereader import _read_file_meta_info, read_preamble

from onconode.dicom_node.identify import InvalidInstance, identify, identify_file
from onconode.dicom_node.scu import find_dicom_files
from onconode.dicom_node.status import StoreStatus

LIMIT = 1 << 30


def _as_received(path: Path) -> tuple[bytes, str]:
    """The data set bytes of a file and its transfer syntax, as a C-STORE would carry them."""
    with path.open("rb") as f:
        read_preamble(f, force=False)
        meta = _read_file_meta_info(f)
        return f.read(), str(meta.TransferSyntaxUID)


def test_every_shared_object_passes_and_is_identified_as_pydicom_reads_it(data: Path) -> None:
    sources, _ = find_dicom_files([data / "dicom"])
    assert len(sources) == 384  # every object in the shared data, every transfer syntax in it
    for source in sources:
        ds = pydicom.dcmread(source.path, stop_before_pixels=True)
        data_set, syntax = _as_received(source.path)
        identity = identify(data_set, syntax, ds.SOPClassUID, ds.SOPInstanceUID, LIMIT)
        assert (identity.study_uid, identity.series_uid, identity.sop_instance_uid, identity.modality) == (
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.get("Modality", "")), source.path


def test_a_stored_file_is_identified_with_its_transfer_syntax(data: Path) -> None:
    path = data / "dicom" / "lung-pet-ct-dx-a0002-ct" / "IM-0001.dcm"
    identity, syntax = identify_file(path.read_bytes(), LIMIT)
    assert syntax == pydicom.uid.JPEGLosslessSV1
    assert identity.sop_instance_uid == pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID


def test_a_class_other_than_the_context_is_a_mismatch(data: Path) -> None:
    path = data / "dicom" / "lidc-idri-0001" / "IM-0001.dcm"
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    with pytest.raises(InvalidInstance) as err:
        identify(*_as_received(path), pydicom.uid.MRImageStorage, ds.SOPInstanceUID, LIMIT)
    assert err.value.status == StoreStatus.SOP_CLASS_MISMATCH


def test_an_invalid_command_uid_is_refused(data: Path) -> None:
    path = data / "dicom" / "lidc-idri-0001" / "IM-0001.dcm"
    with pytest.raises(InvalidInstance) as err:
        identify(*_as_received(path), pydicom.uid.CTImageStorage, "1.2.3.abc", LIMIT)
    assert err.value.status == StoreStatus.INVALID_UID


@pytest.mark.parametrize(("data_set", "status"), [
    (b"", StoreStatus.CANNOT_DECODE),
    (b"\x08\x00\x18\x00UI\x40\x001.2", StoreStatus.CANNOT_DECODE),  # value runs past the end
    (b"\x08\x00\x18\x00\x04\x00\x00\x001.2\x00", StoreStatus.TRANSFER_SYNTAX_MISMATCH),  # implicit on explicit
    (b"\x08\x00\x18\x00UI\x04\x001.2\x00\x08\x00\x16\x00UI\x04\x001.2\x00", StoreStatus.CANNOT_DECODE),  # order
    (b"\x08\x00\x05\x00SQ\x00\x00\xff\xff\xff\xff" * 40, StoreStatus.CANNOT_DECODE),  # no items, runs out
])
def test_malformed_data_sets_get_their_status(data_set: bytes, status: StoreStatus) -> None:
    with pytest.raises(InvalidInstance) as err:
        identify(data_set, pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.CTImageStorage, "1.2.3", LIMIT)
    assert err.value.status == status


def test_sequences_nested_too_deep_are_refused_not_recursed_into() -> None:
    open_item = b"\x08\x00\x05\x11SQ\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\xff\xff\xff\xff"
    with pytest.raises(InvalidInstance) as err:
        identify(open_item * 10_000, pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.CTImageStorage, "1.2.3", LIMIT)
    assert err.value.status == StoreStatus.CANNOT_DECODE and "nested" in err.value.reason
