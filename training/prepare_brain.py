"""Gathered brain MR series to slice-ready arrays: ``python -m training.prepare_brain [--checks KEY ...]``.

Input: ``training/sources/brain-mr.yaml`` and the files ``training.gather`` copied for each series into
``$ONCONODE_TRAINING_DATA/brain-mr/<key>/`` (default ``data/training``). Output, per series, in
``$ONCONODE_PREPARED_DATA/brain-mr/`` (default ``data/prepared``):

- ``<key>.npz``: ``image`` (Z, H, W) raw stored intensities (int16 when the source is integer and fits,
  else float32; never normalised, the model's preprocessing does that), ``mask`` (Z, H, W) uint8 with
  the source's own label values, ``spacing`` float64 (dz, dy, dx) in mm (NaN where the source lost it),
  ``source_index`` int32 (Z,) the slice's index along the reoriented source volume;
- ``<key>.json``: the manifest entry, the sequence, which mask labels count as tumour on it, the
  tumour slice indices and the counts.

Why one fixed layout: the node classifies axial DICOM slices as it decodes them, and for the usual
ImageOrientationPatient [1,0,0,0,1,0] that means rows run anterior->posterior, columns patient
right->left (patient right on the image left, the radiological convention) and slices go by
increasing position along the normal, i.e. inferior->superior. Training slices must look exactly like
that, or the model learns a mirrored or upside-down brain. NIfTI/MetaImage/NRRD volumes are therefore
reoriented with their affine (axis permutations and flips only, no resampling, so the native grid and
intensities survive) so that array axes (Z, H, W) point to patient (superior, posterior, left); DICOM
series go through the node's own ``series.scan`` / ``volume.build_volume`` / ``volume.read_slice``
(``image_path: "."`` reads every file the manifest lists for the series, which is how one series is
taken out of a folder holding a whole study). Stacks of per-slice TIFFs (``format: tif_stack``, the
TCGA-LGG FLAIR-abnormality set of Buda et al.) are read slice by slice in the order of their slice
number; their pixels are kept in the stored (DICOM) layout, one RGB channel per sequence.

Slices whose image is constant (zero padding, empty background beyond a skull-stripped brain) are
dropped: no scanner ever sends one, and they would be free "negatives" that teach nothing.
``source_index`` keeps the link back to the source volume.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import nibabel as nib
import numpy as np
from nibabel import orientations

from training.gather import load_sources, training_root

log = logging.getLogger(__name__)

MODEL = "brain-mr"
# Array axes (Z, H, W) of a prepared volume point to patient superior, posterior, left. In nibabel's
# voxel-axis terms (i, j, k) = (W, H, Z) that is the orientation ("L", "P", "S").
TARGET_AXCODES = ("L", "P", "S")
CHECKS_DIR = "_checks"


def prepared_root() -> Path:
    """``$ONCONODE_PREPARED_DATA``, else ``data/prepared`` under the working directory."""
    return Path(os.environ.get("ONCONODE_PREPARED_DATA", "data/prepared"))


@dataclass(frozen=True)
class Volume3D:
    """A volume as read from disk: ``data`` indexed (i, j, k) and the voxel->RAS+ mm ``affine``."""

    data: np.ndarray
    affine: np.ndarray


# ---------------------------------------------------------------------------------------------- readers

_META_TYPES = {
    "MET_UCHAR": np.uint8, "MET_CHAR": np.int8, "MET_USHORT": np.uint16, "MET_SHORT": np.int16,
    "MET_UINT": np.uint32, "MET_INT": np.int32, "MET_FLOAT": np.float32, "MET_DOUBLE": np.float64,
}
_NRRD_TYPES = {
    "uchar": np.uint8, "unsigned char": np.uint8, "uint8": np.uint8, "signed char": np.int8, "int8": np.int8,
    "short": np.int16, "int16": np.int16, "signed short": np.int16, "ushort": np.uint16, "uint16": np.uint16,
    "unsigned short": np.uint16, "int": np.int32, "int32": np.int32, "signed int": np.int32,
    "uint": np.uint32, "unsigned int": np.uint32, "uint32": np.uint32, "float": np.float32,
    "double": np.float64,
}
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _lps_affine(direction: np.ndarray, spacing: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Voxel->RAS affine from ITK-style LPS geometry: column i of ``direction`` is axis i's unit vector."""
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing[None, :]
    affine[:3, 3] = origin
    return LPS_TO_RAS @ affine


