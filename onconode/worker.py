"""The worker: takes each QUEUED study through analysis (and reporting, once a reporter is wired).

Input: studies in QUEUED (``onconode/state``) and their stored files. Output: a result row, overlay PNGs
under ``storage.results``, and the transitions ANALYSING → REPORTED, NO_MODEL or FAILED.

If instances arrive while a study is being analysed, the store moves it back to RECEIVING; the
worker's final transition then finds it no longer ANALYSING and leaves it alone, so the stale result
is superseded by the analysis of the complete study (the assembler queues it again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from onconode.background import PollingLoop
from onconode.config import RoutingRule
from onconode.dicom_node.storage import InstanceStorage
from onconode.events import Event, log_event
from onconode.inference.heatmap_png import write_overlays
from onconode.inference.models import RegisteredModel
from onconode.inference.pipeline import AnalysisResult, Outcome, analyze_study
from onconode.inference.runner import RunnerPool
from onconode.inference.volume import PixelDecodeError
from onconode.state import StateDB, StateError, StudyState

log = logging.getLogger(__name__)

# The reporting stage: builds and queues the outputs of one analysed study (issue 4 wires it).
Reporter = Callable[[str, AnalysisResult, Sequence[Path]], None]


class Worker(PollingLoop):
    name = "worker"

    def __init__(self, db: StateDB, storage: InstanceStorage, results_root: Path,
                 registry: Mapping[str, RegisteredModel], rules: Sequence[RoutingRule], runners: RunnerPool,
                 poll_seconds: float, report: Reporter | None = None) -> None:
        super().__init__(poll_seconds)
        self._db = db
        self._storage = storage
        self._results_root = results_root
        self._registry = registry
        self._rules = rules
        self._runners = runners
        self._report = report

    def run_once(self) -> str | None:
        """Analyse the longest-waiting queued study, if any; returns its UID."""
        study_uid = self._db.claim_queued()
        if study_uid is None:
            return None
        try:
            self._analyse(study_uid)
        except StateError:
            raise
        except Exception:  # a bug in one study must not stop the others: fail it, log the traceback once
            log.exception("event=worker_error study=%s", study_uid)
            self._db.transition(study_uid, StudyState.FAILED, "internal error during analysis (see the node log)",
                                expect=[StudyState.ANALYSING])
        return study_uid

    def _analyse(self, study_uid: str) -> None:
        paths = [self._storage.path_for(i.identity) for i in self._db.instances(study_uid)]
        started = time.perf_counter()
        try:
            result = analyze_study(paths, self._registry, self._rules, self._runners)
        except (PixelDecodeError, ValueError) as err:
            self._db.transition(study_uid, StudyState.FAILED, f"analysis: {err}", expect=[StudyState.ANALYSING])
            return
        overlays = write_overlays(result, self._results_root / study_uid)
        timings = dict(result.timings_ms) | {"analysis_total": (time.perf_counter() - started) * 1000}
        self._db.add_result(study_uid, result.summary() | {
            "overlays": [p.name for p in overlays], "timings_ms": timings})
        log_event(log, Event.ANALYSED, study=study_uid, outcome=result.outcome.value, model=result.model,
                  positive=result.positive, ms=round(timings["analysis_total"]))
        if result.outcome is Outcome.NO_APPLICABLE_MODEL:
            self._db.transition(study_uid, StudyState.NO_MODEL, result.reason, expect=[StudyState.ANALYSING])
            return
        if self._report is not None:
            self._report(study_uid, result, paths)
        self._db.transition(study_uid, StudyState.REPORTED, _conclusion(result), expect=[StudyState.ANALYSING])

    def step(self) -> bool:
        return self.run_once() is not None


def _conclusion(result: AnalysisResult) -> str:
    verdict = "positive" if result.positive else "negative"
    return (f"{result.model} {result.model_version}: {verdict}, {result.predicted_label} "
            f"(p={result.positive_probability:.2f}, threshold {result.threshold})")
