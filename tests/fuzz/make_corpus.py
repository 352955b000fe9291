"""Writes the fuzz target's seed corpus (``tests/fuzz/corpus``): one well-formed input per target,
synthetic (no patient data), a few kB in all. Run once when the input format of
``fuzz_ingest.py`` changes: ``python tests/fuzz/make_corpus.py``."""

from __future__ import annotations

import struct
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGLosslessSV1

from onconode.dicom_node.sop_classes import TRANSFER_SYNTAXES
from tests.adversarial.peer import associate_rq, c_store_rq, p_data, pdu

CORPUS = Path(__file__).parent / "corpus"


def _ct(pixels: bytes | None = None) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, "1.2.3.4"
    ds.Modality = "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", "1.2.3.1"
    ds.ReferencedImageSequence = [Dataset()]
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3.5"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels if pixels is not None else bytes(range(128))
    return ds


def _encoded(ds: Dataset, implicit: bool) -> bytes:
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, implicit
    write_dataset(out, ds)
    return out.getvalue()


def main() -> None:
    CORPUS.mkdir(exist_ok=True)
    store = c_store_rq(CTImageStorage, "1.2.3.4")
    data_set = _encoded(_ct(), implicit=False)
    stream = (associate_rq() + p_data((1, 0x03, store)) + p_data((1, 0x00, data_set[:100]))
              + p_data((1, 0x02, data_set[100:])) + pdu(0x05, b"\0" * 4))
    index = {str(uid): i for i, uid in enumerate(TRANSFER_SYNTAXES)}
    jpeg = _ct()
    jpeg.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + bytes(20) + b"\xff\xd9"])
    jpeg["PixelData"].VR = "OB"
    seeds = {
        "guard-association": b"\x00\x03\x05\x07" + stream,
        "command-c-store-rq": b"\x01" + store,
        "pdata-two-items": b"\x02" + struct.pack(">IBB", 4, 1, 3) + b"ab" + struct.pack(">IBB", 3, 1, 2) + b"c",
        "identify-explicit": bytes([3, index[ExplicitVRLittleEndian]]) + data_set,
        "identify-implicit": bytes([3, index["1.2.840.10008.1.2"]]) + _encoded(_ct(), implicit=True),
        "identify-jpeg": bytes([3, index[JPEGLosslessSV1]]) + _encoded(jpeg, implicit=False),
    }
    for name, seed in seeds.items():
        (CORPUS / name).write_bytes(seed)


if __name__ == "__main__":
    main()
