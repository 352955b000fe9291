"""Plane, spacing and regularity from ImageOrientationPatient and ImagePositionPatient."""

from __future__ import annotations

from onconode.selection.geometry import plane_of, read_geometry

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def test_planes() -> None:
    assert plane_of(AXIAL) == "axial"
    assert plane_of((0, 1, 0, 0, 0, -1)) == "sagittal"
    assert plane_of((1, 0, 0, 0, 0, -1)) == "coronal"
    assert plane_of((1, 0, 0, 0, 0.94, -0.34)) == "axial"  # a 20° gantry tilt
    assert plane_of((1, 0, 0, 0, 0.7071, -0.7071)) in {"axial", "coronal", "oblique"}
    assert plane_of(None) == "unknown"


def test_regular_spacing_and_thickness() -> None:
    positions = [(0.0, 0.0, z * 2.5) for z in range(10)]
    geometry = read_geometry(AXIAL, positions[::-1], 2.5)
    assert geometry.plane == "axial" and geometry.slices == 10 and geometry.regular
    assert geometry.spacing_mm == 2.5 and geometry.thickness_mm == 2.5


def test_a_gap_makes_the_spacing_irregular_and_thickness_falls_back_to_spacing() -> None:
    positions = [(0.0, 0.0, z) for z in (0, 5, 10, 15, 30, 35)]
    geometry = read_geometry(AXIAL, positions, None)
    assert not geometry.regular and geometry.thickness_mm == 5.0
    assert any("irregular" in e for e in geometry.evidence)


def test_coverage_is_first_to_last_position_plus_one_spacing() -> None:
    positions = [(0.0, 0.0, -60.0 + z * 6.5) for z in range(24)]
    geometry = read_geometry(AXIAL, positions, 5.0)
    assert geometry.coverage_mm == 24 * 6.5  # each slice stands for half a gap either side
    assert geometry.evidence[-1] == "24 slices over 156 mm"
    assert read_geometry(AXIAL, positions[:1], 5.0).coverage_mm is None  # one slice: no spacing, no reach