def read_metaimage(path: Path) -> Volume3D:
    """A single-file MetaImage (``.mha``, ``ElementDataFile = LOCAL``), raw or zlib-compressed.

    MetaIO stores geometry as ITK does, in LPS: ``Offset`` is the first voxel's position and
    ``TransformMatrix`` the direction cosines, written row-major with row i the direction of axis i.
    """
    raw = path.read_bytes()
    header: dict[str, str] = {}
    pos = 0
    while True:
        end = raw.index(b"\n", pos)
        line = raw[pos:end].decode("ascii").strip()
        pos = end + 1
        key, _, value = line.partition("=")
        header[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            break
    if header["ElementDataFile"] != "LOCAL" or int(header.get("NDims", "3")) != 3:
        raise ValueError(f"{path.name}: only single-file 3-D MetaImages are read here")
    dims = [int(v) for v in header["DimSize"].split()]
    dtype = np.dtype(_META_TYPES[header["ElementType"]])
    dtype = dtype.newbyteorder(">" if header.get("BinaryDataByteOrderMSB", "False") == "True" else "<")
    payload = raw[pos:]
    if header.get("CompressedData", "False") == "True":
        payload = zlib.decompress(payload)
    data = np.frombuffer(payload, dtype=dtype, count=int(np.prod(dims))).reshape(dims[::-1]).transpose(2, 1, 0)
    spacing = np.array([float(v) for v in header.get("ElementSpacing", "1 1 1").split()])
    origin = np.array([float(v) for v in header.get("Offset", header.get("Origin", "0 0 0")).split()])
    matrix = np.array([float(v) for v in header.get("TransformMatrix", "1 0 0 0 1 0 0 0 1").split()])
    direction = matrix.reshape(3, 3).T  # rows in the file are axes; columns here are axes
    return Volume3D(np.ascontiguousarray(data).astype(dtype.newbyteorder("=")), _lps_affine(direction, spacing, origin))


def _nrrd_vector(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.strip("() ").split(",")])


def read_nrrd(path: Path) -> Volume3D:
    """A single-file 3-D NRRD with ``space directions`` (raw or gzip encoding), as Slicer writes them."""
    raw = path.read_bytes()
    split = raw.index(b"\n\n")
    lines = raw[:split].decode("ascii").splitlines()
    if not lines[0].startswith("NRRD"):
        raise ValueError(f"{path.name}: not a NRRD file")
    fields = {}
    for line in lines[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip()] = value.lstrip("=").strip()
    if int(fields["dimension"]) != 3:
        raise ValueError(f"{path.name}: only 3-D NRRD is read here")
    sizes = [int(v) for v in fields["sizes"].split()]
    dtype = np.dtype(_NRRD_TYPES[fields["type"]])
    dtype = dtype.newbyteorder(">" if fields.get("endian", "little") == "big" else "<")
    payload = raw[split + 2:]
    encoding = fields.get("encoding", "raw")
    if encoding in ("gzip", "gz"):
        payload = gzip.decompress(payload)
    elif encoding != "raw":
        raise ValueError(f"{path.name}: NRRD encoding {encoding!r} is not read here")
    data = np.frombuffer(payload, dtype=dtype, count=int(np.prod(sizes))).reshape(sizes[::-1]).transpose(2, 1, 0)
    space = fields.get("space", "left-posterior-superior")
    if space not in ("left-posterior-superior", "LPS", "right-anterior-superior", "RAS"):
        raise ValueError(f"{path.name}: NRRD space {space!r} is not read here")
    vectors = re.findall(r"\([^)]*\)", fields["space directions"])
    columns = np.stack([_nrrd_vector(v) for v in vectors], axis=1)  # column i: axis i's step in mm
    origin = _nrrd_vector(fields.get("space origin", "(0,0,0)"))
    affine = np.eye(4)
    affine[:3, :3] = columns
    affine[:3, 3] = origin
    if space in ("left-posterior-superior", "LPS"):
        affine = LPS_TO_RAS @ affine
    return Volume3D(np.ascontiguousarray(data).astype(dtype.newbyteorder("=")), affine)


