"""The DICOM listener of one process: association policy, C-ECHO and C-STORE (receive → store).

Input: connections from PACS and modalities, accepted on the node's port or handed over by the
node (``receivers.py``). Output: durable files and index rows (``store.py``); one log line and one
summary per association (``associations.py``), one log line per refused instance.

The acceptor (``acceptor/``, the fast path or stock pynetdicom per ``node.fast_ingest``) reads each
connection through the guard; this module answers what the guard asks (admission: the caller
policy and the association slots) and what pynetdicom's events report. The C-STORE handler never
raises and answers the status ``store_instance`` returns.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event as DicomEvent

from onconode.config import Caller, NodeSettings
from onconode.dicom_node.acceptor import (
    AcceptorServer,
    AdoptingServer,
    ConnectionRules,
    Limits,
    Refusal,
    make_server,
)
from onconode.dicom_node.acceptor.pdu_guard import Admit
from onconode.dicom_node.allocator import retain_freed_buffers
from onconode.dicom_node.associations import AssociationBook
from onconode.dicom_node.policy import AssociationSlots, CallerPolicy, Rejection, local_limit
from onconode.dicom_node.sop_classes import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES, VERIFICATION
from onconode.dicom_node.storage import InstanceStorage
from onconode.dicom_node.store import StoreRequest, StoreResources, store_instance
from onconode.state import StateDB
from onconode.values import AssociationListener, AssociationSummary

log = logging.getLogger(__name__)

# pynetdicom's own association limit counts association threads, including those still winding
# down after their connection closed; node.max_associations is enforced on A-ASSOCIATE-RQs by the
# guard (policy.AssociationSlots), so pynetdicom's is only a ceiling on threads.
_PYNETDICOM_ASSOCIATION_CEILING = 1024


def make_ae(settings: NodeSettings) -> AE:
    """The AE the listener serves: our AE title, timeouts, PDU size and accepted contexts."""
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_associations = _PYNETDICOM_ASSOCIATION_CEILING
    ae.maximum_pdu_size = settings.max_pdu_bytes
    ae.network_timeout = settings.network_timeout_seconds
    ae.dimse_timeout = settings.network_timeout_seconds
    # ARTIM: from the connection to its A-ASSOCIATE-RQ, and after an abort or a rejection.
    ae.acse_timeout = settings.handshake_timeout_seconds
    ae.add_supported_context(VERIFICATION)
    for sop_class in sorted(STORAGE_SOP_CLASSES):
        ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
    return ae


class StorageSCP:
    """A ``Listener`` serving associations in this process; ``start()`` returns once it accepts
    connections, ``stop()`` closes it. With receiver processes each runs one, adopting the
    connections the node hands over (``start_adopting``, ``adopt``), and ``slots`` is shared."""

    def __init__(self, settings: NodeSettings, callers: list[Caller], storage: InstanceStorage, db: StateDB,
                 ssl_context: ssl.SSLContext | None = None, slots: AssociationSlots | None = None,
                 settle_seconds: float | None = None) -> None:
        """``settle_seconds``: a released association completes the studies it delivered this long
        after (a caller's own ``settle_seconds`` first); None: a release is no signal."""
        self._settings = settings
        self._db = db
        self._settle = {c.ae_title: c.settle_seconds for c in callers if c.settle_seconds is not None}
        self._default_settle = settle_seconds
        self._storage = storage
        self._policy = CallerPolicy(settings.ae_title, tuple(callers), settings.max_associations)
        self._slots = slots or AssociationSlots(settings.max_associations, [0])
        self._book = AssociationBook(self._slots)
        self._hashing = ThreadPoolExecutor(settings.max_associations, thread_name_prefix="onconode-hash")
        self._resources = StoreResources(storage, db, self._hashing, settings.max_dataset_bytes)
        self._rules = ConnectionRules(Limits(settings.max_pdu_bytes, settings.max_dataset_bytes),
                                      settings.handshake_timeout_seconds, settings.network_timeout_seconds,
                                      ssl_context)
        self._ae = make_ae(settings)
        self._server: AcceptorServer | None = None
        self._serving = threading.Event()
        self._book.listeners.append(self._note_release)

    def _note_release(self, summary: AssociationSummary) -> None:
        """A released association is the sender's "that was all" for the studies it delivered."""
        settle = self._settle.get(summary.calling_ae, self._default_settle)
        if summary.outcome == "released" and summary.study_uids and settle is not None:
            self._db.association_released(summary.study_uids, time.time(), settle, summary.calling_ae)

    def add_association_listener(self, listener: AssociationListener) -> None:
        """Call ``listener(summary)`` after each association's connection closes."""
        self._book.listeners.append(listener)

    @property
    def listening(self) -> bool:
        return self._serving.is_set()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Listen on the configured address and serve every association in this process."""
        server = self._make_server((self._settings.host, self._settings.port))
        threading.Thread(target=server.serve_forever, name="onconode-scp", daemon=True).start()
        self._server = server
        self._serving.set()

    def start_adopting(self) -> None:
        """Serve connections accepted elsewhere and handed over by ``adopt`` (a receiver process,
        ``receivers.py``); nothing listens here."""
        self._server = self._make_server(None)
        self._serving.set()

    def adopt(self, connection: socket.socket) -> None:
        """Serve an accepted connection as if this listener had accepted it."""
        try:
            host, port = connection.getpeername()[:2]
        except OSError as err:  # the caller has gone already
            connection.close()
            self.ended_early("-", 0, Refusal("failed", b"", type(err).__name__))
            return
        cast(AdoptingServer, self._server).adopt(connection, (str(host), int(port)))

    def _make_server(self, address: tuple[str, int] | None) -> AcceptorServer:
        if not retain_freed_buffers():
            log.info("event=allocator note=\"mallopt unavailable: C-STOREs pay page faults for their buffers\"")
        # One file ready for each association that may be writing, and one for the next.
        self._storage.prepare_files(self._settings.max_associations + 1)
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_RELEASED, self._on_ended),
            (evt.EVT_ABORTED, self._on_ended),
            (evt.EVT_CONN_CLOSE, self._on_conn_close),
        ]
        return make_server(self._ae, self._rules, self, handlers, address, fast=self._settings.fast_ingest)

    def stop(self) -> None:
        self._serving.clear()
        if self._server is not None:
            self._server.shutdown()
        for assoc in self._ae.active_associations:
            if assoc.is_acceptor:
                assoc.abort()
        self._hashing.shutdown()
        self._storage.close()

    # --- what the acceptor asks and tells (acceptor.ConnectionHooks) ---------------------------

    def admission(self, host: str, port: int) -> Admit:
        self._book.opened(host, port)

        def admit(called_ae: str, calling_ae: str) -> Rejection | None:
            rejection = self._policy.refusal(called_ae, calling_ae, host)
            if rejection is None and not self._slots.take():
                rejection = local_limit(self._slots.limit)
            if rejection is None:
                self._book.admitted(host, port, calling_ae)
            return rejection

        return admit

    def refused(self, host: str, port: int, refusal: Refusal) -> None:
        self._book.refused(host, port, refusal.outcome, refusal.reason)

    def ended_early(self, host: str, port: int, refusal: Refusal) -> None:
        self._book.ended_early(host, port, refusal.outcome, refusal.reason, refusal.calling_ae)

    def closed(self, host: str, port: int) -> None:
        self._book.closed(host, port, aborted=False, released=False)

    # --- association events -----------------------------------------------------------------

    def _on_accepted(self, event: DicomEvent) -> None:
        requestor = event.assoc.requestor
        self._book.accepted(requestor.address, requestor.port, requestor.ae_title)

    def _on_ended(self, event: DicomEvent) -> None:
        requestor = event.assoc.requestor
        self._book.ended(requestor.address, requestor.port, released=event.event == evt.EVT_RELEASED)

    def _on_conn_close(self, event: DicomEvent) -> None:
        assoc = event.assoc
        self._book.closed(assoc.requestor.address, assoc.requestor.port, assoc.is_aborted, assoc.is_released)

    # --- DIMSE services ---------------------------------------------------------------------

    def _on_echo(self, event: DicomEvent) -> int:
        return 0x0000

    def _on_store(self, event: DicomEvent) -> int:
        request = cast(C_STORE, event.request)
        requestor = event.assoc.requestor
        host, port = requestor.address, requestor.port
        outcome = store_instance(StoreRequest(
            cast(BytesIO, request.DataSet).getvalue(), str(request.AffectedSOPClassUID),
            str(request.AffectedSOPInstanceUID), str(event.context.transfer_syntax),
            self._book.calling_ae(host, port), host), self._resources)
        self._book.stored(host, port, outcome.stored_bytes, outcome.duplicate, outcome.status.is_success,
                          outcome.study_uid)
        return int(outcome.status)
