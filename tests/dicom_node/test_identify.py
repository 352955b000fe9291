"""Identification of received data sets on real files (the association-level cases are in test_bad_input)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from onconode.dicom_node.identify import InvalidInstance, identify
from onconode.dicom_node.status import StoreStatus


@pytest.mark.parametrize("name", ["lidc-idri-0001/IM-0001.dcm", "lung-pet-ct-dx-a0002-ct/IM-0001.dcm",
                                  "enhanced-multiframe", "misc/ct-dose-rdsr-siemens-flash.dcm",
                                  "misc/sc-nm-jpeg-lossless.dcm", "upenn-gbm-00001-t1post/IM-0001.dcm"])
def test_real_objects_are_identified_as_their_headers_say(data: Path, name: str) -> None:
    path = data / "dicom" / name
    if path.is_dir():
        path = next(path.glob("*.dcm"))
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    identity = identify(path.read_bytes(), ds.SOPClassUID, ds.SOPInstanceUID)
    assert (identity.study_uid, identity.series_uid, identity.sop_instance_uid, identity.modality) == (
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.Modality)


def test_a_class_other_than_the_context_is_a_mismatch(data: Path) -> None:
    path = data / "dicom" / "lidc-idri-0001" / "IM-0001.dcm"
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    with pytest.raises(InvalidInstance) as err:
        identify(path.read_bytes(), pydicom.uid.MRImageStorage, ds.SOPInstanceUID)
    assert err.value.status == StoreStatus.SOP_CLASS_MISMATCH


def test_an_invalid_command_uid_is_refused(data: Path) -> None:
    path = data / "dicom" / "lidc-idri-0001" / "IM-0001.dcm"
    with pytest.raises(InvalidInstance) as err:
        identify(path.read_bytes(), pydicom.uid.CTImageStorage, "1.2.3.abc")
    assert err.value.status == StoreStatus.INVALID_UID