def read_nifti(path: Path) -> Volume3D:
    image = nib.load(str(path))
    if not isinstance(image, nib.spatialimages.SpatialImage):
        raise TypeError(f"{path.name}: not a spatial image")
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path.name}: expected a 3-D volume, got shape {data.shape}")
    return Volume3D(np.asarray(data), np.asarray(image.affine, dtype=np.float64))


def _slice_number(path: Path) -> int:
    match = re.search(r"_(\d+)\.tif$", path.name)
    if match is None:
        raise ValueError(f"{path.name}: no slice number before .tif")
    return int(match.group(1))


TIF_OUTSIDE_MAX = 0.02  # a slice whose channel is exactly 0 on more of the head than this lies partly outside


def read_tif_stack(folder: Path, channel: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(Z, H, W) image from one RGB channel of ``<case>_<n>.tif``, the (Z, H, W) uint8 mask from
    ``<case>_<n>_mask.tif`` (any non-zero pixel -> 1), the slice numbers (slice-number order) and, per
    slice, the fraction of the head (any channel > 20) where the channel is exactly 0.

    Pillow decodes the TIFFs as RGB (OpenCV would hand back BGR and silently swap the sequences).
    The last value exists because the stacks' channels were registered to one reference sequence:
    where a resampled sequence's own volume ended, the dataset filled exact zeros (blank wedges and
    rotated fragments on the end slices), which no scanner produces.
    """
    from PIL import Image

    images = sorted((p for p in folder.glob("*.tif") if not p.name.endswith("_mask.tif")), key=_slice_number)
    if not images:
        raise FileNotFoundError(f"{folder}: no slice TIFFs")
    planes, masks, outside = [], [], []
    for path in images:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        planes.append(rgb[..., channel])
        head = rgb.max(axis=2) > 20
        outside.append(float(np.count_nonzero(head & (rgb[..., channel] == 0)) / max(int(head.sum()), 1)))
        mask_path = path.with_name(path.name[:-4] + "_mask.tif")
        with Image.open(mask_path) as im:
            masks.append((np.asarray(im.convert("L")) > 0).astype(np.uint8))
    numbers = np.array([_slice_number(p) for p in images], dtype=np.int32)
    return np.stack(planes), np.stack(masks), numbers, np.array(outside)


def read_volume(path: Path) -> Volume3D:
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return read_nifti(path)
    if name.endswith(".mha"):
        return read_metaimage(path)
    if name.endswith(".nrrd"):
        return read_nrrd(path)
    raise ValueError(f"{path.name}: unknown volume format")


# ------------------------------------------------------------------------------------------ reorienting


def to_display_layout(volume: Volume3D) -> tuple[np.ndarray, tuple[float, float, float]]:
    """(Z, H, W) array with axes toward patient superior, posterior, left, and its (dz, dy, dx) in mm.

    Only permutes and flips axes (nibabel picks, for each voxel axis, the closest patient axis), so
    an oblique acquisition keeps its native grid, as a DICOM viewer would show it.
    """
    current = orientations.io_orientation(volume.affine)
    target = orientations.axcodes2ornt(TARGET_AXCODES)
    transform = orientations.ornt_transform(current, target)
    data = orientations.apply_orientation(volume.data, transform)
    affine = volume.affine @ orientations.inv_ornt_aff(transform, volume.data.shape)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))  # mm per step along i (W), j (H), k (Z)
    return np.ascontiguousarray(np.transpose(data, (2, 1, 0))), (float(zooms[2]), float(zooms[1]), float(zooms[0]))


def read_dicom_series(folder: Path) -> tuple[np.ndarray, tuple[float, float, float], dict[str, Any]]:
    """One DICOM series with the node's own code: (Z, H, W) float32 after the modality LUT, in the
    node's slice order (increasing distance along the normal), its spacing and identifying UIDs."""
    import pydicom

    from onconode.selection.series import scan
    from onconode.selection.volume import build_volume, read_slice

    files = sorted(p for p in folder.rglob("*") if p.is_file())
    study = scan(files)
    if len(study.series) != 1:
        raise ValueError(f"{folder}: expected one DICOM series, found {len(study.series)}")
    volume = build_volume(study.series[0])
    stack = np.stack([read_slice(ref) for ref in volume.slices]).astype(np.float32)
    distances = [ref.distance for ref in volume.slices if ref.distance is not None]
    dz = float(np.median(np.diff(distances))) if len(distances) > 1 else float("nan")
    first = pydicom.dcmread(volume.slices[0].path, stop_before_pixels=True)
    dy, dx = (float(v) for v in first.get("PixelSpacing", [float("nan"), float("nan")]))
    ids = {"study_uid": study.study_uid, "series_uid": volume.series_uid, "ordered_by": volume.ordered_by,
           "orientation": [float(v) for v in first.get("ImageOrientationPatient", [])]}
    return stack, (dz, dy, dx), ids


