"""Fixtures for the training tests: real data from $ONCONODE_DATA and torch, or a clear skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = Path(os.environ.get("ONCONODE_DATA", "../shared/data"))
    if not (root / "images").is_dir():
        pytest.skip(f"training data not found at {root} (set ONCONODE_DATA)")
    return root


@pytest.fixture(scope="session")
def torch_available() -> None:
    pytest.importorskip("torch", reason="torch is not importable: install the [train] extra")
    pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch missing ([train] extra)")
