"""Series selection: which series of a study is worth analysing, and why each other one is not.

Input: the file paths of one study. Output: ``StudyScan`` (headers grouped by series) and, after
``screen`` and ``select``, a ``SeriesDecision`` per series saying whether it was taken and why.

A PACS sends everything in a study: localizers (scouts), dose reports, secondary captures and
sometimes several reconstructions. Only an axial cross-sectional image volume can feed a slice
classifier. DERIVED\\SECONDARY series (e.g. a processed research release such as UPENN-GBM) are
still real axial volumes: they are ranked below an ORIGINAL axial series of the same study but
never dropped for that reason alone. Headers only are read here (``stop_before_pixels``); pixels
are decoded later, in ``volume.py``.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

log = logging.getLogger(__name__)

Vector = tuple[float, float, float]

# PS3.4 B.5: SOP classes that carry no cross-sectional pixels for a classifier.
DOSE_REPORT_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.67": "X-Ray Radiation Dose SR",
    "1.2.840.10008.5.1.4.1.1.88.68": "Radiopharmaceutical Radiation Dose SR",
    "1.2.840.10008.5.1.4.1.1.88.74": "Patient Radiation Dose SR",
}
SECONDARY_CAPTURE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.1", "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3", "1.2.840.10008.5.1.4.1.1.7.4",
}
_SCOUT_WORDS = re.compile(r"(?i)\b(scout|topogram|localizer|localiser|surview|scanogram|survey)\b")
# An axial slice's normal points within 45° of the patient's head-foot axis; a tilted gantry
# (typically ≤ 30°) still counts as axial.
AXIAL_MIN_COS = float(np.cos(np.deg2rad(45)))


@dataclass(frozen=True)
class InstanceHeader:
    """What series selection and volume building need from one file; no pixels, no Dataset."""

    path: Path
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    image_type: tuple[str, ...]
    body_part: str
    study_description: str
    series_description: str
    instance_number: int | None
    rows: int | None
    columns: int | None
    orientation: tuple[float, ...] | None  # ImageOrientationPatient (6 values)
    positions: tuple[Vector | None, ...]   # ImagePositionPatient per frame (one for single-frame)
    has_pixels: bool

    @property
    def frames(self) -> int:
        return len(self.positions)


@dataclass(frozen=True)
class SeriesInfo:
    series_uid: str
    instances: tuple[InstanceHeader, ...]

    @property
    def first(self) -> InstanceHeader:
        return self.instances[0]

    @property
    def slice_count(self) -> int:
        return sum(i.frames for i in self.instances)

    @property
    def derived(self) -> bool:
        return "DERIVED" in self.first.image_type or "SECONDARY" in self.first.image_type

    def label(self) -> str:
        head = self.first
        desc = head.series_description or "(no description)"
        return f"{head.modality} {desc!r} ({self.slice_count} slices)"


@dataclass(frozen=True)
class StudyScan:
    study_uid: str
    series: tuple[SeriesInfo, ...]
    unreadable: tuple[str, ...]  # "<file>: <reason>" for files that are not DICOM


@dataclass(frozen=True)
class SeriesDecision:
    """Whether a series was analysed, and the reason a person reading the report would want."""

    series_uid: str
    description: str
    modality: str
    slices: int
    taken: bool
    reason: str


def decide(info: SeriesInfo, taken: bool, reason: str) -> SeriesDecision:
    """The decision record of ``info``."""
    head = info.first
    return SeriesDecision(info.series_uid, head.series_description, head.modality, info.slice_count, taken, reason)


def _floats(value: object, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count else None


def _frame_geometry(ds: Dataset) -> tuple[tuple[float, ...] | None, tuple[Vector | None, ...]]:
    """Orientation and per-frame positions, from the functional groups of enhanced multi-frame
    objects (PS3.3 C.7.6.16) or from the top-level attributes of single-frame ones."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" not in ds:
        ipp = _floats(ds.get("ImagePositionPatient"), 3)
        position = (ipp[0], ipp[1], ipp[2]) if ipp else None
        return _floats(ds.get("ImageOrientationPatient"), 6), (position,) * max(1, frames)
    shared = ds.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    orientation = None
    positions: list[Vector | None] = []
    for item in ds.PerFrameFunctionalGroupsSequence:
        for group in (item, shared):
            if orientation is None and "PlaneOrientationSequence" in group:
                orientation = _floats(group.PlaneOrientationSequence[0].get("ImageOrientationPatient"), 6)
        pos_group = item if "PlanePositionSequence" in item else shared
        ipp = _floats(pos_group.PlanePositionSequence[0].get("ImagePositionPatient"), 3) \
            if "PlanePositionSequence" in pos_group else None
        positions.append((ipp[0], ipp[1], ipp[2]) if ipp else None)
    return orientation, tuple(positions)


