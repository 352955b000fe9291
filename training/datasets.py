"""Kaggle image folders to deduplicated, split, preprocessed arrays.

Input: ``$ONCONODE_DATA/images/<dataset>/<split>/<class>/*.jpg``. Output: ``Split`` records and
float16 arrays (N, C, h, w) made by the node's own ``to_model_input``.

Why dedup comes first: both Kaggle sets hold exact copies across train/valid/test (see
shared/data/README.md), which leaks test images into training and inflates every metric. Copies are
found by hashing the decoded pixels; each group keeps one image, in the most held-out split it
appears in (test, then valid, then train) so the test set loses nothing it did not share. A group
whose copies carry different labels cannot be trusted and is dropped entirely.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from onconode.inference.preprocess import to_model_input
from training.specs import ModelSpec

log = logging.getLogger(__name__)

SPLIT_PRIORITY = ("test", "valid", "train")  # a duplicate group keeps its copy in the first split found


@dataclass(frozen=True)
class Record:
    path: Path
    split: str
    label: int


@dataclass(frozen=True)
class DedupReport:
    images: int
    groups: int                 # duplicate groups (two or more identical images)
    removed: int                # images removed as redundant copies
    conflicting_groups: int     # groups dropped because their copies disagree on the label
    conflicting_images: int


def data_root() -> Path:
    """``$ONCONODE_DATA``, else ``../shared/data`` relative to the working directory."""
    return Path(os.environ.get("ONCONODE_DATA", "../shared/data"))


def scan(root: Path, class_names: tuple[str, ...]) -> list[Record]:
    """Every image under ``root/<split>/<class>/``, in a stable (sorted) order."""
    records = []
    for split in SPLIT_PRIORITY:
        for label, name in enumerate(class_names):
            folder = root / split / name
            records += [Record(p, split, label) for p in sorted(folder.glob("*.jpg"))]
    if not records:
        raise FileNotFoundError(f"no images under {root}/<split>/<class>/")
    return records


def pixel_hash(path: Path) -> str:
    """SHA-256 over the decoded pixels (mode and size included), not the file bytes."""
    with Image.open(path) as image:
        image.load()
        header = f"{image.mode}:{image.size}".encode()
        return hashlib.sha256(header + image.tobytes()).hexdigest()


def deduplicate(records: list[Record]) -> tuple[list[Record], DedupReport]:
    """One image per pixel-identical group, in the most held-out split; conflicting groups dropped."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        groups[pixel_hash(record.path)].append(record)
    kept: list[Record] = []
    conflicting = conflicting_images = duplicate_groups = 0
    for members in groups.values():
        if len(members) > 1:
            duplicate_groups += 1
        if len({m.label for m in members}) > 1:
            conflicting += 1
            conflicting_images += len(members)
            continue
        kept.append(min(members, key=lambda m: (SPLIT_PRIORITY.index(m.split), str(m.path))))
    kept.sort(key=lambda r: (SPLIT_PRIORITY.index(r.split), r.label, str(r.path)))
    report = DedupReport(images=len(records), groups=duplicate_groups,
                         removed=len(records) - len(kept) - conflicting_images,
                         conflicting_groups=conflicting, conflicting_images=conflicting_images)
    return kept, report


def carve_validation(records: list[Record], fraction: float, seed: int) -> list[Record]:
    """Move a seeded, per-class ``fraction`` of ``train`` into ``valid`` when there is no valid split."""
    if any(r.split == "valid" for r in records):
        return records
    rng = np.random.default_rng(seed)
    by_label: dict[int, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        if record.split == "train":
            by_label[record.label].append(index)
    chosen: set[int] = set()
    for label in sorted(by_label):
        indices = by_label[label]
        count = round(len(indices) * fraction)
        chosen.update(int(i) for i in rng.choice(indices, size=count, replace=False))
    return [Record(r.path, "valid", r.label) if i in chosen else r for i, r in enumerate(records)]


def split_sizes(records: list[Record], class_names: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """{split: {class: count}} for the card."""
    sizes: dict[str, dict[str, int]] = {s: {c: 0 for c in class_names} for s in ("train", "valid", "test")}
    for record in records:
        sizes[record.split][class_names[record.label]] += 1
    return sizes


def load_unit(path: Path) -> np.ndarray:
    """The stored 8-bit image as grayscale float32 (H, W) in [0, 1].

    Converting to grayscale removes the coloured marks that only some classes carry; the Kaggle
    images are already windowed, so /255 is their intensity scaling.
    """
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def prepare(records: list[Record], spec: ModelSpec, size: tuple[int, int]) -> np.ndarray:
    """float16 (N, 3, h, w): each image through the node's ``to_model_input``."""
    out = np.empty((len(records), 3, *size), dtype=np.float16)
    for index, record in enumerate(records):
        out[index], _ = to_model_input(load_unit(record.path), spec.preprocess, size, 3)
    return out


def cached_arrays(records: list[Record], spec: ModelSpec, size: tuple[int, int], cache: Path) -> np.ndarray:
    """``prepare``, memoised on disk by record list, preprocessing and size (decoding is the slow part)."""
    key = hashlib.sha256(repr(([str(r.path) for r in records], spec.preprocess, size)).encode()).hexdigest()[:16]
    path = cache / f"{spec.name}-{size[0]}x{size[1]}-{key}.npy"
    if path.is_file():
        return np.load(path)
    arrays = prepare(records, spec, size)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, arrays)
    log.info("cached %d images to %s", len(records), path)
    return arrays


def load_splits(spec: ModelSpec, root: Path | None = None) -> tuple[list[Record], DedupReport]:
    """Scan, deduplicate, then carve validation: the records every later step uses.

    With ``spec.pool_validation`` the original valid split is first merged into train, so that the
    carved validation split can be larger than the one the dataset ships. Test is never touched.
    """
    folder = (root or data_root()) / "images" / spec.dataset
    kept, report = deduplicate(scan(folder, spec.class_names))
    if spec.pool_validation:
        kept = [Record(r.path, "train", r.label) if r.split == "valid" else r for r in kept]
    return carve_validation(kept, spec.validation_fraction, spec.seed), report
