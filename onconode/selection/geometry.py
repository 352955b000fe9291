"""Geometry of a series: plane, slice spacing and its regularity, thickness, slice count, and how far
along the normal it reaches.

A slice classifier reads axial slices at a known spacing; a sagittal reformat, a series with gaps
or a stack of mixed thicknesses would be read wrongly without anyone noticing. The plane comes
from the slice normal (row × column of ImageOrientationPatient), the spacing from the positions
along it, never from file order or SliceThickness alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from onconode.selection.series import slice_normal

# The normal within 45° of an axis names the plane; a gantry tilt (≤ 30°) stays axial.
PLANE_MIN_COS = float(np.cos(np.deg2rad(45)))
# Spacing is regular when every gap is within this fraction of the median gap.
REGULAR_TOLERANCE = 0.1

Vector = tuple[float, float, float]


def plane_of(orientation: Sequence[float] | None) -> str:
    """axial | coronal | sagittal | oblique, or unknown without an orientation."""
    if orientation is None or len(orientation) != 6:
        return "unknown"
    normal = np.abs(slice_normal(orientation))
    axis = int(np.argmax(normal))
    if normal[axis] < PLANE_MIN_COS:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


@dataclass(frozen=True)
class Geometry:
    plane: str
    slices: int
    spacing_mm: float | None      # median gap between neighbouring positions along the normal
    thickness_mm: float | None    # SliceThickness, else the spacing
    regular: bool                 # every gap within tolerance of the median (True for one slice)
    evidence: tuple[str, ...]
    # How far along the normal the slices reach: first to last position plus one spacing (each slice
    # images half a spacing either side of its centre); None without a spacing.
    coverage_mm: float | None = None


def read_geometry(orientation: Sequence[float] | None, positions: Sequence[Vector | None],
                  slice_thickness: float | None) -> Geometry:
    """Geometry from the first orientation and every slice position of a series."""
    plane = plane_of(orientation)
    known = [p for p in positions if p is not None]
    evidence = [f"plane {plane}"]
    spacing = None
    coverage = None
    regular = True
    if orientation is not None and len(orientation) == 6 and len(known) >= 2:
        normal = slice_normal(orientation)
        distances = np.sort(np.asarray(known, float) @ normal)
        gaps = np.diff(distances)
        gaps = gaps[gaps > 0.01]
        if gaps.size:
            spacing = float(np.median(gaps))
            regular = bool(np.all(np.abs(gaps - spacing) <= REGULAR_TOLERANCE * spacing))
            coverage = float(distances[-1] - distances[0]) + spacing
            evidence.append(f"spacing {spacing:.2f} mm{'' if regular else ' (irregular: gaps differ)'}")
    thickness = slice_thickness if slice_thickness and slice_thickness > 0 else spacing
    if thickness is not None:
        source = "SliceThickness" if slice_thickness and slice_thickness > 0 else "spacing"
        evidence.append(f"thickness {thickness:.2f} mm ({source})")
    evidence.append(f"{len(positions)} slices" + (f" over {coverage:.0f} mm" if coverage is not None else ""))
    return Geometry(plane, len(positions), spacing, thickness, regular, tuple(evidence), coverage)
