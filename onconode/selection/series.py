"""A study's headers, grouped by series, and the objects that are never a model's input.

Input: the file paths of one study. Output: ``StudyScan`` (one ``InstanceHeader`` per file,
grouped by series) and, from ``exclusion``, why a series cannot be read by any model at all.

A PACS sends everything in a study: localizers (scouts), dose reports, secondary captures and
several reconstructions. Those that carry no cross-sectional slice are set aside here; which of
the rest a model reads is ``onconode/selection``'s decision. Headers only are read here
(``stop_before_pixels``); pixels are decoded later, in ``volume.py``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from onconode.selection.text import has_phrase, has_word, words
from onconode.values import check_uid

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
# Localizer names seen on real scanners: "Scout", "Topogram", "3-Plane Localizer", "Survey_MST",
# "AAHead_Scout", "loc_MPR_cor", "FAST LOCALIZER", "Tri-Pilot". Matched as words (underscores split).
_SCOUT_WORDS = frozenset({"scout", "topogram", "localizer", "localiser", "surview", "scanogram", "survey", "loc",
                          "tripilot", "pilot", "3plane", "aascout"})
_SCOUT_PHRASES = ("3 plane", "tri pilot", "three plane", "plane loc")


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
    # What series classification (``onconode/selection``) reads; absent or malformed values are
    # empty or None, never an error: a value a scanner got wrong must not stop the analysis.
    protocol_name: str = ""
    requested_procedure: str = ""
    anatomic_region: str = ""              # Code Meaning of AnatomicRegionSequence
    manufacturer: str = ""
    sequence_name: str = ""
    scanning_sequence: tuple[str, ...] = ()
    sequence_variant: tuple[str, ...] = ()
    repetition_time: float | None = None
    echo_time: float | None = None
    inversion_time: float | None = None
    diffusion_b: float | None = None
    contrast_agent: str = ""
    slice_thickness: float | None = None
    pixel_spacing: tuple[float, float] | None = None
    series_number: int | None = None
    series_time: str = ""

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

    @property
    def instances(self) -> tuple[InstanceHeader, ...]:
        """Every readable instance of the study, series by series."""
        return tuple(h for info in self.series for h in info.instances)


@dataclass(frozen=True)
class SeriesDecision:
    """Whether a series was analysed, and the reason a person reading the report would want."""

    series_uid: str
    description: str
    modality: str
    slices: int
    taken: bool
    reason: str
    evidence: tuple[str, ...] = ()   # what the series was classified as, and from which headers


def decide(info: SeriesInfo, taken: bool, reason: str, evidence: tuple[str, ...] = ()) -> SeriesDecision:
    """The decision record of ``info``."""
    head = info.first
    return SeriesDecision(info.series_uid, head.series_description, head.modality, info.slice_count, taken, reason,
                          evidence)


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count else None


def _frame_geometry(ds: Dataset) -> tuple[tuple[float, ...] | None, tuple[Vector | None, ...]]:
    """Orientation and per-frame positions, from the functional groups of enhanced multi-frame
    objects (PS3.3 C.7.6.16) or from the top-level attributes of single-frame ones."""
    frames = _integer(ds, "NumberOfFrames") or 1
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
    return header_of(pydicom.dcmread(path, stop_before_pixels=True), path)


def header_of(ds: Dataset, path: Path) -> InstanceHeader:
    """The header facts of a data set already read (``path`` is where it came from)."""
    orientation, positions = _frame_geometry(ds)
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
        instance_number=_integer(ds, "InstanceNumber"),
        rows=_integer(ds, "Rows"),
        columns=_integer(ds, "Columns"),
        orientation=orientation,
        positions=positions,
        has_pixels="Rows" in ds and "Columns" in ds and "BitsAllocated" in ds,
        protocol_name=_text(ds, "ProtocolName"),
        requested_procedure=_text(ds, "RequestedProcedureDescription"),
        anatomic_region=_code_meaning(ds, "AnatomicRegionSequence"),
        manufacturer=_text(ds, "Manufacturer"),
        sequence_name=_text(ds, "SequenceName"),
        scanning_sequence=_texts(ds, "ScanningSequence"),
        sequence_variant=_texts(ds, "SequenceVariant"),
        repetition_time=_number(ds, "RepetitionTime"),
        echo_time=_number(ds, "EchoTime"),
        inversion_time=_number(ds, "InversionTime"),
        diffusion_b=_number(ds, "DiffusionBValue"),
        contrast_agent=_text(ds, "ContrastBolusAgent"),
        slice_thickness=_number(ds, "SliceThickness"),
        pixel_spacing=_pair(ds, "PixelSpacing"),
        series_number=_integer(ds, "SeriesNumber"),
        series_time=_text(ds, "SeriesTime"),
    )


def _raw(ds: Dataset, keyword: str) -> Any:
    """A value as pydicom gives it, or None when the element is absent or does not convert."""
    try:
        return ds.get(keyword)
    except (ValueError, TypeError, OverflowError):
        return None


def _text(ds: Dataset, keyword: str) -> str:
    value = _raw(ds, keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _texts(ds: Dataset, keyword: str) -> tuple[str, ...]:
    value = _raw(ds, keyword)
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(v.strip().upper() for v in value.split("\\") if v.strip())
    try:
        return tuple(str(v).strip().upper() for v in value)
    except TypeError:
        return (str(value).strip().upper(),)


def _number(ds: Dataset, keyword: str) -> float | None:
    value = _raw(ds, keyword)
    if value is None or value == "":
        return None
    if not isinstance(value, (str, int, float)):
        try:
            value = value[0]
        except (TypeError, IndexError):
            return None
    try:
        number = float(str(value))
    except ValueError:
        return None
    return number if np.isfinite(number) else None


def _integer(ds: Dataset, keyword: str) -> int | None:
    number = _number(ds, keyword)
    return int(number) if number is not None and number.is_integer() else None


def _pair(ds: Dataset, keyword: str) -> tuple[float, float] | None:
    values = _floats(_raw(ds, keyword), 2)
    return (values[0], values[1]) if values and values[0] > 0 and values[1] > 0 else None


def _code_meaning(ds: Dataset, keyword: str) -> str:
    items = _raw(ds, keyword)
    try:
        return " ".join(str(item.get("CodeMeaning", "")) for item in items)
    except (TypeError, AttributeError, ValueError):
        return ""


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


def _plane_key(orientation: tuple[float, ...]) -> int:
    """The patient axis the slice normal is closest to (0 sagittal, 1 coronal, 2 axial)."""
    return int(np.argmax(np.abs(slice_normal(orientation))))


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal of the slice plane: row direction × column direction (PS3.3 C.7.6.2.1.1)."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    normal = np.cross(row, col)
    length = np.linalg.norm(normal)
    return normal / length if length > 0 else normal


_IDENTITY = (("StudyInstanceUID", "study_uid"), ("SeriesInstanceUID", "series_uid"),
             ("SOPInstanceUID", "sop_instance_uid"))


def identity_problem(series: SeriesInfo) -> str | None:
    """Why the series' instances cannot be named in what the node sends back, or None.

    The SR, the Secondary Captures and the FHIR report name each key slice by its UIDs, so they must
    be valid and the instances distinct. The node refuses such instances on receipt
    (``dicom_node.identify``); files given to ``onconode analyze`` (a de-identification that emptied the
    UIDs, or wrote UUIDs) meet the same rule here. The reason never quotes the value."""
    for header in series.instances:
        for attribute, name in _IDENTITY:
            reason = check_uid(getattr(header, name))
            if reason:
                return f"the {attribute} of an instance is not a valid UID ({reason}); the node refuses such instances"
    if len({h.sop_instance_uid for h in series.instances}) < len(series.instances):
        return "instances share one SOP Instance UID, so its slices could not be told apart in a report"
    return None


def exclusion(series: SeriesInfo) -> str | None:
    """Why a series cannot be analysed at all, or None when it is a candidate volume."""
    head = series.first
    if head.sop_class_uid in DOSE_REPORT_CLASSES:
        return f"dose report ({DOSE_REPORT_CLASSES[head.sop_class_uid]}), not an image"
    if not head.has_pixels:
        return f"non-image object (SOP class {head.sop_class_uid}, modality {head.modality or '-'})"
    if head.sop_class_uid in SECONDARY_CAPTURE_CLASSES:
        return "secondary capture: a picture, not a cross-sectional image with geometry"
    names = f"{head.series_description} {head.protocol_name}"
    if "LOCALIZER" in head.image_type or has_word(words(names), _SCOUT_WORDS) or has_phrase(names, _SCOUT_PHRASES):
        return "localizer (scout): a projection image for planning, not a slice"
    planes = {_plane_key(i.orientation) for i in series.instances if i.orientation is not None}
    if len(planes) > 1:
        return "slices in several planes (a multi-plane localizer), not one volume"
    return None
