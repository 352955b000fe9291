"""Event-driven acceptor associations: pynetdicom's state machine, PDUs and DIMSE, without its polling.

Why: pynetdicom 3 runs two polling loops per association. The DUL thread sleeps 1 ms whenever it
has nothing to do and calls ``select`` with a zero timeout on every turn; the association thread
sleeps 1 ms before each look at the DIMSE queue; and the socket is read in 4 KiB pieces. For a
C-STORE of a 512x512 CT slice that adds up to several milliseconds of latency and CPU per instance,
more than the fsync that durability costs (see ``bench/ingest.py``). Here the same pynetdicom
objects run on blocking waits instead:

- the DUL thread blocks in ``select`` on the socket and on a wake-up socket that ``send_pdu`` writes
  to, so a received PDU and a response to send are each handled at once;
- the association thread blocks on the DIMSE message queue;
- the socket reads a whole PDU with ``recv_into``, and a P-DATA-TF's fragments are views of it;
- the C-STORE request command and the response are coded with ``struct``, not pydicom data sets;
- a C-STORE is served on the DUL thread itself and its response sent from there, sparing two
  thread hand-offs per instance;
- pynetdicom's standard logging handlers, which format a line per PDU, are not bound.

Each shortcut gives what pynetdicom gives (``tests/dicom_node/test_reactor.py``) and steps aside for
anything else: other commands and PDUs, and any event a handler is bound to, take pynetdicom's path.
Together they halve the CPU a C-STORE costs (``bench/ingest.py`` prints it).

Both waits wake at least every ``_TICK`` seconds so that the ARTIM and idle timers, release, abort
and kill are still noticed, as the polling loops notice them. The socket underneath is the
guarded one (``guarded_socket.py``): PDU limits and deadlines are checked there, for this path and
stock pynetdicom alike. The private pynetdicom names used here are listed, with what breaks if
they change, in the package docstring (``acceptor/__init__.py``), whose ``make_server`` checks the
pynetdicom version before this module is imported.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, cast

from pynetdicom import _config, evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT, A_RELEASE, P_DATA
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from onconode.dicom_node.acceptor.codec import (
    c_store_rq_command,
    c_store_rsp_command,
    p_data_tf,
    ui_value,
    us_value,
)
from onconode.dicom_node.acceptor.guarded_socket import GuardedIO

log = logging.getLogger(__name__)

_TICK = 0.01  # seconds: the longest a wait lasts before timers, release and kill are checked again


class WholeReadSocket(AssociationSocket):
    """Reads ``nr_bytes`` into one buffer with as few system calls as the kernel allows.

    The buffer is allocated before the bytes arrive: the guard underneath has checked the PDU's
    announced length (at most ``node.max_pdu_bytes``) when its header was read. On plain TCP the
    kernel gathers the whole of it (MSG_WAITALL), waking this thread once per PDU instead of once
    per segment; the socket's receive timeout (the PDU's deadline) still ends the wait.
    """

    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        assert sock is not None
        flags = 0 if isinstance(sock, ssl.SSLSocket) else socket.MSG_WAITALL
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        read = 0
        while read < nr_bytes:
            count = sock.recv_into(view[read:], nr_bytes - read, flags)
            if not count:  # connection closed: return what arrived, as pynetdicom does
                del view
                return buffer[:read]
            read += count
        return buffer


class EventDrivenDUL(DULServiceProvider):
    """The DICOM Upper Layer thread, woken by the socket or by a primitive to send."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)

    def send_pdu(self, primitive) -> None:  # type: ignore[no-untyped-def]
        # The last PDU of an association is sent as soon as it is queued here, and the peer may close
        # the connection (EVT_CONN_CLOSE, on this thread) before pynetdicom marks the association
        # aborted or released after queuing it: mark it first.
        if isinstance(primitive, (A_ABORT, A_P_ABORT)):
            self.assoc.is_aborted = True
        elif isinstance(primitive, A_RELEASE) and primitive.result is not None:  # our A-RELEASE-RP
            self.assoc.is_released = True
        super().send_pdu(primitive)
        self._wake()

    def stop_dul(self) -> bool:
        self._wake()
        return super().stop_dul()

    def _wake(self) -> None:
        try:
            self._wake_writer.send(b"\0")
        except (BlockingIOError, OSError):  # already pending, or the thread has ended
            pass

    def run_reactor(self) -> None:
        self._idle_timer.start()
        try:
            while not self._kill_thread:
                if not self.assoc._dul_ready.is_set():
                    self.assoc._dul_ready.set()
                if self.artim_timer.expired:
                    self.event_queue.put("Evt18")
                try:
                    if not self._process_recv_primitive() and self._is_transport_event():
                        self._idle_timer.restart()
                except Exception:
                    log.exception("event=dul_error action=abort")
                    self._abort_now()
                    return
                try:
                    event = self.event_queue.get(block=False)
                except queue.Empty:
                    self._wait()
                    continue
                self.state_machine.do_action(event)
        finally:
            self._wake_reader.close()
            self._wake_writer.close()

    def _decode_pdu(self, bytestream: bytearray):  # type: ignore[no-untyped-def]
        # A P-DATA-TF carries the data sets: its PDVs are taken as views of the received bytes rather
        # than copied through pynetdicom's PDU item objects. Other PDUs, and any PDU a handler wants to
        # see, go through pynetdicom.
        if bytestream[0] != 0x04 or self.assoc.get_handlers(evt.EVT_DATA_RECV) or self.assoc.get_handlers(
                evt.EVT_PDU_RECV):
            return super()._decode_pdu(bytestream)
        return _PDataView(bytestream), "Evt10"

    def _wait(self) -> None:
        """Block until the peer sends data, a primitive is queued, or a tick passes."""
        sock = self.socket.socket if self.socket is not None and self.socket._is_connected else None
        if sock is not None and (isinstance(sock, (ssl.SSLSocket, GuardedIO)) and sock.pending()):
            return  # bytes already read (TLS records, the guard's look at the A-ASSOCIATE-RQ)
        waiting_on = [self._wake_reader] if sock is None else [self._wake_reader, sock]
        try:
            ready, _, _ = select.select(waiting_on, [], [], _TICK)
        except (OSError, ValueError):  # the socket closed under us; the next turn sees Evt17
            return
        if self._wake_reader in ready:
            try:
                while self._wake_reader.recv(4096):
                    pass
            except BlockingIOError:
                pass

    def _abort_now(self) -> None:
        """Bypass the state machine and send an A-ABORT, as pynetdicom's own reactor does on error; and
        close the connection and say so (EVT_CONN_CLOSE), which that shortcut of pynetdicom's omits:
        the listener gives the association's slot back then."""
        pdu = A_ABORT_RQ()
        pdu.source, pdu.reason_diagnostic = 0x02, 0x00
        if self.socket is not None:
            self.socket.send(pdu.encode())
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True
        if self.socket is not None:
            self.socket.close()
        requestor = self.assoc.requestor
        evt.trigger(self.assoc, evt.EVT_CONN_CLOSE, {"address": (requestor.address, requestor.port)})


