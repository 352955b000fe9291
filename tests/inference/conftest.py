"""Fixtures: the real DICOM data from $ONCONODE_DATA and the test-built ONNX models."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from onconode.config import RoutingRule
from onconode.models import RegisteredModel, load_registry
from tests.inference.tiny_model import write_model

REPO = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    return Path(os.environ.get("ONCONODE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def dicom_dir() -> Path:
    root = data_root() / "dicom"
    if not (root / "lidc-idri-0001").is_dir():
        pytest.skip(f"real DICOM test data not found at {root} (set ONCONODE_DATA)")
    return root


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    write_model(folder, "test-ct", "CT")
    write_model(folder, "test-mr", "MR")
    return folder


@pytest.fixture(scope="session")
def registry(models_dir: Path) -> dict[str, RegisteredModel]:
    return load_registry(models_dir)


@pytest.fixture(scope="session")
def rules() -> list[RoutingRule]:
    return [RoutingRule(name="ct", modality="CT", model="test-ct", target="lung", max_analysed_slices=8),
            RoutingRule(name="mr", modality="MR", model="test-mr", target="brain", max_analysed_slices=8)]


Edit = Callable[[pydicom.Dataset, int], None]


@pytest.fixture
def copy_series(tmp_path: Path) -> Callable[..., list[Path]]:
    """Copy real files into tmp_path, editing each header with ``edit(ds, index)`` when given."""

    def copy(sources: list[Path], folder: str = "series", edit: Edit | None = None) -> list[Path]:
        out = tmp_path / folder
        out.mkdir(parents=True, exist_ok=True)
        copies = []
        for index, src in enumerate(sources):
            dst = out / src.name
            if edit is None:
                shutil.copyfile(src, dst)
            else:
                ds = pydicom.dcmread(src)
                edit(ds, index)
                ds.save_as(dst)
            copies.append(dst)
        return copies

    return copy
