"""Pixels to model input: windows (CT) or percentile scaling (MR), crop to the patient, resize,
normalise.

Input: one slice as float32 (H, W) in modality units (Hounsfield units for CT, stored intensities
for MR) and, for series-level MR scaling, the series' ``Scaling``. Output: float32 (C, h, w) ready
for the model, plus the ``Placement`` that maps model space back to the slice (Grad-CAM overlays
need it).

Training and the node both call ``prepare_slice`` on the slice as decoded from DICOM (training on
the same values, read by the same volume code), so every step from the scanner's values to the
model's input is one piece of code: "preprocessing at training time equals inference time" holds
by construction. Pure functions: no files, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from onconode.models import Crop, CropBody, DisplaySpec, Percentiles, Preprocess, Window


def window(hu: np.ndarray, spec: Window) -> np.ndarray:
    """Map [center - width/2, center + width/2] HU linearly onto [0, 1], clipping outside.

    ``hu``: float (..., H, W) in Hounsfield units. Returns float32 of the same shape.
    """
    low = spec.center - spec.width / 2.0
    return np.clip((hu.astype(np.float32) - low) / np.float32(spec.width), 0.0, 1.0)


def percentile_scale(image: np.ndarray, spec: Percentiles) -> np.ndarray:
    """Map the slice's low/high intensity percentiles onto [0, 1], clipping outside.

    MR intensities have no physical unit, so each slice is scaled on its own, as the 8-bit training
    images were. A flat slice (no contrast) maps to zeros rather than dividing by zero.
    """
    values = image.astype(np.float32)
    low, high = np.percentile(values, [spec.low, spec.high])
    if high <= low:
        return np.zeros_like(values)
    return np.clip((values - low) / np.float32(high - low), 0.0, 1.0)


@dataclass(frozen=True)
class Scaling:
    """A series' own intensity reference for ``mr_volume``: the values its low/high percentiles fall on."""

    low: float
    high: float


# A series is sampled on at most this many slices to find its percentiles: enough for stable
# percentiles of a 3D volume, and a fixed cost however many slices the series has.
SCALING_SLICES = 32


def series_scaling(slices: list[np.ndarray], spec: Preprocess) -> Scaling | None:
    """The percentiles of ``mr_volume`` over sampled slices of a series (None for other kinds).

    Voxels at or below the lowest value (air, a skull-stripped background) are left out, so the
    reference does not depend on how much empty field of view a series has.
    """
    if spec.kind != "mr_volume" or not slices:
        return None
    assert spec.percentiles is not None
    values = np.concatenate([s.ravel().astype(np.float32) for s in slices])
    floor = float(values.min())
    tissue = values[values > floor]
    if tissue.size == 0:
        return Scaling(floor, floor)
    low, high = np.percentile(tissue, [spec.percentiles.low, spec.percentiles.high])
    return Scaling(float(low), float(high))


def sample_indices(count: int) -> list[int]:
    """Up to ``SCALING_SLICES`` indices spread evenly over ``count`` slices."""
    if count <= SCALING_SLICES:
        return list(range(count))
    return sorted({int(i) for i in np.linspace(0, count - 1, SCALING_SLICES).round()})


def scale_intensities(image: np.ndarray, spec: Preprocess, scaling: Scaling | None = None) -> np.ndarray:
    """The first channel of the manifest's intensity step, float32 (H, W) in [0, 1]."""
    return intensity_channels(image, spec, scaling)[0]


def intensity_channels(image: np.ndarray, spec: Preprocess, scaling: Scaling | None = None) -> np.ndarray:
    """The manifest's intensity step: float32 (C', H, W) in [0, 1], one plane per CT window (C' = 1
    for one window or MR; ``to_model_input`` repeats a single plane over the model's channels).

    Raises
    ------
    ValueError
        For ``mr_volume`` without the series' ``Scaling``.
    """
    if spec.kind == "ct_window":
        assert spec.window is not None  # guaranteed by the manifest validator
        return window(image, spec.window)[None]
    if spec.kind == "ct_windows":
        return np.stack([window(image, w) for w in spec.windows])
    if spec.kind == "mr_volume":
        if scaling is None:
            raise ValueError("mr_volume scaling needs the series' percentiles (series_scaling)")
        if scaling.high <= scaling.low:
            return np.zeros((1, *image.shape), np.float32)
        unit = (image.astype(np.float32) - np.float32(scaling.low)) / np.float32(scaling.high - scaling.low)
        return np.clip(unit, 0.0, 1.0)[None]
    assert spec.percentiles is not None
    return percentile_scale(image, spec.percentiles)[None]


