"""The DICOM listener: association policy, C-ECHO and C-STORE (receive → store).

Input: associations from PACS and modalities. Output: durable files (``storage.py``) and index
rows (``onconode/state``); one log line per association and per refused instance.

The C-STORE handler never raises: each failure path returns its own ``StoreStatus``, and Success
is returned only after the file is durable and indexed. Association policy (calling AE and host,
called AE, number of associations) is decided in one place, ``CallerPolicy``, before any
presentation context is negotiated, so that a rejected peer learns nothing about what we accept.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event as DicomEvent
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from onconode.config import Caller, NodeSettings
from onconode.dicom_node.allocator import retain_freed_buffers
from onconode.dicom_node.identify import InvalidInstance, identify
from onconode.dicom_node.part10 import part10_bytes
from onconode.dicom_node.reactor import EventDrivenAssociation, WholeReadSocket
from onconode.dicom_node.sop_classes import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES, VERIFICATION
from onconode.dicom_node.status import StoreStatus
from onconode.dicom_node.storage import InstanceStorage, LowDiskSpace, StorageFull
from onconode.events import Event, log_event
from onconode.state import ReceivedInstance, RecordOutcome, StateDB, StateError

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (result, source, reason), PS3.8 9.3.4.
_REJECT_CALLING_AE = (0x01, 0x01, 0x03)  # rejected-permanent, service-user, calling AE not recognized
_REJECT_CALLED_AE = (0x01, 0x01, 0x07)  # rejected-permanent, service-user, called AE not recognized
_REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)  # rejected-transient, service-provider (presentation), limit


_RejectCallback = Callable[[Association, str, str], None]
_ActiveCount = Callable[[Association], int]
_NORMAL_ENDS = ("accepted", "released", "aborted")


@dataclass(frozen=True)
class AssociationSummary:
    """What one association did, told to listeners (metrics, audit) when its connection closes."""

    calling_ae: str
    host: str
    outcome: str  # accepted (still open at close), released, aborted, rejected, failed (e.g. TLS handshake)
    reason: str | None
    instances: int
    duplicates: int
    failures: int
    bytes: int
    ms: int


AssociationListener = Callable[[AssociationSummary], None]


@dataclass(frozen=True)
class CallerPolicy:
    """Who may associate: calling AE (and host, where configured), called AE, how many at once."""

    ae_title: str
    callers: tuple[Caller, ...]
    max_associations: int

    def refusal(self, calling_ae: str, called_ae: str, host: str, active: int
                ) -> tuple[tuple[int, int, int], str] | None:
        """The A-ASSOCIATE-RJ parameters and a loggable reason, or ``None`` to go on negotiating."""
        if called_ae.strip() != self.ae_title:
            return _REJECT_CALLED_AE, "called AE title not ours"
        if self.callers and not any(c.ae_title == calling_ae.strip() and c.host in (None, host)
                                    for c in self.callers):
            return _REJECT_CALLING_AE, "calling AE title and host not among the allowed callers"
        if active > self.max_associations:
            return _REJECT_LOCAL_LIMIT, f"more than {self.max_associations} associations"
        return None


@dataclass
class _AssociationStats:
    calling_ae: str = "-"
    host: str = "-"
    port: int = 0
    outcome: str = "open"
    reason: str | None = None
    instances: int = 0
    duplicates: int = 0
    failures: int = 0
    bytes: int = 0
    opened: float = field(default_factory=time.monotonic)


class StorageSCP:
    """The listener; ``start()`` returns once it accepts connections, ``stop()`` closes it."""

    def __init__(self, settings: NodeSettings, callers: list[Caller], storage: InstanceStorage, db: StateDB,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._settings = settings
        self._storage = storage
        self._db = db
        self._ssl_context = ssl_context
        self._policy = CallerPolicy(settings.ae_title, tuple(callers), settings.max_associations)
        self._stats: dict[int, _AssociationStats] = {}
        self._stats_lock = threading.Lock()
        self._server: _Server | None = None
        self._ae = self._make_ae()
        self._listeners: list[AssociationListener] = []
        self._node_active: dict[tuple[str, int], int] = {}  # told by adopt(), by peer address
        self._hashing = ThreadPoolExecutor(settings.max_associations, thread_name_prefix="onconode-hash")

    def add_association_listener(self, listener: AssociationListener) -> None:
        """Call ``listener(summary)`` after each association's connection closes."""
        self._listeners.append(listener)

    @property
    def listening(self) -> bool:
        return self._server is not None and bool(self._ae._servers)

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self._settings.ae_title)
        ae.maximum_associations = self._settings.max_associations
        ae.maximum_pdu_size = self._settings.max_pdu_bytes
        ae.network_timeout = self._settings.network_timeout_seconds
        ae.acse_timeout = self._settings.network_timeout_seconds
        ae.dimse_timeout = self._settings.network_timeout_seconds
        ae.add_supported_context(VERIFICATION)
        for sop_class in sorted(STORAGE_SOP_CLASSES):
            ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
        return ae

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Listen on the configured address and serve every association in this process."""
        server = self._make_server(_Server)
        threading.Thread(target=server.serve_forever, name="onconode-scp", daemon=True).start()
        self._server = server

    def start_adopting(self) -> None:
        """Serve connections accepted elsewhere and handed over by ``adopt`` (a receiver process,
        ``receivers.py``); nothing listens here."""
        self._server = self._make_server(_AdoptingServer)

    def adopt(self, connection: socket.socket, active: int) -> None:
        """Serve an accepted connection as if this listener had accepted it; ``active`` is the number
        of associations the node serves with this one, which the association policy limits."""
        try:
            host, port = connection.getpeername()[:2]
        except OSError as err:  # the caller has gone already
            connection.close()
            self._on_connection_failed("-", 0, err)
            return
        with self._stats_lock:
            self._node_active[(host, port)] = active
        cast(_AdoptingServer, self._server).process_request(connection, (host, port))

    def _make_server(self, server_class: type[_Server]) -> _Server:
        if not retain_freed_buffers():
            log.info("event=allocator note=\"mallopt unavailable: C-STOREs pay page faults for their buffers\"")
        # One file ready for each association that may be writing, and one for the next.
        self._storage.prepare_files(self._settings.max_associations + 1)
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_CONN_OPEN, self._on_conn_open),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_RELEASED, self._on_ended),
            (evt.EVT_ABORTED, self._on_ended),
            (evt.EVT_CONN_CLOSE, self._on_conn_close),
        ]
        server = cast(_Server, self._ae.make_server(
            (self._settings.host, self._settings.port), ae_title=self._settings.ae_title,
            ssl_context=self._ssl_context, evt_handlers=handlers, server_class=server_class,
            request_handler=_request_handler(self._policy, self._active_associations, self._record_rejection)))
        server.on_failure = self._on_connection_failed
        self._ae._servers.append(server)  # so that AE.shutdown() and server.shutdown() find it
        return server

    def stop(self) -> None:
        self._ae.shutdown()  # aborts the associations; shuts the server down
        self._hashing.shutdown()
        self._storage.close()

    def _active_associations(self, assoc: Association) -> int:
        """The associations the node serves, this one included: told by ``adopt`` for a connection
        handed over, else those of this process."""
        with self._stats_lock:
            told = self._node_active.pop((assoc.requestor.address, assoc.requestor.port), None)
        return told if told is not None else sum(1 for a in self._ae.active_associations if a.is_acceptor)

    # --- association events ---------------------------------------------------------------

    def _on_conn_open(self, event: DicomEvent) -> None:
        host, port = cast(Any, event).address[:2]
        with self._stats_lock:
            self._stats[id(event.assoc)] = _AssociationStats(host=str(host), port=int(port))

    def _stats_for(self, assoc: Association) -> _AssociationStats:
        with self._stats_lock:
            return self._stats.setdefault(id(assoc), _AssociationStats())

    def _on_accepted(self, event: DicomEvent) -> None:
        stats = self._stats_for(event.assoc)
        stats.calling_ae = event.assoc.requestor.ae_title
        stats.outcome = "accepted"

    def _record_rejection(self, assoc: Association, calling_ae: str, reason: str) -> None:
        stats = self._stats_for(assoc)
        stats.calling_ae, stats.outcome, stats.reason = calling_ae, "rejected", reason

    def _on_ended(self, event: DicomEvent) -> None:
        stats = self._stats_for(event.assoc)
        stats.outcome = "released" if event.event == evt.EVT_RELEASED else "aborted"

    def _on_conn_close(self, event: DicomEvent) -> None:
        with self._stats_lock:
            stats = self._stats.pop(id(event.assoc), None)
            if stats is not None:
                self._node_active.pop((stats.host, stats.port), None)  # never negotiated: not popped there
        if stats is None:
            return
        if stats.outcome == "accepted":
            # The peer may close on our A-ABORT or A-RELEASE-RP before EVT_ABORTED / EVT_RELEASED
            # has run on the association thread; the flags are set before those PDUs go out (reactor).
            stats.outcome = "aborted" if event.assoc.is_aborted else "released" if event.assoc.is_released else "accepted"
        self._conclude(stats)

    def _on_connection_failed(self, host: str, port: int, error: BaseException | None) -> None:
        """A connection that never became an association (a failed TLS handshake, ``_Server``)."""
        with self._stats_lock:
            self._node_active.pop((host, port), None)
        self._conclude(_AssociationStats(host=host, port=port, outcome="failed",
                                         reason=type(error).__name__ if error else None))

    def _conclude(self, stats: _AssociationStats) -> None:
        """One log line and one summary to the listeners for every connection, however it ended."""
        summary = AssociationSummary(stats.calling_ae, stats.host, stats.outcome, stats.reason, stats.instances,
                                     stats.duplicates, stats.failures, stats.bytes,
                                     round((time.monotonic() - stats.opened) * 1000))
        log_event(log, Event.ASSOCIATION, level=logging.INFO if stats.outcome in _NORMAL_ENDS else logging.WARNING,
                  calling_ae=stats.calling_ae, host=stats.host, port=stats.port, outcome=stats.outcome,
                  reason=stats.reason, instances=stats.instances, duplicates=stats.duplicates,
                  failures=stats.failures, bytes=stats.bytes, ms=summary.ms)
        tell_listeners(self._listeners, summary)

    # --- DIMSE services --------------------------------------------------------------------

    def _on_echo(self, event: DicomEvent) -> int:
        return 0x0000

    def _on_store(self, event: DicomEvent) -> int:
        stats = self._stats_for(event.assoc)
        try:
            status = self._store(event, stats)
        except Exception:  # a bug: answer, log the traceback once, keep serving
            log.exception("event=store_failed status=0x%04X reason=unexpected", StoreStatus.UNEXPECTED_ERROR)
            status = StoreStatus.UNEXPECTED_ERROR
        if not status.is_success:
            stats.failures += 1
        return int(status)

    def _store(self, event: DicomEvent, stats: _AssociationStats) -> StoreStatus:
        request = cast(C_STORE, event.request)
        encoded = part10_bytes(cast(BytesIO, request.DataSet).getvalue(), str(request.AffectedSOPClassUID),
                               str(request.AffectedSOPInstanceUID), str(event.context.transfer_syntax))
        try:
            identity = identify(encoded, str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID))
        except InvalidInstance as err:
            return _refused(err.status, err.reason, stats)
        # The digest is computed beside the write and its fsync (hashlib releases the GIL), off the path
        # the sender waits on; only a SOP Instance UID already indexed needs it before the write.
        hashing = self._hashing.submit(_sha256, encoded)
        known = self._db.instance_sha256(identity.sop_instance_uid)
        if known is not None and known == hashing.result() and self._storage.path_for(identity).is_file():
            stats.duplicates += 1
            return StoreStatus.SUCCESS
        try:
            self._storage.write(identity, encoded)
        except LowDiskSpace as err:
            return _refused(StoreStatus.OUT_OF_RESOURCES_DISK_GUARD, str(err), stats, identity.sop_instance_uid)
        except StorageFull as err:
            return _refused(StoreStatus.OUT_OF_RESOURCES_WRITE, str(err), stats, identity.sop_instance_uid)
        except OSError as err:
            return _refused(StoreStatus.OUT_OF_RESOURCES_WRITE, f"write failed: {err.strerror}", stats,
                            identity.sop_instance_uid)
        transfer_syntax = str(event.context.transfer_syntax)
        received = ReceivedInstance(identity, transfer_syntax, len(encoded), hashing.result(), time.time(),
                                    stats.calling_ae)
        try:
            outcome = self._db.record_instance(received, calling_host=stats.host)
        except StateError as err:
            # The file is durable; the next start re-indexes it (recovery.py). The sender retries.
            return _refused(StoreStatus.OUT_OF_RESOURCES_INDEX, str(err), stats, identity.sop_instance_uid)
        if outcome == RecordOutcome.DUPLICATE:
            stats.duplicates += 1
        else:
            stats.instances += 1
            stats.bytes += len(encoded)
        return StoreStatus.SUCCESS


def tell_listeners(listeners: list[AssociationListener], summary: AssociationSummary) -> None:
    """Call each listener with ``summary``; metrics or audit trouble must not stop the caller's thread."""
    for listener in listeners:
        try:
            listener(summary)
        except Exception:
            log.exception("event=association_listener_error calling_ae=%s", summary.calling_ae)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _refused(status: StoreStatus, reason: str, stats: _AssociationStats, sop: str | None = None) -> StoreStatus:
    log_event(log, Event.STORE_FAILED, level=logging.WARNING, status=f"0x{status:04X}", reason=reason,
              sop=sop, calling_ae=stats.calling_ae, host=stats.host)
    return status


