"""The shared preprocessing contract (also used by training): window, percentiles, resize, inverse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydantic
import pytest

from onconode.inference.preprocess import (
    body_box,
    context_indices,
    context_offset,
    percentile_scale,
    prepare_slice,
    resize_into,
    scale_intensities,
    to_model_input,
    to_slice_geometry,
    window,
)
from onconode.models import Crop, CropBody, Normalize, Percentiles, Preprocess, Resize, Window
from onconode.selection import series, volume

CT = Preprocess(kind="ct_window", window=Window(center=-600, width=1500),
                normalize=Normalize(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))


@pytest.fixture(scope="module")
def hu(dicom_dir: Path) -> np.ndarray:
    vol = volume.build_volume(series.scan([dicom_dir / "lidc-idri-0001" / "IM-0060.dcm"]).series[0])
    return volume.read_slice(vol.slices[0])


def test_window_maps_the_chosen_hu_range_onto_0_1(hu: np.ndarray) -> None:
    spec = Window(center=-600, width=1500)  # [-1350, 150] HU
    out = window(hu, spec)
    assert out.dtype == np.float32 and out.shape == hu.shape
    np.testing.assert_allclose(window(np.array([-1350.0, -600.0, 150.0, -2000.0, 3000.0]), spec),
                               [0.0, 0.5, 1.0, 0.0, 1.0])
    inside = (hu > -1350) & (hu < 150)
    np.testing.assert_allclose(out[inside], (hu[inside] + 1350) / 1500, rtol=1e-6)
    assert out.min() >= 0 and out.max() <= 1


def test_percentile_scale_uses_the_slice_percentiles(dicom_dir: Path) -> None:
    path = sorted((dicom_dir / "brain-tumor-progression-pgbm-001-t1post").glob("*.dcm"))[12]
    mr = volume.read_slice(volume.build_volume(series.scan([path]).series[0]).slices[0])
    out = percentile_scale(mr, Percentiles(low=1, high=99))
    low, high = np.percentile(mr, [1, 99])
    np.testing.assert_allclose(out, np.clip((mr - low) / (high - low), 0, 1), rtol=1e-5, atol=1e-6)
    assert not percentile_scale(np.full((4, 4), 7.0), Percentiles(low=1, high=99)).any()  # flat slice


def test_scale_intensities_follows_the_manifest_kind(hu: np.ndarray) -> None:
    np.testing.assert_array_equal(scale_intensities(hu, CT), window(hu, CT.window))  # type: ignore[arg-type]
    mr = Preprocess(kind="mr_percentile", percentiles=Percentiles(low=2, high=98),
                    normalize=Normalize(mean=(0.0,), std=(1.0,)))
    np.testing.assert_array_equal(scale_intensities(hu, mr), percentile_scale(hu, mr.percentiles))  # type: ignore[arg-type]


def test_resize_keeps_the_aspect_and_pads_centred() -> None:
    image = np.ones((100, 50), np.float32)
    canvas, sy, sx, top, left = resize_into(image, (64, 64), keep_aspect=True, pad_value=0.0)
    assert (sy, sx, top) == (0.64, 0.64, 0) and left == (64 - 32) // 2
    assert canvas[:, :left].max() == 0 and canvas[:, left:left + 32].min() == pytest.approx(1, abs=1e-6)
    stretched, sy, sx, _, _ = resize_into(image, (64, 64), keep_aspect=False, pad_value=0.0)
    assert stretched.min() == pytest.approx(1, abs=1e-6) and (sy, sx) == (0.64, 1.28)


def test_model_input_is_normalised_per_channel(hu: np.ndarray) -> None:
    x, placement = to_model_input(window(hu, CT.window), CT, (64, 64), 3)  # type: ignore[arg-type]
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    assert placement.slice_shape == hu.shape and placement.input_shape == (64, 64)
    assert float(x.min()) >= (0 - 0.5) / 0.25 and float(x.max()) <= (1 - 0.5) / 0.25


def test_slice_geometry_undoes_crop_scale_and_padding(hu: np.ndarray) -> None:
    spec = CT.model_copy(update={"crop_body": CropBody(threshold=0.3, margin=0.0),
                                 "resize": Resize(keep_aspect=True, pad_value=0.0)})
    scaled = window(hu, CT.window)  # type: ignore[arg-type]
    _, placement = to_model_input(scaled, spec, (64, 64), 3)
    top, bottom, left, right = placement.crop
    assert (bottom - top, right - left) != hu.shape  # the body crop did something
    ones = np.ones((64, 64), np.float32)
    back = to_slice_geometry(ones, placement)
    assert back.shape == hu.shape
    assert back[top:bottom, left:right].min() == 1 and back.sum() == (bottom - top) * (right - left)


def test_body_box_of_an_empty_slice_is_the_whole_slice() -> None:
    assert body_box(np.zeros((30, 40), np.float32), CropBody()) == (0, 30, 0, 40)


def test_ct_windows_give_one_plane_per_window_and_crop_to_the_lungs(dicom_dir: Path) -> None:
    from onconode.inference.preprocess import intensity_channels, prepare_slice
    from onconode.models import Crop, Normalize, Preprocess, Window

    spec = Preprocess(kind="ct_windows", windows=(Window(center=-600, width=1500), Window(center=40, width=400),
                                                   Window(center=0, width=2000)),
                      crop=Crop(region="lungs", margin=0.05), normalize=Normalize(mean=(0.5,) * 3, std=(0.5,) * 3))
    info = series.scan([dicom_dir / "lidc-idri-0001" / "IM-0070.dcm"]).series[0]
    hu = volume.read_slice(volume.build_volume(info).slices[0])
    planes = intensity_channels(hu, spec)
    assert planes.shape == (3, 512, 512) and not np.array_equal(planes[0], planes[1])
    image, placement = prepare_slice(hu, spec, (96, 96), 3, "CT")
    assert image.shape == (3, 96, 96)
    top, bottom, left, right = placement.crop
    assert 0 < top and bottom < 512 and 0 < left and right < 512  # the lungs, not the whole field of view
    body = prepare_slice(hu, spec.model_copy(update={"crop": Crop(region="body", margin=0.05)}), (96, 96), 3, "CT")[1]
    assert body.crop[0] <= top and body.crop[1] >= bottom  # the body's box holds the lungs' box


def test_mr_volume_scaling_uses_the_series_percentiles_not_the_slice() -> None:
    from onconode.inference.preprocess import intensity_channels, series_scaling
    from onconode.models import Normalize, Percentiles, Preprocess

    spec = Preprocess(kind="mr_volume", percentiles=Percentiles(low=1, high=99),
                      normalize=Normalize(mean=(0.5,) * 3, std=(0.5,) * 3))
    dim = np.zeros((32, 32), np.float32)
    dim[8:24, 8:24] = np.linspace(50, 150, 256).reshape(16, 16)   # tissue on an air background
    bright = dim * 10
    scaling = series_scaling([dim, bright], spec)
    assert scaling is not None
    assert intensity_channels(dim, spec, scaling).max() < intensity_channels(bright, spec, scaling).max()
    with pytest.raises(ValueError, match="series"):
        intensity_channels(dim, spec)


def test_context_neighbours_are_the_nearest_slices_to_the_distance_and_stop_at_the_ends() -> None:
    assert [context_offset(s, 5.0) for s in (0.625, 1.25, 2.5, 5.0, 8.0)] == [8, 4, 2, 1, 1]
    assert context_offset(None, 5.0) == 1 and context_offset(0.0, 5.0) == 1 and context_offset(float("nan"), 5.0) == 1
    assert context_indices(0, 10, 2) == (0, 2) and context_indices(5, 10, 2) == (3, 7)
    assert context_indices(9, 10, 2) == (7, 9) and context_indices(0, 1, 3) == (0, 0)


def test_context_channels_are_before_self_after_on_the_slices_own_crop() -> None:
    lung = Window(center=-600, width=1500)
    spec = Preprocess(kind="ct_window", window=lung, context_mm=5.0, crop=Crop(region="body", margin=0.0),
                      normalize=Normalize(mean=(0.0,) * 3, std=(1.0,) * 3))
    air = np.full((64, 64), -1000.0, np.float32)
    body = air.copy()
    body[16:48, 16:48] = 40.0  # the slice: a soft-tissue square
    before, after = body.copy(), body.copy()
    before[20:30, 20:30], after[30:40, 30:40] = -800.0, 300.0
    planes, placement = prepare_slice(body, spec, (32, 32), 3, "CT", None, (before, after))
    assert placement.crop == (16, 48, 16, 48)  # the slice's own body, not a neighbour's
    for channel, source in enumerate((before, body, after)):
        assert np.allclose(planes[channel], window(source, lung)[16:48, 16:48], atol=1e-6)
    alone, _ = prepare_slice(body, spec, (32, 32), 3, "CT")
    assert np.allclose(alone, window(body, lung)[16:48, 16:48][None].repeat(3, 0), atol=1e-6)


def test_context_needs_one_plane_per_slice() -> None:
    with pytest.raises(pydantic.ValidationError, match="context_mm"):
        Preprocess(kind="ct_windows", windows=(Window(center=-600, width=1500),) * 3, context_mm=5.0,
                   normalize=Normalize(mean=(0.0,) * 3, std=(1.0,) * 3))
