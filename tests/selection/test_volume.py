"""Volume building on real series: spatial order, odd geometries, multi-frame, HU, codecs."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import pydicom
import pytest

from onconode.selection import series, volume


def _volume(files: list[Path]) -> volume.Volume:
    scan = series.scan(files)
    assert len(scan.series) == 1
    return volume.build_volume(scan.series[0])


def _lidc(dicom_dir: Path, count: int = 12) -> list[Path]:
    return sorted((dicom_dir / "lidc-idri-0001").glob("*.dcm"))[:count]


def test_shuffled_files_come_back_in_spatial_order(dicom_dir: Path) -> None:
    files = _lidc(dicom_dir, 40)
    shuffled = files[:]
    random.Random(7).shuffle(shuffled)
    vol = _volume(shuffled)
    distances = [s.distance for s in vol.slices]
    assert vol.ordered_by == "position"
    assert all(b > a for a, b in itertools.pairwise(distances))  # type: ignore[operator]
    # IM-0001 is the cranial end (z -10 mm); increasing distance along +z runs feet → head.
    assert [s.path.name for s in vol.slices] == [f.name for f in reversed(files)]


def test_tilted_gantry_is_ordered_along_the_tilted_normal(dicom_dir: Path, copy_series) -> None:
    tilt = np.deg2rad(20)
    files = _lidc(dicom_dir, 10)

    def edit(ds: pydicom.Dataset, index: int) -> None:
        # Gantry tilted by 20°: the column direction tilts in y-z, the table still moves along z.
        ds.ImageOrientationPatient = [1, 0, 0, 0, float(np.cos(tilt)), float(np.sin(tilt))]
        ds.GantryDetectorTilt = 20  # ImagePositionPatient unchanged: the table moves along z

    copies = copy_series(files, edit=edit)
    random.Random(3).shuffle(copies)
    vol = _volume(copies)
    z = [s.position[2] for s in vol.slices]  # type: ignore[index]
    assert vol.ordered_by == "position"
    assert z == sorted(z) or z == sorted(z, reverse=True)
    assert abs(vol.normal[2]) < 1 and abs(vol.normal[1]) > 0.3  # type: ignore[index]


def test_reversed_series_is_ordered_by_position_not_instance_number(dicom_dir: Path, copy_series) -> None:
    files = _lidc(dicom_dir, 10)

    def edit(ds: pydicom.Dataset, index: int) -> None:
        ds.InstanceNumber = 100 - index  # numbered from the other end

    vol = _volume(copy_series(files, edit=edit))
    z = [s.position[2] for s in vol.slices]  # type: ignore[index]
    assert z == sorted(z)
    assert [s.instance_number for s in vol.slices] == sorted(s.instance_number for s in vol.slices)  # type: ignore[type-var]


def test_missing_positions_fall_back_to_instance_number_and_say_so(dicom_dir: Path, copy_series) -> None:
    def edit(ds: pydicom.Dataset, index: int) -> None:
        del ds.ImagePositionPatient

    vol = _volume(copy_series(_lidc(dicom_dir, 6)[::-1], edit=edit))
    assert vol.ordered_by == "instance_number"
    assert [s.instance_number for s in vol.slices] == [1, 2, 3, 4, 5, 6]
    assert any("InstanceNumber" in note for note in vol.notes)


def test_duplicate_positions_keep_one_slice_and_say_so(dicom_dir: Path, copy_series) -> None:
    files = _lidc(dicom_dir, 4)
    copies = copy_series(files)

    def edit(ds: pydicom.Dataset, index: int) -> None:
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = 500 + index

    copies += copy_series(files[:2], folder="dupes", edit=edit)
    vol = _volume(copies)
    assert len(vol.slices) == 4
    assert any("duplicate positions" in note for note in vol.notes)


def test_odd_matrix_sizes_are_dropped_and_said(dicom_dir: Path, copy_series) -> None:
    files = _lidc(dicom_dir, 5)

    def edit(ds: pydicom.Dataset, index: int) -> None:
        if index == 2:
            small = ds.pixel_array[::2, ::2].copy()
            ds.Rows, ds.Columns = small.shape
            ds.PixelData = small.tobytes()

    vol = _volume(copy_series(files, edit=edit))
    assert len(vol.slices) == 4
    assert vol.shape == (512, 512)
    assert any("matrix" in note for note in vol.notes)


def test_enhanced_multiframe_gives_one_slice_per_frame_in_order(dicom_dir: Path) -> None:
    vol = _volume(sorted((dicom_dir / "enhanced-multiframe").glob("*.dcm")))
    assert [s.frame for s in vol.slices] == [1, 0]  # frame 1 comes first along the normal
    decoded = list(volume.iter_slices(vol))
    assert [arr.shape for _, _, arr in decoded] == [(512, 512), (512, 512)]
    ds = pydicom.dcmread(vol.slices[0].path)
    raw = ds.pixel_array[1].astype(np.float32)
    frame_group = ds.PerFrameFunctionalGroupsSequence[1]
    group = frame_group if "PixelValueTransformationSequence" in frame_group else ds.SharedFunctionalGroupsSequence[0]
    item = group.PixelValueTransformationSequence[0]
    assert float(item.RescaleIntercept) == -1024.0  # the shared functional group of this file
    expected = raw * float(item.RescaleSlope) + float(item.RescaleIntercept)
    np.testing.assert_array_equal(decoded[0][2], expected)


def test_hu_match_a_hand_computation_on_a_real_slice(dicom_dir: Path) -> None:
    path = dicom_dir / "lidc-idri-0001" / "IM-0050.dcm"
    ds = pydicom.dcmread(path)
    # By hand: the stored little-endian words, signed per PixelRepresentation, times slope plus intercept.
    dtype = "<i2" if ds.PixelRepresentation == 1 else "<u2"
    stored = np.frombuffer(ds.PixelData, dtype=dtype).reshape(ds.Rows, ds.Columns).astype(np.float64)
    hand = stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    vol = _volume([path])
    hu = volume.read_slice(vol.slices[0])
    np.testing.assert_array_equal(hu, hand.astype(np.float32))
    assert -1100 < float(np.median(hu[:40, :40])) < -900 or float(hu.min()) < -1000  # air outside the body


def test_compressed_jpeg_lossless_series_decodes(dicom_dir: Path) -> None:
    files = sorted((dicom_dir / "lung-pet-ct-dx-a0002-ct").glob("*.dcm"))[:2]
    vol = _volume(files)
    hu = volume.read_slice(vol.slices[0])
    assert hu.shape == (512, 512) and hu.min() >= -1024 and hu.max() > 0


def test_missing_codec_is_a_clear_error(dicom_dir: Path, copy_series) -> None:
    def edit(ds: pydicom.Dataset, index: int) -> None:
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no pixel decoder installed

    src = sorted((dicom_dir / "lung-pet-ct-dx-a0002-ct").glob("*.dcm"))[:1]
    vol = _volume(copy_series(src, edit=edit))
    with pytest.raises(volume.PixelDecodeError, match=r"IM-0001.dcm.*transfer syntax.*1\.2\.840\.10008\.1\.2\.4\.100"):
        volume.read_slice(vol.slices[0])


def test_monochrome1_mr_is_inverted(dicom_dir: Path, copy_series) -> None:
    src = sorted((dicom_dir / "brain-tumor-progression-pgbm-001-t1post").glob("*.dcm"))[10:11]
    plain = volume.read_slice(_volume(src).slices[0])

    def edit(ds: pydicom.Dataset, index: int) -> None:
        ds.PhotometricInterpretation = "MONOCHROME1"

    inverted = volume.read_slice(_volume(copy_series(src, edit=edit)).slices[0])
    np.testing.assert_array_equal(inverted, plain.min() + plain.max() - plain)


def test_build_volume_refuses_a_series_without_pixels(dicom_dir: Path) -> None:
    scan = series.scan([dicom_dir / "misc" / "ct-dose-rdsr-siemens-flash.dcm"])
    with pytest.raises(ValueError, match="no image slices"):
        volume.build_volume(scan.series[0])


def test_iter_slices_decodes_a_whole_series_lazily(dicom_dir: Path) -> None:
    vol = _volume(sorted((dicom_dir / "brain-tumor-progression-pgbm-001-t1post").glob("*.dcm")))
    it = volume.iter_slices(vol)
    first = next(it)
    assert first[0] == 0 and first[2].dtype == np.float32
    assert sum(1 for _ in it) == len(vol.slices) - 1


def test_a_colour_image_is_refused_with_its_shape(dicom_dir: Path, copy_series) -> None:
    def rgb(ds: pydicom.Dataset, index: int) -> None:
        ds.SamplesPerPixel, ds.PlanarConfiguration, ds.PhotometricInterpretation = 3, 0, "RGB"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.Rows = ds.Columns = 16
        ds.PixelData = np.zeros((16, 16, 3), np.uint8).tobytes()

    vol = _volume(copy_series(_lidc(dicom_dir, 1), edit=rgb))
    with pytest.raises(volume.PixelDecodeError, match=r"one grey-level frame.*\(16, 16, 3\)"):
        volume.read_slice(vol.slices[0])
