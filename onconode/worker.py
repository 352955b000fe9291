"""The worker: takes each QUEUED study through analysis, conclusion and reporting, and alone moves it
out of ANALYSING.

Input: studies in QUEUED (``onconode/state``) and their stored files. Output: a result row (with
the conclusion), overlay PNGs under ``storage.results``, the outputs in the outbox with their
delivery rows, and one of the transitions ANALYSING → REPORTED, NO_MODEL or FAILED.

If instances arrive while a study is being analysed, the store moves it back to RECEIVING; the
outbox then records nothing (the report would describe a study that no longer exists) and the
assembler queues the study again once it is complete.

Workers on several hosts share the queue: a study is claimed with a lease (``StateDB.claim_study``)
that a heartbeat renews while it is analysed, and the result, the report and the final transition
are recorded only under that lease. A worker that dies loses the study to another once its lease
expires; a worker that was taken over records nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from onconode.background import PollingLoop
from onconode.conclusion import Conclusion, conclude
from onconode.config import RoutingRule
from onconode.dicom_node.storage import InstanceStorage
from onconode.durable import prefetch
from onconode.events import Event, log_event
from onconode.fhir.report import Destination
from onconode.inference.pipeline import AnalysisResult, Outcome, analyze_study
from onconode.inference.runner import RunnerPool
from onconode.models import RegisteredModel
from onconode.reporting.checks import OutputCheckError
from onconode.reporting.outbox import Outbox
from onconode.reporting.outputs import build_outputs, fingerprint, read_header
from onconode.reporting.png import write_overlays
from onconode.selection.volume import PixelDecodeError
from onconode.state import Claim, StateDB, StateError, StudyState
from onconode.state.heartbeat import Heartbeat
from onconode.values import unquoted

log = logging.getLogger(__name__)


class Worker(PollingLoop):
    name = "worker"

    def __init__(self, db: StateDB, storage: InstanceStorage, results_root: Path,
                 registry: Mapping[str, RegisteredModel], rules: Sequence[RoutingRule], runners: RunnerPool,
                 poll_seconds: float, outbox: Outbox | None = None, fhir: Destination | None = None,
                 lease_seconds: float = 30) -> None:
        super().__init__(poll_seconds)
        self._lease_seconds = lease_seconds
        self._db = db
        self._storage = storage
        self._results_root = results_root
        self._registry = registry
        self._rules = rules
        self._runners = runners
        self._outbox = outbox
        self._fhir = fhir

    def run_once(self) -> str | None:
        """Analyse the longest-waiting queued study (or one whose lease expired), if any; returns its UID."""
        claim = self._db.claim_study(self._lease_seconds)
        if claim is None:
            return None
        study_uid = claim.study_uid
        with Heartbeat(lambda: self._renew(claim), self._lease_seconds / 3, what=f"study {study_uid}"):
            try:
                self._analyse(study_uid)
            except StateError:
                raise
            except Exception:  # a bug in one study must not stop the others: fail it, log the traceback once
                log.exception("event=worker_error study=%s", study_uid)
                self._fail(study_uid, "internal error during analysis (see the node log)")
        return study_uid

    def _renew(self, claim: Claim) -> bool:
        return self._db.renew_study_lease(claim, self._lease_seconds)

    def _fail(self, study_uid: str, reason: str) -> None:
        self._db.transition(study_uid, StudyState.FAILED, reason, expect=[StudyState.ANALYSING])

    def _analyse(self, study_uid: str) -> None:
        paths = [self._storage.path_for(i.identity) for i in self._db.instances(study_uid)]
        started = time.perf_counter()
        prefetch(paths)  # received files left the page cache once durable
        try:
            result = analyze_study(paths, self._registry, self._rules, self._runners)
        except (PixelDecodeError, ValueError) as err:  # a decoder's message may quote a data set's value
            self._fail(study_uid, f"analysis: {unquoted(str(err))}")
            return
        overlays = write_overlays(result, self._results_root / study_uid)
        conclusion = conclude(result, self._registry[result.model].manifest) \
            if result.outcome is Outcome.ANALYSED and result.model else None
        timings = dict(result.timings_ms) | {"analysis_total": (time.perf_counter() - started) * 1000}
        if not self._db.add_result(study_uid, result.summary() | {
                "overlays": [p.name for p in overlays], "timings_ms": timings,
                "conclusion": conclusion.to_dict() if conclusion else None}):
            # Taken over by another worker, or reopened by a new instance: the study is not ours to record.
            log_event(log, Event.ANALYSED, study=study_uid, outcome="discarded",
                      reason="no longer analysed under this worker's lease")
            return
        log_event(log, Event.ANALYSED, study=study_uid, outcome=result.outcome.value, model=result.model,
                  positive=result.positive, ms=round(timings["analysis_total"]))
        if conclusion is None:
            self._db.transition(study_uid, StudyState.NO_MODEL, result.reason, expect=[StudyState.ANALYSING])
            return
        if self._outbox is None:
            self._db.transition(study_uid, StudyState.REPORTED, conclusion.headline(), expect=[StudyState.ANALYSING])
            return
        self._report(study_uid, result, conclusion, paths)

    def _report(self, study_uid: str, result: AnalysisResult, conclusion: Conclusion, paths: list[Path]) -> None:
        assert self._outbox is not None
        manifest = self._registry[conclusion.algorithm.name].manifest
        if self._outbox.unchanged(fingerprint(manifest, paths), study_uid):
            self._db.transition(study_uid, StudyState.REPORTED, f"{conclusion.headline()} (report unchanged)",
                                expect=[StudyState.ANALYSING])
            return
        previous = self._db.latest_report(study_uid)
        predecessor = read_header(previous.sr_path) if previous is not None and previous.sr_path.is_file() else None
        try:
            outputs = build_outputs(conclusion, result, paths, manifest, self._db.node_id(), predecessor, self._fhir)
            self._outbox.record(outputs, conclusion.headline())
        except (OutputCheckError, ValueError, OSError) as err:
            # OncoNode's own checks name no value; a library's message may quote one from the data set.
            reason = str(err).splitlines()[0] if isinstance(err, OutputCheckError) else unquoted(str(err))
            log_event(log, Event.REPORT_PREPARED, logging.WARNING, study=study_uid, status="failed", reason=reason)
            self._fail(study_uid, f"reporting: {reason}")

    def step(self) -> bool:
        return self.run_once() is not None
