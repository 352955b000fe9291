"""Body region from free-text headers in several languages, and from CT and MR pixels."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from onconode.selection import volume
from onconode.selection.region import from_header, lung_share, outline_mm, pixel_regions, regions_in
from onconode.selection.series import scan


@pytest.mark.parametrize(("text", "regions"), [
    ("Chest", {"chest"}),
    ("CT CHEST WITHOUT CONTRAST", {"chest"}),
    ("Thorax 2.0 B31f", {"chest"}),
    ("ROUTINE CHEST NON-CON", {"chest"}),
    ("Tórax AR", {"chest"}),
    ("TC TORACE", {"chest"}),
    ("Poumons HR", {"chest"}),
    ("LUNGE 1.0 B70f", {"chest"}),
    ("HRCT", {"chest"}),
    ("CT Thorax Abdomen Becken", {"chest", "abdomen", "pelvis"}),
    ("WB-CT", {"chest", "abdomen", "pelvis", "neck"}),
    ("Whole Body PET/CT", {"chest", "abdomen", "pelvis", "neck"}),
    ("CT CAP w contrast", {"chest", "abdomen", "pelvis"}),
    ("CHESTABDPELVIS", {"chest", "abdomen", "pelvis"}),
    ("SCHÄDEL nativ", {"brain"}),
    ("KOPF", {"brain"}),
    ("MR HEAD W/WO", {"brain"}),
    ("Brain Protocols", {"brain"}),
    ("IRM cérébrale", {"brain"}),
    ("Cráneo simple", {"brain"}),
    ("Thoracic Spine", {"spine"}),
    ("T-SPINE SAG", {"spine"}),
    ("CT Abdomen/Pelvis", {"abdomen", "pelvis"}),
    ("Cardiac CTA", {"heart"}),
    ("KNEE LT", {"extremity"}),
    ("5mm", set()),
    ("t1_mpr_tra_iso", set()),
    ("", set()),
])
def test_free_text_names_regions_in_any_language(text: str, regions: set[str]) -> None:
    assert regions_in(text)[0] == regions


def test_series_fields_speak_before_the_study_fields() -> None:
    reading = from_header([("SeriesDescription", "Thorax 1.0 B70f"), ("StudyDescription", "CT Thorax Abdomen")])
    assert reading.regions == {"chest"} and not reading.conflict and not reading.needs_pixels
    assert "SeriesDescription 'Thorax 1.0 B70f' → chest" in reading.evidence


def test_study_description_alone_is_enough() -> None:
    reading = from_header([("SeriesDescription", "5mm"), ("BodyPartExamined", ""),
                           ("StudyDescription", "CT CHEST WITHOUT CONTRAST")])
    assert reading.regions == {"chest"} and not reading.needs_pixels
    assert "SeriesDescription '5mm' names no region" in reading.evidence
    assert "BodyPartExamined absent" in reading.evidence


def test_fields_that_cannot_both_be_true_ask_the_pixels() -> None:
    reading = from_header([("SeriesDescription", "Thorax 2.0"), ("BodyPartExamined", "HEAD")])
    assert reading.conflict and reading.needs_pixels
    assert reading.regions == {"chest"}  # the closest field, until the pixels say otherwise


def test_silent_headers_ask_the_pixels() -> None:
    reading = from_header([("SeriesDescription", "5mm"), ("StudyDescription", "")])
    assert reading.silent and reading.needs_pixels and not reading.regions


def _slices(folder: Path, names: list[str]) -> list:
    info = scan([folder / n for n in names]).series[0]
    vol = volume.build_volume(info)
    return [volume.read_slice(ref) for ref in vol.slices]


def test_lung_share_finds_lung_on_chest_slices_and_not_on_the_neck(dicom_dir: Path) -> None:
    (neck,) = _slices(dicom_dir / "lidc-idri-0001", ["IM-0001.dcm"])
    (mid,) = _slices(dicom_dir / "lidc-idri-0001", ["IM-0070.dcm"])
    assert lung_share(mid) > 0.2    # mid-chest: lung fills a large share of the body
    assert lung_share(neck) < 0.05
    assert pixel_regions("CT", shares=[0.3, 0.35, 0.25, 0.0])[0] == {"chest"}
    assert pixel_regions("CT", shares=[0.0, 0.0, 0.02, 0.12])[0] == frozenset()  # lung bases only


def test_lung_share_is_zero_on_a_brain_mr_and_a_blank_slice() -> None:
    import numpy as np

    assert lung_share(np.full((64, 64), -1000.0, np.float32)) == 0.0
    assert lung_share(np.full((64, 64), 40.0, np.float32)) == 0.0


def test_head_outline_on_a_real_brain_mr(dicom_dir: Path) -> None:
    folder = dicom_dir / "brain-tumor-progression-pgbm-001-t1post"
    (middle,) = _slices(folder, ["IM-0016.dcm"])
    spacing = tuple(float(v) for v in pydicom.dcmread(folder / "IM-0016.dcm", stop_before_pixels=True).PixelSpacing)
    width, depth = outline_mm(middle, spacing)  # type: ignore[misc, arg-type]
    assert 110 <= width <= 200 and 140 <= depth <= 250
    assert pixel_regions("MR", outlines=[(width, depth)])[0] == {"brain"}
    assert pixel_regions("MR", outlines=[(330.0, 240.0)])[0] == frozenset()  # an abdomen
    assert outline_mm(middle, None) is None