# ---------------------------------------------------------------------------------------------- series


@dataclass(frozen=True)
class Prepared:
    key: str
    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]
    source_index: np.ndarray
    positive_labels: tuple[int, ...]
    info: dict[str, Any]

    @property
    def lesion_slices(self) -> list[int]:
        hit = np.isin(self.mask, self.positive_labels).any(axis=(1, 2))
        return [int(i) for i in np.flatnonzero(hit)]


def _as_mask(values: np.ndarray, key: str) -> np.ndarray:
    rounded = np.rint(values)
    if not np.allclose(values, rounded) or rounded.min() < 0 or rounded.max() > 255:
        raise ValueError(f"{key}: mask values are not small non-negative integers")
    return rounded.astype(np.uint8)


def _as_image(values: np.ndarray) -> np.ndarray:
    """int16 when every value is an integer that fits (most MR), else float32 (e.g. z-scored sources)."""
    integral = np.issubdtype(values.dtype, np.integer) or np.array_equal(values, np.rint(values))
    if integral and np.iinfo(np.int16).min <= values.min() and values.max() <= np.iinfo(np.int16).max:
        return values.astype(np.int16)
    return values.astype(np.float32)


def prepare_series(entry: dict[str, Any], folder: Path) -> Prepared:
    """Read one gathered series (image and mask) and bring both into the display layout."""
    key = entry["key"]
    image_rel = entry.get("image_path") or next(p for p in entry["paths"] if p != entry["mask_path"])
    image_path = folder / Path(image_rel).name  # training.gather copies each listed file by its name
    mask_path = folder / Path(entry["mask_path"]).name if entry["mask_path"] else None
    notes: list[str] = []
    geometry: dict[str, Any]
    excluded: set[int] = set()  # slices that must not be used although their image is not constant
    if entry["format"] == "dicom" and entry.get("image_path") == ".":
        image_path = folder  # the manifest lists exactly the files of one series
    if entry["format"] == "tif_stack":
        image, mask, numbers, outside = read_tif_stack(folder, int(entry["channel"]))
        spacing = (float("nan"), float("nan"), float("nan"))
        partial = np.flatnonzero(outside > TIF_OUTSIDE_MAX)
        if partial.size:
            lost = int(np.count_nonzero(mask[partial]))
            notes.append(f"excluded {partial.size} slices lying partly outside the registered sequence "
                         f"(slice numbers {numbers[partial].tolist()}, {lost} mask pixels on them)")
        excluded = {int(i) for i in partial}
        geometry = {"tif_stack": {"channel": int(entry["channel"]), "slice_numbers": numbers.tolist(),
                                  "layout": "stored pixel layout, assumed DICOM (see manifest notes)"}}
        notes.append(f"TIFF stack, RGB channel {entry['channel']}, {len(numbers)} slices by slice number")
    elif entry["format"] == "dicom":
        image, spacing, ids = read_dicom_series(image_path)
        geometry = {"dicom": ids}
        notes.append(f"DICOM read with the node's code (ordered by {ids['ordered_by']})")
        if mask_path is None:
            mask = np.zeros(image.shape, dtype=np.uint8)
            notes.append("no mask in the source (lesion-free): all-zero mask")
        else:
            mask_stack, _, geometry["mask_dicom"] = read_dicom_series(mask_path)
            if mask_stack.shape != image.shape:
                raise ValueError(f"{key}: DICOM mask {mask_stack.shape} does not match image {image.shape}")
            mask = (mask_stack > 0).astype(np.uint8)
    else:
        image_volume = read_volume(image_path)
        image, spacing = to_display_layout(image_volume)
        if mask_path is None:
            mask = np.zeros(image.shape, dtype=np.uint8)
            notes.append("no mask in the source (lesion-free): all-zero mask")
        else:
            mask_volume = read_volume(mask_path)
            if image_volume.data.shape != mask_volume.data.shape:
                raise ValueError(f"{key}: mask shape {mask_volume.data.shape} != image {image_volume.data.shape}")
            if not np.allclose(image_volume.affine, mask_volume.affine, atol=1e-3):
                raise ValueError(f"{key}: mask and image affines differ")
            mask_values, _ = to_display_layout(mask_volume)
            mask = _as_mask(mask_values, key)
        geometry = {"source_shape": list(image_volume.data.shape),
                    "source_axcodes": list(nib.aff2axcodes(image_volume.affine)),
                    "source_affine": np.round(image_volume.affine, 4).tolist()}
    if not entry.get("spacing_known", True):
        spacing = (float("nan"), float("nan"), float("nan"))
        notes.append("source spacing unknown: stored as NaN")
    flat = image.reshape(image.shape[0], -1)
    varying = np.flatnonzero(flat.max(axis=1) > flat.min(axis=1))
    constant = np.setdiff1d(np.arange(image.shape[0]), varying)
    if constant.size:
        lost = int(np.count_nonzero(mask[constant]))
        notes.append(f"dropped {constant.size} constant slices ({lost} mask voxels on them)")
    keep = np.array([i for i in varying if int(i) not in excluded], dtype=np.int64)
    positive = tuple(int(v) for v in entry["positive_labels"])
    info = {"geometry": geometry, "notes": notes, "dropped_constant_slices": int(constant.size),
            "dropped_partial_slices": int(varying.size - keep.size)}
    return Prepared(key, _as_image(image[keep]), mask[keep], spacing, keep.astype(np.int32), positive, info)


