"""The start's rehearsal: it runs the real inference and reporting code on a synthetic series,
leaves nothing behind, and a failure in it is logged, never raised."""

from __future__ import annotations

import gc
import logging
import tempfile
from pathlib import Path
from typing import Any

import pytest

from onconode import rehearsal
from onconode.inference.runner import RunnerPool
from onconode.models import RegisteredModel
from onconode.reporting import outputs
from tests.inference.conftest import models_dir, registry  # noqa: F401  (fixtures)


def test_every_model_gets_a_session_and_each_modality_a_full_report(
        registry: dict[str, RegisteredModel], monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    built: list[outputs.Outputs] = []
    real = outputs.build_outputs

    def recording(*args: Any, **kwargs: Any) -> outputs.Outputs:  # the real build, its result kept for the assertions
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(rehearsal, "build_outputs", recording)
    runners = RunnerPool(intra_op_threads=1)
    with caplog.at_level(logging.INFO, logger="onconode.rehearsal"):
        rehearsal.rehearse(registry, runners)
    assert set(runners.runners) == set(registry)
    modalities = {m.manifest.modality for m in registry.values()}
    assert len(built) == len(modalities)
    for result in built:
        names = {f.name for f in result.files}
        assert {"sr.dcm", "kos.dcm", "seg.dcm", outputs.FHIR_FILE} <= names
        assert any(name.startswith("sc-") for name in names)
    assert "event=rehearsed" in caplog.text and "rehearsal_failed" not in caplog.text
    assert list(tmp_path.iterdir()) == []  # the synthetic series is gone


def test_a_failing_rehearsal_is_logged_not_raised(
        registry: dict[str, RegisteredModel], monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: Any, **kwargs: Any) -> outputs.Outputs:
        raise RuntimeError("disk full")

    monkeypatch.setattr(rehearsal, "build_outputs", broken)
    with caplog.at_level(logging.INFO, logger="onconode.rehearsal"):
        rehearsal.rehearse(registry, RunnerPool(intra_op_threads=1))
    assert caplog.text.count("event=rehearsal_failed") == len(registry)
    assert "event=rehearsed" in caplog.text


def test_the_start_freezes_the_heap_it_built_after_the_rehearsal(
        registry: dict[str, RegisteredModel], caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    gc.unfreeze()
    try:
        with caplog.at_level(logging.INFO, logger="onconode.rehearsal"):
            rehearsal.warm_up(registry, RunnerPool(intra_op_threads=1))
        assert gc.get_freeze_count() > 0
        assert "event=rehearsed" in caplog.text and "event=heap_frozen" in caplog.text
        # Garbage made after the freeze is still collected.
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
