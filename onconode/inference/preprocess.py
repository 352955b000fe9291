"""Pixels to model input: window (CT) or percentile scaling (MR), body crop, resize, normalise.

Input: one slice as float32 (H, W) — Hounsfield units for CT, stored intensities for MR.
Output: float32 (C, h, w) ready for the model, plus the ``Placement`` that maps model space back
to the slice (Grad-CAM overlays need it).

Training calls ``to_model_input`` on Kaggle images scaled to [0, 1] and the node calls it on
windowed DICOM slices, so both sides share every step after the intensity scaling; that is how
"preprocessing at training time equals inference time" is kept true by construction. Pure
functions: no files, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from onconode.inference.models import CropBody, DisplaySpec, Percentiles, Preprocess, Window


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


def scale_intensities(image: np.ndarray, spec: Preprocess) -> np.ndarray:
    """The manifest's intensity step: CT window or MR percentiles. Returns float32 in [0, 1]."""
    if spec.kind == "ct_window":
        assert spec.window is not None  # guaranteed by the manifest validator
        return window(image, spec.window)
    assert spec.percentiles is not None
    return percentile_scale(image, spec.percentiles)


def display_scale(image: np.ndarray, display: DisplaySpec, spec: Preprocess) -> np.ndarray:
    """The slice as a person should see it: the manifest's display window (lung, brain), else the
    model's own intensity scaling. Returns float32 in [0, 1]."""
    if display.window is not None:
        return window(image, display.window)
    if display.percentiles is not None:
        return percentile_scale(image, display.percentiles)
    return scale_intensities(image, spec)


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


def to_model_input(image01: np.ndarray, spec: Preprocess, size: tuple[int, int], channels: int
                   ) -> tuple[np.ndarray, Placement]:
    """Crop (optional), resize and normalise one [0, 1] slice (H, W) into float32 (C, h, w)."""
    slice_shape = (int(image01.shape[0]), int(image01.shape[1]))
    crop = body_box(image01, spec.crop_body) if spec.crop_body else (0, slice_shape[0], 0, slice_shape[1])
    top, bottom, left, right = crop
    canvas, scale_y, scale_x, top_pad, left_pad = resize_into(
        image01[top:bottom, left:right], size, spec.resize.keep_aspect, spec.resize.pad_value)
    mean = np.asarray(spec.normalize.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.normalize.std, dtype=np.float32)[:, None, None]
    stacked = np.broadcast_to(canvas, (channels, *canvas.shape))
    placement = Placement(slice_shape, crop, scale_y, scale_x, top_pad, left_pad, size)
    return ((stacked - mean) / std).astype(np.float32), placement


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
