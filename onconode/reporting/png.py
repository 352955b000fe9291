"""Heat-map overlays as PNG files, for ``onconode analyze --out`` and the status page (a quick look,
not a DICOM object: the Secondary Captures and the segmentation for the PACS are built beside it).

Input: a slice in [0, 1] (H, W), its Grad-CAM map in [0, 1] (H, W) and the body outline.
Output: a PNG file drawn by ``overlay.blend``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from onconode.inference.pipeline import AnalysisResult
from onconode.reporting.overlay import blend


def write_png(path: Path, image01: np.ndarray, heat01: np.ndarray, body: np.ndarray | None = None) -> Path:
    """Write the overlay (``overlay.blend``) to ``path``; raises OSError when it cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(blend(image01, heat01, body), cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")
    return path


def overlay_name(rank: int, sop_uid: str, frame: int | None) -> str:
    return f"key{rank}-{sop_uid}" + (f"-f{frame}" if frame is not None else "") + ".png"


def write_overlays(result: AnalysisResult, folder: Path) -> list[Path]:
    """One PNG per key slice, named by rank and SOP Instance UID, into ``folder``."""
    return [write_png(folder / overlay_name(rank, key.sop_instance_uid, key.frame), key.image, key.heat_map,
                      key.body)
            for rank, key in enumerate(result.key_slices, start=1)]
