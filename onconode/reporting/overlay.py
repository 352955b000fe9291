"""The picture of one key slice: the slice in its display window, the Grad-CAM heat map blended over
the patient (never over the air around), and a burned-in caption.

Input: ``image`` float32 (H, W) in [0, 1] (the slice in the model's display window), ``heat_map``
float32 (H, W) in [0, 1] on the same grid, ``body`` bool (H, W) (the patient's outline), and the
caption lines. Output: uint8 (H', W', 3) RGB, H' = H + the caption band height.

The one blender of the project: the Secondary Captures, ``onconode analyze --out`` and the status
page all draw with it. The heat is faded out over a few pixels at the body's edge and below a
floor, so it has no hard rectangular edges and weak evidence does not tint the anatomy. The
caption sits in a band below the image so it never hides anatomy, and it opens with the
not-for-diagnosis warning (IHE AIR asks that AI results be recognisable as such where shown).
Pure: no files, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

WARNING_LINE = "AI RESULT - NOT FOR DIAGNOSIS"
# Heat below this fraction of the maximum is not tinted, so the anatomy stays readable.
HEAT_FLOOR = 0.2
HEAT_ALPHA = 0.45
# The body edge fades over this many pixels (Gaussian sigma).
EDGE_SIGMA = 3.0
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def blend(image: np.ndarray, heat_map: np.ndarray, body: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB (H, W, 3): the grey slice with the JET-coloured heat map over the body.

    Raises
    ------
    ValueError
        When the arrays are not 2-D or differ in shape.
    """
    if image.ndim != 2 or heat_map.ndim != 2:
        raise ValueError(f"image and heat_map must be 2-D, found {image.shape} and {heat_map.shape}")
    if image.shape != heat_map.shape or (body is not None and body.shape != image.shape):
        raise ValueError(f"image {image.shape}, heat_map {heat_map.shape} and body must have one shape")
    gray = (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    heat = np.clip(np.nan_to_num(heat_map), 0.0, 1.0).astype(np.float32)
    colour = cv2.cvtColor(cv2.applyColorMap((heat * 255.0 + 0.5).astype(np.uint8), cv2.COLORMAP_JET),
                          cv2.COLOR_BGR2RGB)
    # Fade in over the floor instead of switching on at it: no hard contour at HEAT_FLOOR.
    strength = np.clip((heat - HEAT_FLOOR) / (1.0 - HEAT_FLOOR) * 3.0, 0.0, 1.0)
    if body is not None:
        inside = cv2.GaussianBlur(body.astype(np.float32), (0, 0), EDGE_SIGMA) * body
        strength = strength * inside
    alpha = (HEAT_ALPHA * strength)[:, :, None]
    base = np.repeat(gray[:, :, None], 3, axis=2).astype(np.float32)
    return (base * (1.0 - alpha) + colour * alpha + 0.5).astype(np.uint8)


def render(image: np.ndarray, heat_map: np.ndarray, lines: Sequence[str], body: np.ndarray | None = None
           ) -> np.ndarray:
    """``blend`` plus a caption band below.

    Raises
    ------
    ValueError
        As ``blend``, or when ``lines`` is empty.
    """
    if not lines:
        raise ValueError("caption lines: at least the warning line is required")
    return np.concatenate([blend(image, heat_map, body), _caption_band(image.shape[1], lines)], axis=0)


def _caption_band(width: int, lines: Sequence[str]) -> np.ndarray:
    """A black band with the lines in white (the first, the warning, in yellow), scaled to ``width``.

    Hershey fonts draw ASCII only: callers pass plain ASCII (``>=``, a hyphen for a dash).
    """
    scale = max(0.3, min(1.0, width / 640.0))
    thickness = 1 if scale < 0.7 else 2
    line_height = round(28 * scale) + 4
    band = np.zeros((line_height * len(lines) + 6, width, 3), dtype=np.uint8)
    for i, text in enumerate(lines):
        fit = _fitting_scale(text, scale, thickness, width - 8)
        colour = (255, 255, 0) if i == 0 else (255, 255, 255)
        cv2.putText(band, text, (4, line_height * (i + 1)), _FONT, fit, colour, thickness, cv2.LINE_AA)
    return band


def _fitting_scale(text: str, scale: float, thickness: int, room: int) -> float:
    """The largest font scale up to ``scale`` at which ``text`` is at most ``room`` pixels wide.

    One proportional step is not enough: a stroke's thickness does not shrink with the font, so a
    line scaled down once can still run past the edge by a character."""
    fit = scale
    for _ in range(20):
        (w, _), _ = cv2.getTextSize(text, _FONT, fit, thickness)
        if w + thickness <= room:
            return fit
        fit *= min(0.98, room / (w + thickness))
    return fit
