"""Where a lesion mask stored as an image series of the same study puts the lesion.

Some viewers (OsiriX among them) export a drawn region as a second series: the same geometry as the
series it was drawn on, pixels 0 and 1. A check study that comes with one (``label_kind:
mask-series`` in ``training/sources/<checks>.yaml``) is judged against it as the external studies are
against their readers' slices and boxes: the mask's slices become lesion slices of the series it was
drawn on (by position along the slice normal), and its extent on each a box.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from onconode.selection.series import slice_normal
from training.specs import ExternalCase


def _position(ds: pydicom.Dataset) -> float:
    """Distance along the slice normal (mm), as the node orders slices (``selection.volume``)."""
    return float(np.dot(slice_normal(ds.ImageOrientationPatient), np.array(ds.ImagePositionPatient, float)))


def lesion_case(key: str, description: str, study: Path, label_folder: str, label_of: str) -> ExternalCase:
    """The ``ExternalCase`` of ``study``: file stems of ``label_of`` that the mask in ``label_folder``
    marks, and the mask's box (x0, y0, x1, y1, pixels) on each.

    Raises
    ------
    ValueError
        If a marked mask slice has no slice of ``label_of`` within half a slice gap, or another matrix.
    """
    images = [(p, pydicom.dcmread(p, stop_before_pixels=True)) for p in sorted((study / label_of).rglob("*.dcm"))]
    places = np.array([_position(ds) for _, ds in images])
    gap = float(np.median(np.diff(np.sort(places)))) if len(places) > 1 else 1.0
    slices, boxes = [], []
    for path in sorted((study / label_folder).rglob("*.dcm")):
        mask = pydicom.dcmread(path)
        ys, xs = np.nonzero(mask.pixel_array > 0)
        if not len(xs):
            continue
        nearest = int(np.argmin(np.abs(places - _position(mask))))
        image_path, image = images[nearest]
        if abs(places[nearest] - _position(mask)) > gap / 2 or (image.Rows, image.Columns) != (mask.Rows, mask.Columns):
            raise ValueError(f"{key}: the mask slice {path.name} lies on no slice of {label_of}")
        slices.append(image_path.stem)
        boxes.append((image_path.stem, (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))))
    return ExternalCase(key, description, tuple(slices), tuple(boxes))