class _PDataView:
    """A received P-DATA-TF as DT-2 uses it (``to_primitive``), its PDVs views of the PDU's bytes."""

    def __init__(self, pdu: bytearray) -> None:
        view = memoryview(pdu)
        self._values: list[tuple[int, memoryview]] = []
        pos = 6
        while pos < len(pdu):  # PDV items (PS3.8 9.3.5.1): length, context ID, control header + fragment
            if pos + 6 > len(pdu):
                raise ValueError("PDV item header runs past the P-DATA-TF PDU")
            length, context_id = struct.unpack_from(">IB", pdu, pos)
            if length < 2 or pos + 4 + length > len(pdu):
                raise ValueError("PDV item length runs past the P-DATA-TF PDU")
            self._values.append((context_id, view[pos + 5:pos + 4 + length]))
            pos += 4 + length

    def to_primitive(self) -> P_DATA:
        primitive = P_DATA()
        primitive.presentation_data_value_list.extend(self._values)  # type: ignore[arg-type]
        return primitive


class _EventDrivenDIMSE(DIMSEServiceProvider):
    """Hands the association thread a decoded message as soon as the DUL queues it, and codes the
    C-STORE request and response without pydicom data sets.

    pynetdicom's acceptor loop asks ``get_msg(block=False)`` after a 1 ms sleep; waiting here for up to
    a tick instead removes that latency while the loop's release, abort and timeout checks still run.
    pynetdicom decodes every command set into a pydicom ``Dataset`` and encodes every response from
    one, which cost more than the rest of the C-STORE. Here a C-STORE-RQ whose command arrives in one
    fragment is read with ``struct`` and its data set fragments are joined once, and a C-STORE-RSP
    without Error Comment or Offending Element (every one OncoNode sends) is encoded by
    ``c_store_rsp_command``; both give what pynetdicom gives (``tests/dicom_node/test_reactor.py``).
    Everything else, and anything a handler wants to watch, goes through pynetdicom.
    """

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._store: _StoreRequest | None = None

    def get_msg(self, block: bool = False):  # type: ignore[no-untyped-def]
        if block:
            return super().get_msg(block=True)
        try:
            return self.msg_queue.get(timeout=_TICK)
        except queue.Empty:
            return None, None

    def receive_primitive(self, primitive: P_DATA) -> None:
        values = list(primitive.presentation_data_value_list)
        if self._store is None:
            # Anything but a one-fragment C-STORE-RQ command, or a message pynetdicom has begun, is its.
            command = (c_store_rq_command(values[0][1]) if values and self.message is None
                       and values[0][1][0] == 0x03 and self._fast_path() else None)
            if command is None:
                super().receive_primitive(primitive)
                return
            self._store = _StoreRequest(values[0][0], command)
            values = values[1:]
        for index, (context_id, pdv) in enumerate(values):
            store = self._store
            if pdv[0] & 0x01 or context_id != store.context_id:
                log.error("event=dimse_error reason=command fragment or other context inside a data set")
                self.dul.event_queue.put("Evt19")
                return
            store.fragments.append(pdv[1:])
            if pdv[0] & 0x02:
                self._store = None
                try:
                    request = store.primitive()
                except (TypeError, ValueError):
                    log.error("event=dimse_error reason=invalid C-STORE-RQ command values")
                    self.dul.event_queue.put("Evt19")
                    return
                self._deliver(store.context_id, request)
                rest = values[index + 1:]
                if rest:  # another message begins in the same P-DATA
                    following = P_DATA()
                    following.presentation_data_value_list.extend(rest)
                    self.receive_primitive(following)
                return

    def _deliver(self, context_id: int, request: C_STORE) -> None:
        """Serve a C-STORE on this thread, the DUL's, when pynetdicom would serve it with the Storage
        Service Class on an accepted context and nothing is waiting before it; queue it otherwise.

        Handing each message to the association thread and its response back costs two thread
        wake-ups per instance, about 0.7 ms, and on one association nothing else can arrive meanwhile.
        """
        if (context_id in self.assoc._accepted_cx and self.msg_queue.empty()
                and uid_to_service_class(str(request.AffectedSOPClassUID)) is StorageServiceClass):
            self.assoc._serve_request(request, context_id)
        else:
            self.msg_queue.put((context_id, request))

    def _fast_path(self) -> bool:
        return not (_config.STORE_RECV_CHUNKED_DATASET or self.assoc.get_handlers(evt.EVT_DIMSE_RECV))

    def send_msg(self, primitive, context_id: int) -> None:  # type: ignore[no-untyped-def]
        if not (isinstance(primitive, C_STORE) and primitive.MessageIDBeingRespondedTo is not None
                and primitive.Status is not None and primitive.ErrorComment is None and primitive.OffendingElement is None
                and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT)):
            super().send_msg(primitive, context_id)
            return
        command = c_store_rsp_command(str(primitive.AffectedSOPClassUID), str(primitive.AffectedSOPInstanceUID),
                                      int(primitive.MessageIDBeingRespondedTo), cast(int, primitive.Status))
        if self.maximum_pdu_size and len(command) + 7 > self.maximum_pdu_size:
            super().send_msg(primitive, context_id)
            return
        if (threading.current_thread() is self.dul and self.dul.to_provider_queue.empty()
                and self.dul.state_machine.current_state == "Sta6" and not self.assoc.get_handlers(evt.EVT_PDU_SENT)):
            # Served on the DUL thread (``_deliver``), in Sta6 with nothing queued before it: send it as
            # DT-1 would, without the round trip through the provider queue and the state machine.
            cast(AssociationSocket, self.dul.socket).send(p_data_tf(context_id, b"\x03" + command))
            return
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, b"\x03" + command))
        self.dul.send_pdu(pdata)


