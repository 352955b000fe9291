"""The picture of one key slice: the slice in its window, the Grad-CAM heat map blended over it
in a colour map, and a burned-in caption.

Input: ``image`` float32 (H, W) in [0, 1] (the slice as the model saw it, windowed) and
``heat_map`` float32 (H, W) in [0, 1] on the same pixel grid, plus the caption lines.
Output: uint8 (H', W', 3) RGB, H' = H + the caption band height.

Pure: no files, no clock, no network. The caption sits in a black band added below the image so
that it never hides anatomy, and it always opens with the not-for-diagnosis warning (IHE AIR asks
that AI results be recognisable as such where they are displayed).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

WARNING_LINE = "AI RESULT - NOT FOR DIAGNOSIS"
# Heat below this fraction of the maximum is not tinted, so the anatomy stays readable.
HEAT_FLOOR = 0.2
HEAT_ALPHA = 0.45
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def caption_lines(model: str, version: str, finding: str, probability: float) -> tuple[str, ...]:
    """The burned-in caption: warning, algorithm identity, finding and probability.

    Hershey fonts draw ASCII only, so the warning is written with a plain hyphen.
    """
    return (WARNING_LINE, f"{model} {version}", f"{finding}: P={probability:.3f}")


def render(image: np.ndarray, heat_map: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """Blend ``heat_map`` (JET colour map) over ``image`` and add a caption band below.

    Raises
    ------
    ValueError
        When the arrays are not 2-D, differ in shape, or ``lines`` is empty.
    """
    if image.ndim != 2 or heat_map.ndim != 2:
        raise ValueError(f"image and heat_map must be 2-D, found {image.shape} and {heat_map.shape}")
    if image.shape != heat_map.shape:
        raise ValueError(f"image {image.shape} and heat_map {heat_map.shape} differ in shape")
    if not lines:
        raise ValueError("caption lines: at least the warning line is required")
    gray = (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    heat = np.clip(np.nan_to_num(heat_map), 0.0, 1.0)
    heat_u8 = (heat * 255.0 + 0.5).astype(np.uint8)
    colour = cv2.cvtColor(cv2.applyColorMap(heat_u8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    base = np.repeat(gray[:, :, None], 3, axis=2)
    alpha = (HEAT_ALPHA * (heat >= HEAT_FLOOR))[:, :, None]
    blended = (base * (1.0 - alpha) + colour * alpha + 0.5).astype(np.uint8)
    return np.concatenate([blended, _caption_band(image.shape[1], lines)], axis=0)


def _caption_band(width: int, lines: Sequence[str]) -> np.ndarray:
    """A black band with the lines in white (the first, the warning, in yellow), scaled to ``width``."""
    scale = max(0.3, min(1.0, width / 640.0))
    thickness = 1 if scale < 0.7 else 2
    line_height = round(28 * scale) + 4
    band = np.zeros((line_height * len(lines) + 6, width, 3), dtype=np.uint8)
    for i, text in enumerate(lines):
        (w, _), _ = cv2.getTextSize(text, _FONT, scale, thickness)
        fit = min(scale, scale * (width - 8) / max(w, 1))
        colour = (255, 255, 0) if i == 0 else (255, 255, 255)
        cv2.putText(band, text, (4, line_height * (i + 1)), _FONT, fit, colour, thickness, cv2.LINE_AA)
    return band