def read_header(path: Path) -> InstanceHeader:
    """Parse one file's header.

    Raises
    ------
    InvalidDicomError, OSError
        If the file cannot be read as DICOM.
    """
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    orientation, positions = _frame_geometry(ds)
    number = ds.get("InstanceNumber")
    return InstanceHeader(
        path=path,
        study_uid=str(ds.get("StudyInstanceUID", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        modality=str(ds.get("Modality", "")),
        image_type=tuple(str(v).upper() for v in (ds.get("ImageType") or ())),
        body_part=str(ds.get("BodyPartExamined", "")),
        study_description=str(ds.get("StudyDescription", "")),
        series_description=str(ds.get("SeriesDescription", "")),
        instance_number=int(number) if number not in (None, "") else None,
        rows=int(ds.Rows) if "Rows" in ds else None,
        columns=int(ds.Columns) if "Columns" in ds else None,
        orientation=orientation,
        positions=positions,
        has_pixels="Rows" in ds and "Columns" in ds and "BitsAllocated" in ds,
    )


def group_by_study(paths: Iterable[Path]) -> dict[str, list[Path]]:
    """Study Instance UID → files, reading only that tag; non-DICOM files are left out."""
    studies: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        except (InvalidDicomError, OSError):
            continue
        if "StudyInstanceUID" in ds:
            studies[str(ds.StudyInstanceUID)].append(path)
    return dict(studies)


def scan(paths: Sequence[Path]) -> StudyScan:
    """Read the headers of one study's files and group them by series.

    Raises
    ------
    ValueError
        If the files belong to more than one study, or none is a readable DICOM file.
    """
    headers: list[InstanceHeader] = []
    unreadable: list[str] = []
    for path in paths:
        try:
            headers.append(read_header(path))
        except (InvalidDicomError, OSError) as err:
            unreadable.append(f"{path.name}: {err}")
    studies = sorted({h.study_uid for h in headers})
    if not studies:
        raise ValueError(f"no readable DICOM file among {len(paths)} paths")
    if len(studies) > 1:
        raise ValueError(f"files belong to {len(studies)} studies, expected one: {studies}")
    grouped: dict[str, list[InstanceHeader]] = defaultdict(list)
    for header in headers:
        grouped[header.series_uid].append(header)
    series = tuple(SeriesInfo(uid, tuple(items)) for uid, items in sorted(grouped.items()))
    return StudyScan(studies[0], series, tuple(unreadable))


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal of the slice plane: row direction × column direction (PS3.3 C.7.6.2.1.1)."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    normal = np.cross(row, col)
    length = np.linalg.norm(normal)
    return normal / length if length > 0 else normal


def exclusion(series: SeriesInfo) -> str | None:
    """Why a series cannot be analysed at all, or None when it is a candidate volume."""
    head = series.first
    if head.sop_class_uid in DOSE_REPORT_CLASSES:
        return f"dose report ({DOSE_REPORT_CLASSES[head.sop_class_uid]}), not an image"
    if not head.has_pixels:
        return f"non-image object (SOP class {head.sop_class_uid}, modality {head.modality or '-'})"
    if head.sop_class_uid in SECONDARY_CAPTURE_CLASSES:
        return "secondary capture: a picture, not a cross-sectional image with geometry"
    if "LOCALIZER" in head.image_type or _SCOUT_WORDS.search(head.series_description):
        return "localizer (scout): a projection image for planning, not a slice"
    if head.orientation is None:
        return "no ImageOrientationPatient: cannot tell whether the series is axial"
    cos = abs(float(slice_normal(head.orientation)[2]))
    if cos < AXIAL_MIN_COS:
        return f"not axial (slice normal {np.degrees(np.arccos(min(1.0, cos))):.0f}° from head-foot axis)"
    return None


def _geometry_consistent(series: SeriesInfo) -> bool:
    shapes = {(i.rows, i.columns) for i in series.instances}
    orientations = {tuple(round(v, 3) for v in i.orientation or ()) for i in series.instances}
    return len(shapes) == 1 and len(orientations) == 1


def select(candidates: Sequence[SeriesInfo]) -> tuple[SeriesInfo, tuple[SeriesDecision, ...]]:
    """Pick one series among axial candidates that the same routing rule matched.

    Ranking, best first: consistent geometry (one matrix size and orientation), ORIGINAL before
    DERIVED/SECONDARY, then most slices. A derived series is therefore used whenever it is the only
    axial volume, and only deprioritised when an original one exists.

    Raises
    ------
    ValueError
        If ``candidates`` is empty.
    """
    if not candidates:
        raise ValueError("select: no candidate series")
    ranked = sorted(candidates, key=lambda s: (not _geometry_consistent(s), s.derived, -s.slice_count,
                                               s.series_uid))
    chosen = ranked[0]
    decisions = []
    for series in ranked:
        if series is chosen:
            why = [f"axial {series.first.modality}, {series.slice_count} slices"]
            if series.derived:
                kind = "\\".join(series.first.image_type[:2])
                alone = "the only" if len(ranked) == 1 else "the best"
                why.append(f"{kind}, kept as {alone} axial volume (a derived series is deprioritised, "
                           f"never dropped for that alone)")
            if len(ranked) > 1:
                why.append(f"ranked first of {len(ranked)} candidates")
            reason = "; ".join(why)
        elif _geometry_consistent(chosen) and not _geometry_consistent(series):
            reason = "mixed matrix sizes or orientations; a consistent series was available"
        elif series.derived and not chosen.derived:
            reason = "DERIVED/SECONDARY: an ORIGINAL axial series of the study was preferred"
        else:
            reason = f"fewer slices ({series.slice_count}) than the chosen series ({chosen.slice_count})"
        decisions.append(decide(series, series is chosen, reason))
    log.info("event=series_selected series=%s slices=%d", chosen.series_uid, chosen.slice_count)
    return chosen, tuple(decisions)