def summary(entry: dict[str, Any], prepared: Prepared) -> dict[str, Any]:
    lesion = prepared.lesion_slices
    present = sorted(int(v) for v in np.unique(prepared.mask))
    return {
        "key": prepared.key,
        "sequence": entry["sequence"],
        "layout": "axes (Z, H, W) toward patient (superior, posterior, left): DICOM axial, IOP [1,0,0,0,1,0]",
        "shape": list(prepared.image.shape),
        "image_dtype": str(prepared.image.dtype),
        "spacing_mm": [None if np.isnan(v) else round(v, 4) for v in prepared.spacing],
        "positive_labels": list(prepared.positive_labels),
        "mask_labels_present": present,
        "lesion_slices": lesion,
        "n_slices": int(prepared.image.shape[0]),
        "n_lesion_slices": len(lesion),
        "n_tumour_free_slices": int(prepared.image.shape[0]) - len(lesion),
        "lesion": bool(entry["lesion"]),
        "skull_stripped": bool(entry["skull_stripped"]),
        "findings": entry.get("findings"),
        **prepared.info,
        "manifest": entry,
    }


def save(out: Path, entry: dict[str, Any], prepared: Prepared) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / f"{prepared.key}.npz", image=prepared.image, mask=prepared.mask,
                        spacing=np.asarray(prepared.spacing, dtype=np.float64),
                        source_index=prepared.source_index)
    record = summary(entry, prepared)
    if bool(entry["lesion"]) != bool(record["n_lesion_slices"]):
        raise ValueError(f"{prepared.key}: manifest lesion={entry['lesion']} but "
                         f"{record['n_lesion_slices']} slices carry labels {list(prepared.positive_labels)}")
    (out / f"{prepared.key}.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    return record


# ---------------------------------------------------------------------------------------------- checks


def check_png(prepared: Prepared, index: int | None = None) -> np.ndarray:
    """One slice (the largest tumour cross-section by default) with the tumour outline in red, the
    other mask labels in yellow, and orientation letters; returns a BGR uint8 image."""
    positive = np.isin(prepared.mask, prepared.positive_labels)
    if index is None:
        areas = positive.sum(axis=(1, 2))
        index = int(areas.argmax()) if areas.any() else prepared.image.shape[0] // 2
    values = prepared.image[index].astype(np.float32)
    lo, hi = np.percentile(values, (0.5, 99.5))
    grey = np.clip((values - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    scale = max(1, 512 // max(grey.shape))
    size = (grey.shape[1] * scale, grey.shape[0] * scale)
    bgr = cv2.cvtColor(cv2.resize(grey, size, interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2BGR)
    for layer, colour in ((prepared.mask[index] > 0) & ~positive[index], (0, 255, 255)), \
                         (positive[index], (0, 0, 255)):
        big = cv2.resize(layer.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(bgr, contours, -1, colour, 1)
    h, w = bgr.shape[:2]
    for text, at in (("A", (w // 2, 16)), ("P", (w // 2, h - 6)), ("R", (4, h // 2)), ("L", (w - 14, h // 2))):
        cv2.putText(bgr, text, at, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1)
    cv2.putText(bgr, f"{prepared.key} z={index}/{prepared.image.shape[0]}", (4, 14),
                cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 0), 1)
    return bgr


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=None, help="series keys to prepare (default: all)")
    parser.add_argument("--checks", nargs="*", default=[], help="series keys to render a check PNG for")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sources = load_sources(MODEL)
    gathered, out = training_root() / MODEL, prepared_root() / MODEL
    totals = {"series": 0, "lesion_slices": 0, "tumour_free_slices": 0}
    for entry in sources["series"]:
        if args.only is not None and entry["key"] not in args.only:
            continue
        prepared = prepare_series(entry, gathered / entry["key"])
        record = save(out, entry, prepared)
        totals["series"] += 1
        totals["lesion_slices"] += record["n_lesion_slices"]
        totals["tumour_free_slices"] += record["n_tumour_free_slices"]
        log.info("series=%s sequence=%s shape=%s spacing=%s lesion_slices=%d", entry["key"], entry["sequence"],
                 record["shape"], record["spacing_mm"], record["n_lesion_slices"])
        if entry["key"] in args.checks:
            (out / CHECKS_DIR).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / CHECKS_DIR / f"{entry['key']}.png"), check_png(prepared))
    log.info("totals %s", totals)


if __name__ == "__main__":
    main()