@dataclass
class _StoreRequest:
    """A C-STORE-RQ whose command is decoded and whose data set fragments are still arriving."""

    context_id: int
    command: dict[int, bytes]
    fragments: list[bytes | memoryview] = field(default_factory=list)

    def primitive(self) -> C_STORE:
        """The C_STORE request pynetdicom's ``message_to_primitive`` would give; its setters validate."""
        command = self.command
        request = C_STORE()
        request.MessageID = us_value(command[0x0110])
        request.AffectedSOPClassUID = ui_value(command[0x0002])
        request.AffectedSOPInstanceUID = ui_value(command[0x1000])
        request.Priority = us_value(command[0x0700])
        if 0x1030 in command:
            request.MoveOriginatorApplicationEntityTitle = bytes(command[0x1030]).decode("ascii").strip()
        if 0x1031 in command:
            request.MoveOriginatorMessageID = us_value(command[0x1031])
        request.DataSet = BytesIO(b"".join(self.fragments))
        request._context_id = self.context_id
        return request


class EventDrivenAssociation(Association):
    """An acceptor ``Association`` whose DUL and DIMSE providers wait on events instead of polling."""

    def __init__(self, ae, mode: str) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ae, mode)
        self.dul = EventDrivenDUL(self)
        self.dimse = _EventDrivenDIMSE(self)
        # The timers live on the DUL, so the timeouts pynetdicom set on the replaced one are set again.
        self.acse_timeout = self.ae.acse_timeout
        self.network_timeout = self.ae.network_timeout

    def _abort_blocking(self, block: bool = True) -> None:
        # C-STOREs are served on the DUL thread (``_deliver``): an abort from there must not wait for
        # that thread to finish, which is itself.
        super()._abort_blocking(block and threading.current_thread() is not self.dul)

    def bind(self, event, handler, args=None) -> None:  # type: ignore[no-untyped-def]
        # pynetdicom's standard handlers (bound by the association and again by the server) format a
        # debug line for every PDU and DIMSE message even with debug logging off; the listener logs
        # one line per association instead (scp.py).
        if handler not in _STANDARD_LOG_HANDLERS:
            super().bind(event, handler, args)


_STANDARD_LOG_HANDLERS = {standard_dimse_recv_handler, standard_dimse_sent_handler, standard_pdu_recv_handler,
                          standard_pdu_sent_handler}


class EventDrivenRequestHandler(RequestHandler):
    """pynetdicom's request handler, building event-driven associations on the guarded socket."""

    def _create_association(self) -> Association:
        # What pynetdicom 3.0.4's RequestHandler._create_association does, with our Association and
        # AssociationSocket classes; the connection's checks are the socket's (guarded_socket.py).
        server = cast(ThreadedAssociationServer, self.server)
        assoc = EventDrivenAssociation(self.ae, MODE_ACCEPTOR)
        assoc._server = server
        assoc.name = f"AcceptorThread@{time.strftime('%Y%m%d%H%M%S')}"
        assoc.set_socket(WholeReadSocket(assoc, client_socket=self.request))
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