def _request_handler(policy: CallerPolicy, active: _ActiveCount, on_reject: _RejectCallback) -> type[RequestHandler]:
    """A pynetdicom request handler that builds event-driven associations (``reactor.py``) applying
    ``policy``, with Nagle disabled on each connection."""

    class PolicyRequestHandler(RequestHandler):
        def _create_association(self) -> Association:
            # What pynetdicom's RequestHandler does, with our Association, socket and ACSE classes.
            server = cast(ThreadedAssociationServer, self.server)
            # Small C-STORE-RSP PDUs must not wait for Nagle's algorithm (see PEERS.md, TCP_NODELAY).
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            assoc = EventDrivenAssociation(self.ae, MODE_ACCEPTOR)
            assoc._server = server
            assoc.name = f"AcceptorThread@{time.strftime('%Y%m%d%H%M%S')}"
            assoc.set_socket(WholeReadSocket(assoc, client_socket=self.request))
            assoc.acse = _PolicyACSE(assoc, policy, active, on_reject)
            assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
            assoc.acceptor.ae_title = server.ae_title
            assoc.acceptor.address_info = self.local
            assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
            assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
            assoc.acceptor.supported_contexts = deepcopy(server.contexts)
            assoc.requestor.address_info = self.remote
            for event, handlers in server._handlers.items():
                if event.is_intervention and handlers:
                    assoc.bind(event, *handlers)
                elif isinstance(event, evt.NotificationEvent):
                    for handler, args in cast(list[tuple[Callable[..., Any], Any]], handlers):
                        assoc.bind(event, handler, args)
            return assoc

    return PolicyRequestHandler


