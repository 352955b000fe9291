"""Everything of the DICOM listener that steps around pynetdicom, behind ``make_server``.

``make_server(ae, rules, hooks, handlers, fast=True)`` gives the server that serves the node's
associations. Both paths read each connection through ``guarded_socket.GuardedSocket`` (PDU types
and lengths, PDV structure, data set size, per-PDU deadlines, the caller policy on the
A-ASSOCIATE-RQ) and shake hands on the connection's own thread (``server.py``), so timeouts, size
limits, statuses and the abort of malformed PDUs are the same on both; the tests run on both
(``node.fast_ingest``).

- ``fast=True`` (``node.fast_ingest: true``, the default): ``fast.py``, pynetdicom's state machine
  and DIMSE provider driven by events instead of polling loops, C-STOREs served on the reading
  thread; about half the CPU per instance of stock pynetdicom (``bench/ingest.py``).
- ``fast=False``: stock pynetdicom (its ``RequestHandler``, ``Association`` and socket), using
  only its public API. The way back when a pynetdicom release breaks the fast path.

The fast path is written against pynetdicom ``PYNETDICOM_VERSION`` exactly (pinned in
pyproject.toml); ``make_server(fast=True)`` refuses any other version (``AcceptorVersionError``).
The private pynetdicom names it uses, and what breaks if one changes:

``pynetdicom._globals.MODE_ACCEPTOR``
    the mode string an acceptor ``Association`` is built with; a rename fails at import.
``pynetdicom._handlers.standard_dimse_recv_handler`` / ``standard_dimse_sent_handler`` /
``standard_pdu_recv_handler`` / ``standard_pdu_sent_handler``
    recognised and left unbound (``EventDrivenAssociation.bind``); if renamed, import fails; if
    replaced, each PDU is formatted for the debug log again (slower, still correct).
``pynetdicom._config.STORE_RECV_CHUNKED_DATASET``
    when set, C-STOREs take pynetdicom's path; if removed, import fails.
``RequestHandler._create_association``, ``AssociationServer._handlers``
    overridden / read to build an ``EventDrivenAssociation`` with the server's handlers; if the
    upstream method gains steps, the fast path silently lacks them (the copy is of 3.0.4).
``Association._server``, ``._dul_ready``, ``._kill``, ``._accepted_cx``, ``._serve_request``,
``._abort_blocking``
    set, waited on, or called by the event-driven DUL and DIMSE providers; a rename breaks
    association start-up (``_dul_ready``), shutdown (``_kill``) or C-STORE service (the others).
``DULServiceProvider._idle_timer``, ``._kill_thread``, ``._process_recv_primitive``,
``._is_transport_event``, ``._decode_pdu``
    the reactor loop re-implemented in ``EventDrivenDUL.run_reactor`` (a copy of 3.0.4's, waiting
    on ``select``); a change upstream would leave the copy behind: timers, reads or the decoding of
    P-DATA-TF views would stop matching the state machine.
``AssociationSocket._is_connected``
    read before waiting on the socket; if renamed, every wait fails.
``C_STORE._context_id``
    set on C-STORE requests decoded by ``codec.c_store_rq_command``; pynetdicom's storage service
    reads it to answer on the right presentation context.
``DIMSEServiceProvider.message`` / ``msg_queue`` semantics and ``P_DATA`` PDV tuples
    the C-STORE fast path feeds and drains them; a change breaks the decode of C-STORE-RQs.
"""

from __future__ import annotations

from typing import Any

import pynetdicom
from pynetdicom import AE
from pynetdicom.transport import RequestHandler

from onconode.dicom_node.acceptor.pdu_guard import Limits, Refusal
from onconode.dicom_node.acceptor.server import (
    AcceptorServer,
    AdoptingServer,
    ConnectionHooks,
    ConnectionRules,
    guarded_tls,
)

PYNETDICOM_VERSION = "3.0.4"
# Read once, at import: which acceptor paths this installation can run.
INSTALLED_PYNETDICOM = pynetdicom.__version__

__all__ = [
    "PYNETDICOM_VERSION",
    "AcceptorServer",
    "AcceptorVersionError",
    "AdoptingServer",
    "ConnectionHooks",
    "ConnectionRules",
    "Limits",
    "Refusal",
    "make_server",
]


class AcceptorVersionError(ImportError):
    """The installed pynetdicom is not the one the fast acceptor is written against."""


def check_pynetdicom(version: str = INSTALLED_PYNETDICOM) -> None:
    """Raises
    ------
    AcceptorVersionError
        When ``version`` is not ``PYNETDICOM_VERSION``.
    """
    if version != PYNETDICOM_VERSION:
        raise AcceptorVersionError(
            f"pynetdicom {version} is installed, but the fast acceptor (onconode.dicom_node.acceptor) uses "
            f"private names of pynetdicom {PYNETDICOM_VERSION}: install pynetdicom=={PYNETDICOM_VERSION}, "
            "or set node.fast_ingest: false to serve associations with stock pynetdicom")


def make_server(ae: AE, rules: ConnectionRules, hooks: ConnectionHooks, handlers: list[Any],
                address: tuple[str, int] | None, fast: bool = True) -> AcceptorServer:
    """The server for ``ae``'s supported contexts: listening on ``address``, or adopting connections
    accepted elsewhere when ``address`` is None (``AdoptingServer.adopt``). ``handlers`` are
    pynetdicom ``(event, handler)`` bindings. Call ``serve_forever`` on a listening one.

    Raises
    ------
    AcceptorVersionError
        With ``fast`` when pynetdicom is not ``PYNETDICOM_VERSION``.
    OSError
        When the address cannot be bound.
    """
    request_handler: type[RequestHandler] = RequestHandler
    if fast:
        check_pynetdicom()
        from onconode.dicom_node.acceptor.fast import EventDrivenRequestHandler

        request_handler = EventDrivenRequestHandler
    if rules.tls is not None:
        guarded_tls(rules.tls)
    server_class = AcceptorServer if address is not None else AdoptingServer
    server = ae.make_server(address or ("127.0.0.1", 0), evt_handlers=handlers, server_class=server_class,
                            request_handler=request_handler)
    assert isinstance(server, AcceptorServer)
    server.rules, server.hooks = rules, hooks
    return server
