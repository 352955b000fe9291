"""The running node: state, storage, recovery, models, the DICOM listener, the assembler, the worker,
the dispatcher and the API, each started only for the roles this process has.

This is where the pieces are wired together for ``onconode serve``; each piece stays usable on its
own (tests start exactly the parts they need). Roles (``config.Role``): ``receive`` runs the
listener and start-up recovery of the storage, ``analyse`` the worker, ``deliver`` the dispatcher,
``api`` the HTTP API; the assembler runs with ``receive`` or ``analyse``, in one process at a time
(its leader lease). Every role first checks that it sees the storage its database was set up with
(``state/shared_storage.py``).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Mapping
from types import FrameType

from onconode.api.server import ApiServer
from onconode.audit import AuditLog
from onconode.config import Role, Settings
from onconode.delivery import dispatcher
from onconode.delivery.dispatcher import Dispatcher
from onconode.dicom_node.assembler import Assembler, counters_for
from onconode.dicom_node.listener import Listener
from onconode.dicom_node.receivers import ReceiverPool
from onconode.dicom_node.recovery import recover
from onconode.dicom_node.scp import StorageSCP
from onconode.dicom_node.storage import InstanceStorage
from onconode.dicom_node.tls import listener_context
from onconode.events import Event, log_event
from onconode.inference.runner import RunnerPool
from onconode.models import ModelError, RegisteredModel, installed_models
from onconode.rehearsal import warm_up
from onconode.reporting.outbox import Outbox
from onconode.reporting.outputs import destination_for
from onconode.state import Delivery, open_state
from onconode.state.shared_storage import check_shared_storage
from onconode.values import AssociationSummary
from onconode.worker import Worker

log = logging.getLogger(__name__)


class Node:
    def __init__(self, settings: Settings) -> None:
        """Open the state, check the shared storage and build the parts of the configured roles.

        Raises
        ------
        StateError
            When the database cannot be reached or migrated.
        StorageMismatch
            When the storage root is not the one the database was set up with.
        ModelError, TLSError
            When a model (analyse) or the TLS configuration (receive) is broken.
        """
        self.settings = settings
        self.roles = frozenset(settings.roles)
        self.db = open_state(settings.state)
        try:
            check_shared_storage(self.db, settings.storage.root)
            self._build()
        except BaseException:
            self.db.close()
            raise

    def _build(self) -> None:
        settings, roles = self.settings, self.roles
        lease = settings.state.lease_seconds
        self.storage = InstanceStorage.from_settings(settings.storage)
        self.scp: Listener | None = None
        if Role.RECEIVE in roles:
            # Built here in either case, so that a bad certificate stops the start before anything
            # listens; receiver processes build their own from the same settings.
            ssl_context = listener_context(settings.tls)
            self.scp = (StorageSCP(settings.node, settings.callers, self.storage, self.db, ssl_context,
                                   settle_seconds=settings.study.settle_seconds)
                        if settings.node.receiver_processes == 1 else ReceiverPool(settings, self.db.notify))
        self._wire_operations()
        self.assembler = (Assembler(self.db, settings.study.stable_seconds, settings.study.poll_seconds, lease,
                                    counters_for(settings.callers, settings.node.ae_title))
                          if roles & {Role.RECEIVE, Role.ANALYSE} else None)
        self.models: Mapping[str, RegisteredModel] = {}
        self.models_note: str | None = None
        self.worker: Worker | None = None
        self._rehearsal: threading.Thread | None = None
        if Role.ANALYSE in roles:
            # Models are checked before anything listens: a broken model stops the start (ModelError).
            self.models, self.models_note = installed_models(settings.analysis.models)
            outbox = Outbox(self.db, settings.delivery.outbox, settings.destinations, settings.callers)
            runners, fhir = RunnerPool(settings.analysis.intra_op_threads), destination_for(settings.destinations.fhir)
            self.worker = Worker(self.db, self.storage, settings.storage.results, self.models, settings.routing,
                                 runners, settings.study.poll_seconds, outbox=outbox, fhir=fhir, lease_seconds=lease)
            self._rehearsal = threading.Thread(target=warm_up, args=(self.models, runners, fhir),
                                               name="onconode-rehearsal", daemon=True)
        elif Role.API in roles:
            self.models, self.models_note = _listed_models(settings)
        self.dispatcher: Dispatcher | None = None
        if Role.DELIVER in roles:
            self.dispatcher = dispatcher.from_settings(settings, self.db)
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
            if self.scp is not None:
                self.scp.add_association_listener(self._audit_association)
        self.metrics = NodeMetrics(self.db)
        if self.scp is not None:
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

        if not self.settings.api.enabled or Role.API not in self.roles:
            return
        scp = self.scp
        # Without the receive role the listener is another process's, on another host perhaps: this
        # process's readiness is its own (models folder, storage, database), not the listener's.
        listening = (lambda: scp.listening) if scp is not None else (lambda: True)
        runtime = Runtime(self.db, self.metrics, self.models, self.models_note, listening)
        self.api = ApiServer(self.settings, runtime)
        self.api.start()

    def start(self) -> None:
        """Start every part; if one fails (e.g. the API port is taken), stop those started and raise."""
        # A lease held by a process of this host that no longer runs (this node before a crash) is
        # free now: its studies and deliveries are taken up without waiting for the lease to expire.
        self.db.expire_leases_of_gone_holders()
        if self.scp is not None:
            recover(self.storage, self.db, self.settings.node.max_dataset_bytes)
        if self.models_note and self.worker is not None:
            log_event(log, Event.MODELS, level=logging.WARNING, note=self.models_note)
        try:
            if self.assembler is not None:
                self.assembler.start()
            if self.worker is not None and self._rehearsal is not None:
                self._rehearsal.start()
                self.worker.start()
            if self.dispatcher is not None:
                self.dispatcher.start()
            if self.scp is not None:
                self.scp.start()
            self._start_api()
        except BaseException:
            self.stop()
            raise
        node = self.settings.node
        log_event(log, Event.NODE_STARTED, roles=",".join(r.value for r in Role if r in self.roles),
                  ae_title=node.ae_title, host=node.host, port=self.scp.port if self.scp else None,
                  tls=self.settings.tls.enabled, storage=self.settings.storage.root, state=self.db.where,
                  callers=len(self.settings.callers) or "any", models=",".join(sorted(self.models)) or "none",
                  api=f"{self.settings.api.host}:{self.api.port}" if self.api else "off")

    def stop(self) -> None:
        if self.api is not None:
            self.api.stop()
        if self.scp is not None:
            self.scp.stop()
        for loop in (self.assembler, self.worker, self.dispatcher):
            if loop is not None:
                loop.stop()
        if self._rehearsal is not None and self._rehearsal.is_alive():
            # Exiting while this thread is inside an extension module's import aborts the process.
            self._rehearsal.join()
        self.db.close()
        log_event(log, Event.NODE_STOPPED)


def _listed_models(settings: Settings) -> tuple[dict[str, RegisteredModel], str | None]:
    """The models an API-only process lists (``GET /models``); a broken one is a note, not a stop:
    the analyse role, which runs them, refuses to start on it."""
    try:
        return installed_models(settings.analysis.models)
    except ModelError as err:
        return {}, str(err)


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