class _PolicyACSE(ACSE):
    """pynetdicom's ACSE with our caller policy applied before its own negotiation."""

    def __init__(self, assoc: Association, policy: CallerPolicy, active: _ActiveCount,
                 on_reject: _RejectCallback) -> None:
        super().__init__(assoc)
        self._policy = policy
        self._active = active
        self._on_reject = on_reject

    def _negotiate_as_acceptor(self) -> None:
        request = self.requestor.primitive
        assert request is not None
        calling_ae = str(request.calling_ae_title).strip()
        refusal = self._policy.refusal(calling_ae, str(request.called_ae_title), self.requestor.address,
                                       self._active(self.assoc))
        if refusal is None:
            super()._negotiate_as_acceptor()
            return
        (result, source, diagnostic), reason = refusal
        self._on_reject(self.assoc, calling_ae, reason)
        self.send_reject(result, source, diagnostic)
        evt.trigger(self.assoc, evt.EVT_REJECTED, {})
        self.assoc.kill()


class _Server(ThreadedAssociationServer):
    """pynetdicom's threaded server with the TLS handshake moved from the accept loop, where one
    silent caller would hold up every other, to the connection's own thread; a connection that fails
    before it becomes an association is told to ``on_failure``."""

    on_failure: Callable[[str, int, BaseException | None], None] | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        return socketserver.TCPServer.get_request(self)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is not None:
            request.settimeout(self.ae.network_timeout)  # for the handshake; the reactor then waits as it does
            request = self.ssl_context.wrap_socket(request, server_side=True)
            request.settimeout(None)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver would print a traceback to stderr: a failed TLS handshake or a caller that has
        # gone is the peer's doing and gets the association line alone; anything else is ours.
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            log.exception("event=connection_error host=%s", client_address[0])
        if self.on_failure is not None:
            self.on_failure(str(client_address[0]), int(client_address[1]), error)


class _AdoptingServer(_Server):
    """A server that listens nowhere: ``StorageSCP.adopt`` hands it connections accepted by the node's
    listener in another process (``receivers.py``)."""

    def server_bind(self) -> None:
        pass

    def server_activate(self) -> None:
        pass

    def shutdown(self) -> None:
        # No serve_forever loop ran to be stopped: BaseServer.shutdown would wait for it forever.
        self.server_close()
        self.ae._servers.remove(self)
