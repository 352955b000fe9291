"""Heat-map overlays as PNG files, for ``onconode analyze --out`` and the status page (a quick look,
not a DICOM object: the Secondary Capture overlays for PACS come from ``reporting/``).

Input: a slice in [0, 1] (H, W) and its Grad-CAM map in [0, 1] (H, W). Output: a PNG file.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from onconode.inference.pipeline import AnalysisResult

# The map is shown only where it is at least this strong, so weak evidence does not tint the slice.
MIN_SHOWN = 0.2
OPACITY = 0.45


def blend(image01: np.ndarray, heat01: np.ndarray) -> np.ndarray:
    """uint8 BGR (H, W, 3): the grey slice with the JET-coloured heat map laid over it.

    Raises
    ------
    ValueError
        If the two arrays do not have the same (H, W) shape.
    """
    if image01.shape != heat01.shape or image01.ndim != 2:
        raise ValueError(f"image {image01.shape} and heat map {heat01.shape} must be the same (H, W)")
    grey = (np.clip(image01, 0, 1) * 255).astype(np.uint8)
    base = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    colour = cv2.applyColorMap((np.clip(heat01, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = (OPACITY * (heat01 >= MIN_SHOWN))[..., None].astype(np.float32)
    return (base * (1 - alpha) + colour * alpha).astype(np.uint8)


def write_png(path: Path, image01: np.ndarray, heat01: np.ndarray) -> Path:
    """Write the overlay to ``path``; raises OSError when it cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), blend(image01, heat01)):
        raise OSError(f"cannot write {path}")
    return path


def overlay_name(rank: int, sop_uid: str, frame: int | None) -> str:
    return f"key{rank}-{sop_uid}" + (f"-f{frame}" if frame is not None else "") + ".png"


def write_overlays(result: AnalysisResult, folder: Path) -> list[Path]:
    """One PNG per key slice, named by rank and SOP Instance UID, into ``folder``."""
    return [write_png(folder / overlay_name(rank, key.sop_instance_uid, key.frame), key.image, key.heat_map)
            for rank, key in enumerate(result.key_slices, start=1)]
