"""Deduplication and splits on the real Kaggle folders (needs $ONCONODE_DATA, not torch)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from training.datasets import (
    DedupReport,
    Record,
    carve_validation,
    deduplicate,
    load_splits,
    pixel_hash,
    scan,
)
from training.specs import BRAIN_MRI, CHEST_CT


@pytest.fixture(scope="module")
def chest(data_root: Path) -> tuple[list[Record], DedupReport]:
    return load_splits(CHEST_CT, data_root)


@pytest.fixture(scope="module")
def brain(data_root: Path) -> tuple[list[Record], DedupReport]:
    return load_splits(BRAIN_MRI, data_root)


def test_chest_dedup_matches_the_documented_groups_and_drops_the_conflict(
        chest: tuple[list[Record], DedupReport]) -> None:
    records, report = chest
    # shared/data/README.md: 1,000 images, 847 distinct, 59 groups, one with conflicting labels
    assert (report.images, report.groups, report.conflicting_groups) == (1000, 59, 1)
    assert len(records) == 847 - 1
    names = {r.path.name for r in records}
    assert "l4.jpg" not in names and "sq2.jpg" not in names


def test_no_pixel_identical_image_is_left_in_two_splits(chest: tuple[list[Record], DedupReport]) -> None:
    records, _ = chest
    hashes = [pixel_hash(r.path) for r in records]
    assert len(set(hashes)) == len(hashes)


def test_duplicates_keep_their_test_copy(tmp_path: Path) -> None:
    for split in ("train", "test"):
        (tmp_path / split / "a").mkdir(parents=True)
        Image.new("L", (4, 4), 7).save(tmp_path / split / "a" / "x.jpg")
    kept, report = deduplicate(scan(tmp_path, ("a",)))
    assert [r.split for r in kept] == ["test"] and report.removed == 1


def test_brain_dedup_matches_the_documented_groups(brain: tuple[list[Record], DedupReport]) -> None:
    records, report = brain
    # shared/data/README.md: 7,023 images, 6,597 distinct, 300 groups, none conflicting
    assert (report.images, report.groups, report.conflicting_groups, len(records)) == (7023, 300, 0, 6597)


def test_brain_validation_is_carved_stratified_and_seeded(brain: tuple[list[Record], DedupReport]) -> None:
    records, _ = brain
    kept = [Record(r.path, "train" if r.split == "valid" else r.split, r.label) for r in records]
    assert carve_validation(kept, BRAIN_MRI.validation_fraction, BRAIN_MRI.seed) == records
    for label in range(4):
        train = sum(r.split == "train" and r.label == label for r in records)
        valid = sum(r.split == "valid" and r.label == label for r in records)
        assert valid / (train + valid) == pytest.approx(BRAIN_MRI.validation_fraction, abs=0.01)


def test_carving_leaves_an_existing_valid_split_alone() -> None:
    records = [Record(Path("a"), "train", 0), Record(Path("b"), "valid", 0)]
    assert carve_validation(records, 0.5, 0) == records


def test_chest_validation_pools_train_and_valid_and_keeps_the_test_split(
        chest: tuple[list[Record], DedupReport], data_root: Path) -> None:
    records, _ = chest
    kept, _ = deduplicate(scan(data_root / "images" / CHEST_CT.dataset, CHEST_CT.class_names))
    assert CHEST_CT.pool_validation
    # test is exactly the deduplicated original test split; train + valid together are the original pool
    assert {r.path for r in records if r.split == "test"} == {r.path for r in kept if r.split == "test"}
    assert {r.path for r in records if r.split != "test"} == {r.path for r in kept if r.split != "test"}
    for label in range(4):
        train = sum(r.split == "train" and r.label == label for r in records)
        valid = sum(r.split == "valid" and r.label == label for r in records)
        assert valid / (train + valid) == pytest.approx(CHEST_CT.validation_fraction, abs=0.02)
    # larger than the original 65-image valid split, and reproducible
    assert sum(r.split == "valid" for r in records) > 2 * sum(r.split == "valid" for r in kept)
    assert load_splits(CHEST_CT, data_root)[0] == records
