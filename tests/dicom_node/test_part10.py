"""The hand-encoded File Meta equals pynetdicom's, so stored files are what they were before."""

from __future__ import annotations

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGLossless, MRImageStorage
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from onconode.dicom_node.part10 import part10_bytes


@pytest.mark.parametrize(("sop_class", "instance", "syntax"), [
    (CTImageStorage, "1.2.3.4", JPEGLossless),                  # even-length instance UID
    (MRImageStorage, "1.2.826.0.1.3680043.8.498.1", ExplicitVRLittleEndian),  # odd: padded with NUL
    ("1.2.840.10008.5.1.4.1.1.88.22", "2.25.1" + "0" * 57, "1.2.840.10008.1.2"),  # 64 characters
])
def test_file_meta_matches_pynetdicom(sop_class: str, instance: str, syntax: str) -> None:
    data_set = b"\x08\x00\x18\x00UI\x02\x001\x00"
    expected = b"\0" * 128 + b"DICM" + encode_file_meta(create_file_meta(
        sop_class_uid=sop_class, sop_instance_uid=instance, transfer_syntax=syntax)) + data_set
    assert part10_bytes(data_set, sop_class, instance, syntax) == expected
