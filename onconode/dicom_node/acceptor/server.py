"""The association server both acceptor paths share: each connection is shaken hands with (TLS),
guarded and admitted on its own thread, then handed to pynetdicom.

Input: accepted connections (listening on the node's port, or handed over by the node's listener
to a receiver process with ``adopt``). Output: associations served by pynetdicom's request handler
(stock) or by ``fast.EventDrivenRequestHandler``, reading through ``GuardedSocket``.

Why the handshake is here and not in pynetdicom's accept loop: there one silent caller would hold
up every later one for the whole timeout. Here it runs on the connection's thread, bounded by the
handshake time, and a connection holds no association slot until its A-ASSOCIATE-RQ has been
admitted (``ConnectionHooks.admission``). Everything used of pynetdicom here is public
(``ThreadedAssociationServer`` and the ``socketserver`` methods it inherits).
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import sys
import time
from dataclasses import dataclass
from typing import Any, Protocol

from pynetdicom.transport import ThreadedAssociationServer

from onconode.dicom_node.acceptor.guarded_socket import GuardedSocket, GuardedSSLSocket
from onconode.dicom_node.acceptor.pdu_guard import Admit, Limits, PduStreamGuard, Refusal

log = logging.getLogger(__name__)


class HandshakeTimeout(TimeoutError):
    """A caller that did not finish its TLS handshake in time (its message is safe to log)."""


@dataclass(frozen=True)
class ConnectionRules:
    """What every connection is held to, whichever path serves it."""

    limits: Limits
    handshake_seconds: float  # TLS handshake and the A-ASSOCIATE-RQ's fixed fields, from the connection
    pdu_seconds: float  # each later PDU, from its first byte
    tls: ssl.SSLContext | None = None


class ConnectionHooks(Protocol):
    """What the listener is told about a connection, by its (host, port)."""

    def admission(self, host: str, port: int) -> Admit:
        """The A-ASSOCIATE-RQ check for this connection; admitting holds an association slot."""

    def refused(self, host: str, port: int, refusal: Refusal) -> None:
        """The guard ended this association (pynetdicom then closes it: EVT_CONN_CLOSE follows)."""

    def ended_early(self, host: str, port: int, refusal: Refusal) -> None:
        """The connection ended before it became an association (nothing of pynetdicom ran)."""

    def closed(self, host: str, port: int) -> None:
        """pynetdicom has shut the connection down for good. EVT_CONN_CLOSE usually said so before,
        but not when an association thread gave up on a DUL still reading (pynetdicom stops a DUL in
        state Sta1 without an event); this call comes on every path, once the connection is over."""


class AcceptorServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the connection's preliminaries on the connection's thread."""

    daemon_threads = True
    block_on_close = False  # a connection's thread hands over and ends; none is waited for at stop
    rules: ConnectionRules
    hooks: ConnectionHooks

    def finish_request(self, request: Any, client_address: Any) -> None:
        host, port = str(client_address[0]), int(client_address[1])
        deadline = time.monotonic() + self.rules.handshake_seconds
        # Small C-STORE-RSP PDUs must not wait for Nagle's algorithm (see PEERS.md, TCP_NODELAY).
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = self._secured(request, deadline)
        guard = PduStreamGuard(self.rules.limits, self.hooks.admission(host, port))
        connection.arm(guard, deadline, self.rules.pdu_seconds,
                       lambda refusal: self.hooks.refused(host, port, refusal))
        early = connection.await_association_request()
        if early is not None:
            connection.close()
            self.hooks.ended_early(host, port, early)
            return
        connection.peer = (host, port)
        super().finish_request(connection, client_address)

    def shutdown_request(self, request: Any) -> None:
        # pynetdicom's association thread calls this as its last act on the connection.
        super().shutdown_request(request)
        peer = getattr(request, "peer", None)
        if peer is not None:
            self.hooks.closed(*peer)

    def _secured(self, request: socket.socket, deadline: float) -> GuardedSocket | GuardedSSLSocket:
        """The connection to read through the guard, after its TLS handshake if TLS is on.

        Raises
        ------
        OSError
            ``ssl.SSLError`` or a timeout when the handshake fails; ``handle_error`` reports it.
        """
        if self.rules.tls is None:
            return GuardedSocket.adopt(request)
        secured = self.rules.tls.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        secured.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            secured.do_handshake()
        except TimeoutError as err:
            raise HandshakeTimeout("no TLS handshake within node.handshake_timeout_seconds") from err
        assert isinstance(secured, GuardedSSLSocket), "make_server sets the context's sslsocket_class"
        return secured

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver would print a traceback to stderr: a failed TLS handshake or a caller that has
        # gone is the peer's doing and gets the association line alone; anything else is ours.
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            log.exception("event=connection_error host=%s", client_address[0])
        reason = str(error) if isinstance(error, HandshakeTimeout) else type(error).__name__
        self.hooks.ended_early(str(client_address[0]), int(client_address[1]), Refusal("failed", b"", reason))

    def shutdown(self) -> None:
        """Stop accepting and close the listening socket (the associations are the listener's to end)."""
        socketserver.BaseServer.shutdown(self)
        self.server_close()


class AdoptingServer(AcceptorServer):
    """A server that listens nowhere: ``adopt`` hands it connections accepted by the node's listener in
    another process (``receivers.py``)."""

    def server_bind(self) -> None:
        pass

    def server_activate(self) -> None:
        pass

    def adopt(self, connection: socket.socket, address: tuple[str, int]) -> None:
        """Serve ``connection`` as if this server had accepted it."""
        self.process_request(connection, address)

    def shutdown(self) -> None:
        # No serve_forever loop ran to be stopped: BaseServer.shutdown would wait for it forever.
        self.server_close()


def guarded_tls(context: ssl.SSLContext) -> ssl.SSLContext:
    """Make ``context`` (the listener's own) wrap connections in ``GuardedSSLSocket``."""
    context.sslsocket_class = GuardedSSLSocket
    return context

