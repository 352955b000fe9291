"""Volume: the chosen series as slices in spatial order, decoded one at a time.

Input: the ``SeriesInfo`` that ``selection.match`` chose. Output: a ``Volume`` (ordered ``SliceRef``s plus the
notes a reader needs: how it was ordered, what was dropped) and, through ``iter_slices``, float32
(H, W) slices after the modality LUT — Hounsfield units for CT, stored intensities for MR.

Order comes from geometry, not file names or InstanceNumber: each slice's distance along the slice
normal is ImagePositionPatient · (row × column) (PS3.3 C.7.6.2.1.1), which also holds for a tilted
gantry (the normal tilts with the plane) and for a series sent in reverse. InstanceNumber is only a
fallback, and the notes say so. Slices are decoded lazily and released before the next one, so a
500-slice series never sits in memory as a whole (the 1 GB RSS budget of the issue).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from onconode.selection.series import SeriesInfo, Vector, slice_normal

log = logging.getLogger(__name__)

# Two slices closer than this along the normal are the same position (mm).
SAME_POSITION_MM = 0.01


class PixelDecodeError(ValueError):
    """A slice's pixel data cannot be decoded (missing codec, corrupt data); names file and syntax."""


@dataclass(frozen=True)
class SliceRef:
    """One 2-D slice: a single-frame file (``frame`` None) or one frame of a multi-frame file."""

    path: Path
    frame: int | None
    sop_instance_uid: str
    instance_number: int | None
    position: Vector | None
    distance: float | None  # mm along the slice normal; None when ordered by InstanceNumber


@dataclass(frozen=True)
class Volume:
    series_uid: str
    modality: str
    slices: tuple[SliceRef, ...]   # in spatial order, increasing distance along the normal
    shape: tuple[int, int]         # (rows, columns) of every kept slice
    normal: Vector | None
    ordered_by: str                # "position" or "instance_number"
    notes: tuple[str, ...]


def build_volume(series: SeriesInfo) -> Volume:
    """Order the series' slices in space, dropping odd matrix sizes and duplicate positions.

    Raises
    ------
    ValueError
        If the series has no image slices.
    """
    notes: list[str] = []
    refs: list[tuple[SliceRef, tuple[int | None, int | None]]] = []
    for inst in series.instances:
        if not inst.has_pixels:
            continue
        for index, position in enumerate(inst.positions):
            frame = index if inst.frames > 1 else None
            ref = SliceRef(inst.path, frame, inst.sop_instance_uid, inst.instance_number, position, None)
            refs.append((ref, (inst.rows, inst.columns)))
    if not refs:
        raise ValueError(f"series {series.series_uid}: no image slices")

    shapes = Counter(shape for _, shape in refs)
    majority, _ = shapes.most_common(1)[0]
    if len(shapes) > 1:
        odd = sum(n for s, n in shapes.items() if s != majority)
        notes.append(f"dropped {odd} slices whose matrix differs from the majority {majority[0]}x{majority[1]}")
    slices = [ref for ref, s in refs if s == majority]
    shape = (int(majority[0] or 0), int(majority[1] or 0))

    orientations = {inst.orientation for inst in series.instances if inst.has_pixels}
    orientation = next(iter(orientations)) if len(orientations) == 1 else None
    if orientation is not None and all(ref.position is not None for ref in slices):
        normal = slice_normal(orientation)
        placed = [_with_distance(ref, float(np.dot(ref.position, normal))) for ref in slices]  # type: ignore[arg-type]
        placed.sort(key=lambda r: (r.distance, r.instance_number or 0, r.frame or 0))
        kept = [placed[0]]
        for ref in placed[1:]:
            if abs((ref.distance or 0.0) - (kept[-1].distance or 0.0)) > SAME_POSITION_MM:
                kept.append(ref)
        if len(kept) < len(placed):
            notes.append(f"dropped {len(placed) - len(kept)} slices at duplicate positions "
                         "(kept the lowest InstanceNumber at each)")
        vector: Vector | None = (float(normal[0]), float(normal[1]), float(normal[2]))
        return Volume(series.series_uid, series.first.modality, tuple(kept), shape, vector, "position",
                      tuple(notes))

    why = "orientation differs between slices" if orientation is None and len(orientations) > 1 \
        else "ImageOrientationPatient/ImagePositionPatient missing"
    notes.append(f"ordered by InstanceNumber: {why}")
    log.warning("event=volume_fallback_order series=%s reason=%s", series.series_uid, why)
    slices.sort(key=lambda r: (r.instance_number or 0, r.frame or 0))
    return Volume(series.series_uid, series.first.modality, tuple(slices), shape, None, "instance_number",
                  tuple(notes))


