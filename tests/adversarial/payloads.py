"""Broken and hostile data sets made from real objects of the shared data: each is a Part 10 file
whose File Meta names the transfer syntax it is sent on, so that pynetdicom sends its data set
bytes unchanged (``onconode.dicom_node.scu`` sets STORE_SEND_CHUNKED_DATASET)."""

from __future__ import annotations

import struct
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLosslessSV1,
    generate_uid,
)

SECRET_NAME = "Secretname^Jane"
SECRET_ID = "PID-SECRET-4711"
CT_SLICE = "dicom/lidc-idri-0001/IM-0001.dcm"  # explicit VR little endian, 512x512x16 bit
JPEG_SLICE = "dicom/lung-pet-ct-dx-a0002-ct/IM-0001.dcm"  # JPEG Lossless SV1


def part10(sop_class: str, sop_instance: str, transfer_syntax: str, data_set: bytes) -> bytes:
    """A Part 10 file of ``data_set`` bytes as given, its File Meta naming ``transfer_syntax``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    meta = buffer.getvalue()
    # Swap the transfer syntax value: the file's bytes then claim ``transfer_syntax``.
    old = ExplicitVRLittleEndian.encode() + b"\0"
    new = transfer_syntax.encode() + (b"\0" if len(transfer_syntax) % 2 else b"")
    meta = meta.replace(struct.pack("<HH2sH", 2, 0x10, b"UI", len(old)) + old,
                        struct.pack("<HH2sH", 2, 0x10, b"UI", len(new)) + new)
    group = meta[132 + 12:]
    return meta[:132 + 8] + struct.pack("<I", len(group)) + group + data_set


def real(data: Path, name: str) -> Dataset:
    """A real object with a fresh SOP Instance UID and a patient name and ID the log must never show."""
    ds = pydicom.dcmread(data / name)
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID = SECRET_NAME, SECRET_ID
    return ds


def encoded(ds: Dataset, implicit: bool = False) -> bytes:
    """``ds`` as a data set in explicit (or implicit) VR little endian."""
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, implicit
    write_dataset(out, ds)
    return out.getvalue()


def _pixel_header_offset(data_set: bytes) -> int:
    """Where the (7FE0,0010) OW element header of an explicit VR data set starts."""
    return data_set.rindex(struct.pack("<HH", 0x7FE0, 0x0010) + b"OW")


def with_pixel_length(data_set: bytes, announced: int, keep: int) -> bytes:
    """The data set with Pixel Data announcing ``announced`` bytes and carrying ``keep`` of them."""
    at = _pixel_header_offset(data_set)
    header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, announced)
    return data_set[:at] + header + data_set[at + 12:at + 12 + keep]


def cases(data: Path) -> dict[str, tuple[str, str, str, bytes]]:
    """name -> (SOP class, SOP instance, transfer syntax of the context, data set bytes)."""
    made: dict[str, tuple[str, str, str, bytes]] = {}

    ct = real(data, CT_SLICE)
    explicit = encoded(ct)
    pixels = len(ct.PixelData)
    made["Pixel Data announcing 2.4 GB with 100 bytes sent"] = (
        CTImageStorage, ct.SOPInstanceUID, ExplicitVRLittleEndian, with_pixel_length(explicit, 2_400_000_000, 100))
    made["native Pixel Data shorter than Rows x Columns x Bits"] = (
        CTImageStorage, ct.SOPInstanceUID, ExplicitVRLittleEndian, with_pixel_length(explicit, pixels - 1000,
                                                                                     pixels - 1000))
    made["native Pixel Data longer than Rows x Columns x Bits"] = (
        CTImageStorage, ct.SOPInstanceUID, ExplicitVRLittleEndian,
        with_pixel_length(explicit + b"\0" * 1000, pixels + 1000, pixels + 1000))
    made["raw pixels on a JPEG Lossless context"] = (CTImageStorage, ct.SOPInstanceUID, JPEGLosslessSV1, explicit)
    made["explicit VR bytes on an implicit VR context"] = (
        CTImageStorage, ct.SOPInstanceUID, ImplicitVRLittleEndian, explicit)
    made["implicit VR bytes on an explicit VR context"] = (
        CTImageStorage, ct.SOPInstanceUID, ExplicitVRLittleEndian, encoded(ct, implicit=True))
    made["data set cut in the middle of an element"] = (
        CTImageStorage, ct.SOPInstanceUID, ExplicitVRLittleEndian, explicit[:_pixel_header_offset(explicit) - 5])

    jpeg = real(data, JPEG_SLICE)
    jpeg_bytes = encoded(jpeg)
    made["encapsulated Pixel Data on a native context"] = (
        str(jpeg.SOPClassUID), str(jpeg.SOPInstanceUID), ExplicitVRLittleEndian, jpeg_bytes)
    soi = jpeg_bytes.index(b"\xff\xd8\xff")
    made["a JPEG context whose fragment is not JPEG"] = (
        str(jpeg.SOPClassUID), str(jpeg.SOPInstanceUID), JPEGLosslessSV1,
        jpeg_bytes[:soi] + b"\0\0" + jpeg_bytes[soi + 2:])
    return made


def deflate_bomb(inflated_bytes: int) -> tuple[str, str, bytes]:
    """A CT data set of a few kB, deflated (PS3.5 A.5), inflating to more than ``inflated_bytes``."""
    side = 1
    while side * side * 2 <= inflated_bytes:
        side *= 2
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CT"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 16, 15, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = b"\0" * (side * side * 2)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = CTImageStorage, ds.SOPInstanceUID
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return CTImageStorage, str(ds.SOPInstanceUID), buffer.getvalue()
