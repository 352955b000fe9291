"""The running node: state, storage, recovery, models, the DICOM listener, the assembler, the worker.

This is where the pieces are wired together for ``onconode serve``; each piece stays usable on its
own (tests start exactly the parts they need).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from onconode.api.server import ApiServer
from onconode.audit import AuditLog
from onconode.config import Settings
from onconode.delivery import dispatcher
from onconode.dicom_node.assembler import Assembler
from onconode.dicom_node.associations import AssociationSummary
from onconode.dicom_node.listener import Listener
from onconode.dicom_node.receivers import ReceiverPool
from onconode.dicom_node.recovery import recover
from onconode.dicom_node.scp import StorageSCP
from onconode.dicom_node.storage import InstanceStorage
from onconode.dicom_node.tls import listener_context
from onconode.events import Event, log_event
from onconode.inference.runner import RunnerPool
from onconode.models import installed_models
from onconode.reporting.outbox import Outbox
from onconode.reporting.outputs import destination_for, warm_up
from onconode.state import Delivery, StateDB
from onconode.worker import Worker

log = logging.getLogger(__name__)


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = StateDB(settings.state.database)
        self.storage = InstanceStorage.from_settings(settings.storage)
        # Built here in either case, so that a bad certificate stops the start before anything listens;
        # receiver processes build their own from the same settings.
        ssl_context = listener_context(settings.tls)
        self.scp: Listener = (
            StorageSCP(settings.node, settings.callers, self.storage, self.db, ssl_context)
            if settings.node.receiver_processes == 1 else ReceiverPool(settings, self.db.notify))
        self._wire_operations()
        self.assembler = Assembler(self.db, settings.study.stable_seconds, settings.study.poll_seconds)
        # Models are checked before anything listens: a broken model stops the start (ModelError).
        self.models, self.models_note = installed_models(settings.analysis.models)
        outbox = Outbox(self.db, settings.delivery.outbox, settings.destinations, settings.callers)
        self.worker = Worker(self.db, self.storage, settings.storage.results, self.models, settings.routing,
                             RunnerPool(settings.analysis.intra_op_threads), settings.study.poll_seconds,
                             outbox=outbox, fhir=destination_for(settings.destinations.fhir))
        self.dispatcher = dispatcher.from_settings(settings, self.db)
        self._warm_up = threading.Thread(target=warm_up, name="onconode-warm-up", daemon=True)
        self.dispatcher.add_outcome_listener(self.metrics.on_delivery)
        if self.audit is not None:
            self.dispatcher.add_outcome_listener(self._audit_delivery)

    def _wire_operations(self) -> None:
        """Audit trail, metrics and the HTTP API: listeners on the state and the listener."""
        from onconode.api.metrics import NodeMetrics

        audit = self.settings.audit
        self.audit = AuditLog(audit.path) if audit.path else None
        if self.audit is not None:
            self.db.add_transition_listener(self.audit.transition)
            self.scp.add_association_listener(self._audit_association)
        self.metrics = NodeMetrics(self.db)
        self.scp.add_association_listener(self.metrics.on_association)
        self.api: ApiServer | None = None

    def _audit_association(self, s: AssociationSummary) -> None:
        assert self.audit is not None
        self.audit.association(calling_ae=s.calling_ae, host=s.host, outcome=s.outcome, reason=s.reason,
                               instances=s.instances, bytes_received=s.bytes, failures=s.failures, ms=s.ms)

    def _audit_delivery(self, delivery: Delivery, outcome: str, error: str | None) -> None:
        assert self.audit is not None
        self.audit.delivery(study_uid=delivery.study_uid, destination=delivery.destination,
                            object_name=delivery.path.name, outcome=outcome, attempt=delivery.attempts + 1,
                            error=error)

    def _start_api(self) -> None:
        from onconode.api.app import Runtime

        if not self.settings.api.enabled:
            return
        runtime = Runtime(self.db, self.metrics, self.models, self.models_note, lambda: self.scp.listening)
        self.api = ApiServer(self.settings, runtime)
        self.api.start()

    def start(self) -> None:
        """Start every part; if one fails (e.g. the API port is taken), stop those started and raise."""
        recover(self.storage, self.db, self.settings.node.max_dataset_bytes)
        if self.models_note:
            log_event(log, Event.MODELS, level=logging.WARNING, note=self.models_note)
        try:
            self.assembler.start()
            self._warm_up.start()
            self.worker.start()
            self.dispatcher.start()
            self.scp.start()
            self._start_api()
        except BaseException:
            self.stop()
            raise
        node = self.settings.node
        log_event(log, Event.NODE_STARTED, ae_title=node.ae_title, host=node.host, port=self.scp.port,
                  tls=self.settings.tls.enabled, storage=self.settings.storage.root,
                  callers=len(self.settings.callers) or "any", models=",".join(sorted(self.models)) or "none",
                  api=f"{self.settings.api.host}:{self.api.port}" if self.api else "off")

    def stop(self) -> None:
        if self.api is not None:
            self.api.stop()
        self.scp.stop()
        self.assembler.stop()
        self.worker.stop()
        self.dispatcher.stop()
        if self._warm_up.is_alive():
            # Exiting while this thread is inside an extension module's import aborts the process.
            self._warm_up.join()
        self.db.close()
        log_event(log, Event.NODE_STOPPED)


def serve_forever(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then close the listener and the database cleanly."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    node = Node(settings)
    node.start()
    stop.wait()
    node.stop()
