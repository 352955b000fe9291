"""Receiver processes: associations spread over several interpreters behind one listening port.

Why: a C-STORE is served by Python code that holds the interpreter lock for most of the time it
runs, so one process receives at about one core however many associations are open. With
``node.receiver_processes`` above 1 the node accepts each connection on its port and passes it
(SCM_RIGHTS) to the receiver process serving the fewest connections. Each receiver runs the node's
own ``StorageSCP`` on it (the guard, association policy, C-STORE, the durable write, its own
connection to the WAL database) and sends back what the node's listeners need: a summary when a
connection ends (metrics, audit) and every study transition it committed (audit trail).

``max_associations`` holds across the receivers: each counts its associations in its own entry of
one shared array (``policy.AssociationSlots``) and reads the others'. A receiver that dies is
started again, its entry zeroed first: the connections it served are dropped (their slots with
them), and what it acknowledged is durable and indexed, as after a crash of the whole node. A
receiver whose node has gone (its control socket closed) aborts its associations and exits.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import RawArray
from typing import Any

from onconode import runtime
from onconode.config import Settings
from onconode.dicom_node.policy import AssociationSlots, SlotCounts
from onconode.dicom_node.scp import StorageSCP
from onconode.dicom_node.storage import InstanceStorage
from onconode.dicom_node.tls import listener_context
from onconode.events import Event, configure_logging, log_event, tell_listeners
from onconode.state import StudyState, Transition, open_state
from onconode.values import AssociationListener, AssociationSummary

log = logging.getLogger(__name__)

_START_SECONDS = 60  # a receiver imports pydicom and pynetdicom and opens the database
_STOP_SECONDS = 15
_RESTART_SECONDS = 1  # between a receiver's exit and its replacement
_MESSAGE_BYTES = 65536

TransitionsListener = Callable[[list[Transition]], None]


class ReceiverError(RuntimeError):
    """A receiver process could not be started."""


@dataclass
class _Receiver:
    index: int
    process: BaseProcess
    control: socket.socket  # SOCK_SEQPACKET: one message per send, connections passed with it
    ready: threading.Event = dataclasses.field(default_factory=threading.Event)
    active: int = 0  # connections handed over whose summary has not come back (to balance the load)


class ReceiverPool:
    """The node's ``Listener`` when ``node.receiver_processes`` > 1."""

    def __init__(self, settings: Settings, on_transitions: TransitionsListener) -> None:
        self._settings = settings
        # One association count per receiver, shared with them all (policy.AssociationSlots).
        self._slots: SlotCounts = RawArray("i", settings.node.receiver_processes)
        self._on_transitions = on_transitions
        self._listeners: list[AssociationListener] = []
        self._receivers: list[_Receiver] = []
        self._lock = threading.Lock()  # the receivers list and their counts
        self._socket: socket.socket | None = None
        self._stopping = threading.Event()

    def add_association_listener(self, listener: AssociationListener) -> None:
        """Call ``listener(summary)`` after each connection ends, whichever receiver served it."""
        self._listeners.append(listener)

    @property
    def listening(self) -> bool:
        with self._lock:
            serving = any(r.ready.is_set() for r in self._receivers)
        return self._socket is not None and serving and not self._stopping.is_set()

    @property
    def port(self) -> int:
        assert self._socket is not None, "start() first"
        return int(self._socket.getsockname()[1])

    def start(self) -> None:
        """Start the receivers, wait until each serves, then listen."""
        node = self._settings.node
        try:
            for index in range(node.receiver_processes):
                self._start_receiver(index)
            deadline = time.monotonic() + _START_SECONDS
            for receiver in self._receivers:
                while not receiver.ready.wait(0.1):
                    if not receiver.process.is_alive() or time.monotonic() > deadline:
                        raise ReceiverError(f"receiver process {receiver.index} did not start "
                                            f"(exit code {receiver.process.exitcode}; see the log above)")
            family = socket.AF_INET6 if ":" in node.host else socket.AF_INET
            self._socket = socket.create_server((node.host, node.port), family=family,
                                                backlog=max(node.max_associations, 16))
        except BaseException:
            self.stop()
            raise
        threading.Thread(target=self._accept, name="onconode-listener", daemon=True).start()

    def stop(self) -> None:
        """Stop listening; each receiver aborts its associations, reports them and exits."""
        self._stopping.set()
        if self._socket is not None:
            self._socket.close()
        with self._lock:
            receivers = list(self._receivers)
        for receiver in receivers:
            try:
                receiver.control.shutdown(socket.SHUT_WR)  # the receiver reads end-of-file and stops
            except OSError:
                pass
        for receiver in receivers:
            receiver.process.join(_STOP_SECONDS)
            if receiver.process.is_alive():
                receiver.process.kill()
                receiver.process.join()

    # --- the node side ---------------------------------------------------------------------

    def _start_receiver(self, index: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._slots[index] = 0  # what a receiver that died in this place held is free again
        process = multiprocessing.get_context("spawn").Process(
            # The settings travel as plain values: the class load_settings() makes cannot be pickled.
            target=serve_receiver, args=(self._settings.model_dump(), theirs, self._slots, index),
            name=f"onconode-receiver-{index}", daemon=True)
        process.start()
        theirs.close()
        receiver = _Receiver(index, process, ours)
        with self._lock:
            self._receivers = [r for r in self._receivers if r.index != index] + [receiver]
        threading.Thread(target=self._listen_to, args=(receiver,), name=f"onconode-receiver-{index}-reports",
                         daemon=True).start()

    def _accept(self) -> None:
        assert self._socket is not None
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:  # closed by stop()
                return
            with connection:  # the receiver holds its own copy once it is passed
                self._hand_over(connection)

    def _hand_over(self, connection: socket.socket) -> None:
        with self._lock:
            candidates = sorted((r for r in self._receivers if r.ready.is_set()), key=lambda r: r.active)
            for receiver in candidates:
                receiver.active += 1
                try:
                    socket.send_fds(receiver.control, [b"connection"], [connection.fileno()])
                    return
                except OSError:  # it has just died: its reports thread starts another
                    receiver.active -= 1
        log_event(log, Event.ASSOCIATION, level=logging.WARNING, outcome="dropped",
                  reason="no receiver process is serving")

    def _listen_to(self, receiver: _Receiver) -> None:
        """Read one receiver's reports until it exits; start another in its place unless stopping."""
        while True:
            try:
                message = receiver.control.recv(_MESSAGE_BYTES)
            except OSError:
                message = b""
            if not message:
                break
            self._on_report(receiver, json.loads(message))
        receiver.process.join(_STOP_SECONDS)
        receiver.control.close()
        if self._stopping.is_set():
            return
        # One that never served failed to start (start() says so): starting it again would fail again.
        replaced = receiver.ready.is_set()
        log_event(log, Event.RECEIVER_EXITED, level=logging.ERROR, receiver=receiver.index,
                  exit_code=receiver.process.exitcode, dropped=receiver.active, replaced=replaced)
        if replaced and not self._stopping.wait(_RESTART_SECONDS):
            self._start_receiver(receiver.index)

    def _on_report(self, receiver: _Receiver, report: dict[str, Any]) -> None:
        if "ready" in report:
            receiver.ready.set()
        elif "summary" in report:
            with self._lock:
                receiver.active = max(0, receiver.active - 1)
            summary = report["summary"]
            tell_listeners(self._listeners, AssociationSummary(**{**summary, "study_uids": tuple(summary["study_uids"])}),
                           about="association", logger=log)
        elif "transition" in report:
            t = report["transition"]
            self._on_transitions([Transition(**{**t, "from_state": t["from_state"] and StudyState(t["from_state"]),
                                                 "to_state": StudyState(t["to_state"])})])


# --- the receiver side ------------------------------------------------------------------------

def serve_receiver(values: dict[str, Any], control: socket.socket, slots: SlotCounts, index: int) -> None:
    """A receiver process: serve the connections the node passes until the node closes ``control``;
    ``slots[index]`` counts its associations."""
    settings = Settings(**values)
    runtime.configure()
    configure_logging(settings.log.level)
    # Ctrl-C, or a service manager's SIGTERM, may reach the whole process group: the node stops its
    # receivers by closing their control sockets once it has stopped listening.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    db = open_state(settings.state)
    storage = InstanceStorage.from_settings(settings.storage)
    scp = StorageSCP(settings.node, settings.callers, storage, db, listener_context(settings.tls),
                     AssociationSlots(settings.node.max_associations, slots, index),
                     settle_seconds=settings.study.settle_seconds)

    def report(**message: Any) -> None:
        try:
            control.send(json.dumps(message).encode())
        except OSError:  # the node has gone; the loop below sees it
            pass

    db.add_transition_listener(lambda transition: report(transition=dataclasses.asdict(transition)))
    scp.add_association_listener(lambda summary: report(summary=dataclasses.asdict(summary)))
    scp.start_adopting()
    report(ready=True)
    try:
        while True:
            _, fds, _, _ = socket.recv_fds(control, _MESSAGE_BYTES, 1)
            if not fds:  # end-of-file: the node is stopping, or gone
                return
            scp.adopt(socket.socket(fileno=fds[0]))
    finally:
        scp.stop()
        db.close()