def slice_spacing(volume: Volume) -> float | None:
    """The median distance between neighbouring slices along the normal; None without positions."""
    distances = [r.distance for r in volume.slices]
    if len(distances) < 2 or any(d is None for d in distances):
        return None
    return float(np.median(np.diff(np.asarray(distances, dtype=float))))


def _with_distance(ref: SliceRef, distance: float) -> SliceRef:
    return SliceRef(ref.path, ref.frame, ref.sop_instance_uid, ref.instance_number, ref.position, distance)


def _frame_rescale(ds: Dataset, frame: int) -> Dataset:
    """A Dataset with the Modality LUT attributes that apply to ``frame``.

    Enhanced multi-frame objects keep Rescale Slope/Intercept in the Pixel Value Transformation
    functional group (PS3.3 C.7.6.16.2.9), per frame or shared; ``apply_modality_lut`` reads them
    at the top level, so they are copied there for the one frame.
    """
    lut = Dataset()
    groups = []
    if "PerFrameFunctionalGroupsSequence" in ds:
        groups.append(ds.PerFrameFunctionalGroupsSequence[frame])
    if "SharedFunctionalGroupsSequence" in ds:
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    for group in groups:
        if "PixelValueTransformationSequence" in group:
            item = group.PixelValueTransformationSequence[0]
            lut.RescaleSlope = item.get("RescaleSlope", 1)
            lut.RescaleIntercept = item.get("RescaleIntercept", 0)
            return lut
    return ds


def invert_monochrome1(values: np.ndarray) -> np.ndarray:
    """MONOCHROME1 shows low values bright; flip (min + max - v) so bright means high signal, as the
    MONOCHROME2 training images do. Only for unitless (MR) values: HU keep their physical meaning
    whatever the display polarity."""
    return (values.min() + values.max() - values).astype(np.float32)


def _decode(ds: Dataset, ref: SliceRef) -> np.ndarray:
    from pydicom.pixels import pixel_array

    try:
        if ref.frame is None:
            raw = ds.pixel_array
        else:
            raw = pixel_array(ds, index=ref.frame)
    except (RuntimeError, NotImplementedError, ValueError, AttributeError) as err:
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
        name = getattr(syntax, "name", str(syntax))
        raise PixelDecodeError(f"{ref.path.name}: cannot decode pixel data in transfer syntax {name} "
                               f"({syntax}); is the codec plugin installed? {err}") from err
    if raw.ndim != 2:
        raise PixelDecodeError(f"{ref.path.name}: expected one grey-level frame, got shape {raw.shape} "
                               f"({ds.get('PhotometricInterpretation')})")
    lut_ds = _frame_rescale(ds, ref.frame) if ref.frame is not None else ds
    values = np.asarray(apply_modality_lut(raw, lut_ds), dtype=np.float32)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1" and ds.get("Modality") != "CT":
        values = invert_monochrome1(values)
    return values


def read_slice(ref: SliceRef) -> np.ndarray:
    """Decode one slice: float32 (H, W) after the modality LUT (HU for CT).

    Raises
    ------
    PixelDecodeError
        When the pixel data cannot be decoded, naming the file and the transfer syntax.
    """
    return _decode(pydicom.dcmread(ref.path), ref)


def iter_slices(volume: Volume) -> Iterator[tuple[int, SliceRef, np.ndarray]]:
    """Yield (index, ref, float32 (H, W)) in spatial order, one decoded slice alive at a time.

    A multi-frame file is read once for all its frames in a row, not once per frame.
    """
    cached: tuple[Path, Dataset] | None = None
    for index, ref in enumerate(volume.slices):
        if cached is None or cached[0] != ref.path:
            cached = (ref.path, pydicom.dcmread(ref.path))
        yield index, ref, _decode(cached[1], ref)
        if ref.frame is None:
            cached = None
