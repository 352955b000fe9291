"""Fixtures for the training tests: torch (the [train] extra) or a clear skip."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def torch_available() -> None:
    pytest.importorskip("torch", reason="torch is not importable: install the [train] extra")
    pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch missing ([train] extra)")