def display_scale(image: np.ndarray, display: DisplaySpec, spec: Preprocess, scaling: Scaling | None = None
                  ) -> np.ndarray:
    """The slice as a person should see it: the manifest's display window (lung, brain), else the
    model's own intensity scaling. Returns float32 in [0, 1]."""
    if display.window is not None:
        return window(image, display.window)
    if display.percentiles is not None:
        return percentile_scale(image, display.percentiles)
    return scale_intensities(image, spec, scaling)


@dataclass(frozen=True)
class Placement:
    """Where a slice went in the model input: crop box in the slice, scale, and padding offset.

    ``crop`` is (top, bottom, left, right) in slice pixels (bottom/right exclusive); the cropped
    region was scaled by ``scale`` and pasted at (``top_pad``, ``left_pad``) of the model input.
    """

    slice_shape: tuple[int, int]
    crop: tuple[int, int, int, int]
    scale_y: float
    scale_x: float
    top_pad: int
    left_pad: int
    input_shape: tuple[int, int]


def body_box(image01: np.ndarray, spec: CropBody) -> tuple[int, int, int, int]:
    """Bounding box (top, bottom, left, right) of the largest region brighter than the threshold.

    Falls back to the whole image when nothing is brighter (an empty slice has no body).
    """
    height, width = image01.shape
    mask = (image01 > spec.threshold).astype(np.uint8)
    count, _labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return (0, height, 0, width)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    left, top, w, h = (int(v) for v in stats[largest, :4])
    my, mx = round(h * spec.margin), round(w * spec.margin)
    return (max(0, top - my), min(height, top + h + my), max(0, left - mx), min(width, left + w + mx))


def resize_into(image01: np.ndarray, size: tuple[int, int], keep_aspect: bool, pad_value: float
                ) -> tuple[np.ndarray, float, float, int, int]:
    """Resize (H, W) into ``size`` (h, w); with ``keep_aspect`` scale to fit and pad centred.

    Returns the resized float32 image and (scale_y, scale_x, top_pad, left_pad).
    """
    out_h, out_w = size
    in_h, in_w = image01.shape
    if keep_aspect:
        scale = min(out_h / in_h, out_w / in_w)
        scale_y = scale_x = scale
        new_h, new_w = max(1, round(in_h * scale)), max(1, round(in_w * scale))
    else:
        scale_y, scale_x = out_h / in_h, out_w / in_w
        new_h, new_w = out_h, out_w
    shrinking = new_h * new_w < in_h * in_w
    resized = cv2.resize(image01.astype(np.float32), (new_w, new_h),
                         interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    canvas = np.full((out_h, out_w), pad_value, dtype=np.float32)
    top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = resized
    return canvas, scale_y, scale_x, top, left


def crop_box(values: np.ndarray, crop: Crop, modality: str) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the patient on a slice of raw values (see ``Crop``); the whole
    slice when no patient is found."""
    from onconode.selection.region import LUNG_HU, body_outline

    height, width = values.shape
    body = body_outline(values, modality)
    region = body
    if crop.region == "lungs" and modality == "CT":
        lungs = body & (values > LUNG_HU[0]) & (values < LUNG_HU[1])
        if np.count_nonzero(lungs) >= 0.01 * max(1, int(np.count_nonzero(body))):
            region = lungs
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    if rows.size == 0:
        return (0, height, 0, width)
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    my, mx = round((bottom - top) * crop.margin), round((right - left) * crop.margin)
    return (max(0, top - my), min(height, bottom + my), max(0, left - mx), min(width, right + mx))


def to_model_input(image01: np.ndarray, spec: Preprocess, size: tuple[int, int], channels: int,
                   box: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, Placement]:
    """Crop, resize and normalise a [0, 1] slice (H, W) or planes (C', H, W) into float32 (C, h, w).

    The crop is ``box`` when given, else ``spec.crop_body`` on the first plane, else none; a
    single plane is repeated over the model's ``channels``.
    """
    planes = image01[None] if image01.ndim == 2 else image01
    slice_shape = (int(planes.shape[1]), int(planes.shape[2]))
    if box is not None:
        crop = box
    elif spec.crop_body:
        crop = body_box(planes[0], spec.crop_body)
    else:
        crop = (0, slice_shape[0], 0, slice_shape[1])
    top, bottom, left, right = crop
    resized = []
    for plane in planes:
        canvas, scale_y, scale_x, top_pad, left_pad = resize_into(
            plane[top:bottom, left:right], size, spec.resize.keep_aspect, spec.resize.pad_value)
        resized.append(canvas)
    stacked = np.broadcast_to(resized[0], (channels, *size)) if len(resized) == 1 else np.stack(resized)
    if stacked.shape[0] != channels:
        raise ValueError(f"{stacked.shape[0]} intensity planes for a model of {channels} channels")
    mean = np.asarray(spec.normalize.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.normalize.std, dtype=np.float32)[:, None, None]
    placement = Placement(slice_shape, crop, scale_y, scale_x, top_pad, left_pad, size)
    return ((stacked - mean) / std).astype(np.float32), placement


def prepare_slice(values: np.ndarray, spec: Preprocess, size: tuple[int, int], channels: int, modality: str,
                  scaling: Scaling | None = None, neighbours: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> tuple[np.ndarray, Placement]:
    """One decoded slice (modality units) to the model's input: the one path training and the node share.

    With ``spec.context_mm``, ``neighbours`` are the slices before and after it (``context_indices``);
    the slice itself stands in for them when they are not given. The crop is the slice's own.
    """
    planes = intensity_channels(values, spec, scaling)
    box: tuple[int, int, int, int] | None
    if spec.crop is not None:
        box = crop_box(values, spec.crop, modality)
    else:
        box = body_box(planes[0], spec.crop_body) if spec.crop_body is not None else None
    if spec.context_mm is not None:
        before, after = neighbours if neighbours is not None else (values, values)
        planes = np.concatenate([intensity_channels(before, spec, scaling), planes,
                                 intensity_channels(after, spec, scaling)])
    return to_model_input(planes, spec, size, channels, box)


def context_offset(spacing_mm: float | None, context_mm: float) -> int:
    """How many slices away the context neighbours are: the nearest to ``context_mm``, at least one
    (one when the spacing is unknown)."""
    if spacing_mm is None or not np.isfinite(spacing_mm) or spacing_mm <= 0:
        return 1
    return max(1, round(context_mm / spacing_mm))


def context_indices(index: int, count: int, offset: int) -> tuple[int, int]:
    """The neighbours of slice ``index`` of ``count``, ``offset`` away; at the ends the last slice there."""
    return max(0, index - offset), min(count - 1, index + offset)


def context_neighbours(index: int, count: int, offset: int, slices: Mapping[int, np.ndarray] | np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray] | None:
    """The decoded slices ``prepare_slice`` takes as context for slice ``index`` (None without context)."""
    if not offset:
        return None
    before, after = context_indices(index, count, offset)
    return slices[before], slices[after]


def to_slice_geometry(model_map: np.ndarray, placement: Placement) -> np.ndarray:
    """Map a (h, w) map in model-input space back onto the slice (H, W); zero outside the crop.

    The inverse of ``to_model_input``'s geometry, for heat maps computed on the model input.
    """
    top, bottom, left, right = placement.crop
    crop_h, crop_w = bottom - top, right - left
    new_h = max(1, round(crop_h * placement.scale_y))
    new_w = max(1, round(crop_w * placement.scale_x))
    inside = model_map[placement.top_pad:placement.top_pad + new_h,
                       placement.left_pad:placement.left_pad + new_w]
    restored = cv2.resize(inside.astype(np.float32), (crop_w, crop_h), interpolation=cv2.INTER_LINEAR)
    out = np.zeros(placement.slice_shape, dtype=np.float32)
    out[top:bottom, left:right] = restored
    return out
