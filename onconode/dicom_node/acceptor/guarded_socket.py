"""The socket a peer's association is read through: every byte passes ``PduStreamGuard`` and every
PDU runs against a deadline, whichever acceptor path (fast or stock pynetdicom) reads it.

Input: an accepted connection (plain or TLS) and the connection's limits and timeouts. Output: a
``socket.socket`` (or ``ssl.SSLSocket``) subclass that pynetdicom uses as it uses any socket.

Why deadlines here: pynetdicom reads a PDU with blocking ``recv`` calls once its first byte has
arrived, so a peer that stops mid-PDU would hold the thread, and the association's slot, for good,
and one that sends a byte a second would never time out. Here a PDU must arrive whole within
``pdu_seconds`` of its first byte (the first PDU, and a TLS handshake before it, within the
handshake time of the connection's start); a read that would pass the deadline ends the
connection. When the guard refuses the stream, the answer (A-ABORT or A-ASSOCIATE-RJ) is sent,
the connection is shut down, and the reader sees end-of-file: pynetdicom then ends the association
as it does when a peer goes away (Evt17), with no traceback in its log.

``await_association_request`` reads the A-ASSOCIATE-RQ's fixed fields on the connection's own
thread, before pynetdicom sees the connection: a silent, rejected or hostile caller is dealt with
there and never costs an association thread, nor a slot. What it read is served again to the
next reads.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from onconode.dicom_node.acceptor.pdu_guard import NOT_SPECIFIED, PduStreamGuard, Refusal, aborted

_SLACK = 0.5  # seconds a read's timeout may differ from the deadline before it is set again
_ASSOCIATE_HEAD = 42  # PDU header + A-ASSOCIATE-RQ fields up to the calling AE title (PS3.8 9.3.2)
_ANSWER_SECONDS = 1.0  # for sending an A-ABORT or A-ASSOCIATE-RJ, and for the peer to close after it
_DRAIN_BYTES = 1 << 20  # read and dropped at most, meanwhile
_REJECT_AFTER = 0.05  # seconds: the earliest an A-ASSOCIATE-RJ goes out after the decision

RefusalListener = Callable[[Refusal], None]
_T = TypeVar("_T")


class GuardedIO:
    """Reads through the guard, against the deadline; mixed into a socket class."""

    _guard: PduStreamGuard | None = None
    peer: tuple[str, int] | None = None  # the connection's (host, port), once it is handed to pynetdicom
    _pushback = b""
    _deadline = 0.0
    _pdu_seconds = 0.0
    _ended = False
    _kernel_timeouts: tuple[float, float] = (0.0, 0.0)  # SO_RCVTIMEO, SO_SNDTIMEO as last set; 0: none
    _tls = False
    _on_refused: RefusalListener | None = None

    def arm(self, guard: PduStreamGuard, deadline: float, pdu_seconds: float,
            on_refused: RefusalListener) -> None:
        """Guard every later read; the first PDU must be whole by ``deadline`` (monotonic seconds)."""
        self._guard = guard
        self._tls = isinstance(self, ssl.SSLSocket)
        self._deadline = deadline
        self._pdu_seconds = pdu_seconds
        self._on_refused = on_refused

    def await_association_request(self) -> Refusal | None:
        """Read the first PDU up to its calling AE title; ``None`` once the guard admits it, else how
        the connection ended (answered and shut down already, or ``failed`` when the peer went quiet
        or away)."""
        guard = self._require_guard()
        head = bytearray()
        while not guard.admitted:
            try:
                data = self._waited(partial(self._os_recv, _ASSOCIATE_HEAD - len(head)), self._deadline)
            except TimeoutError:
                return self._fail("no A-ASSOCIATE-RQ within node.handshake_timeout_seconds")
            except OSError as err:
                return self._fail(f"connection error before the A-ASSOCIATE-RQ ({type(err).__name__})")
            if not data:
                return self._fail("closed before its A-ASSOCIATE-RQ")
            head += data
            refusal = guard.feed(data)
            if refusal is not None:
                if refusal.outcome == "rejected":
                    self._read_rest_of_request(guard)
                self._end(refusal, notify=False)
                return refusal
        self._pushback = bytes(head)
        return None

    def _read_rest_of_request(self, guard: PduStreamGuard) -> None:
        """Read the A-ASSOCIATE-RQ to its end before the A-ASSOCIATE-RJ answers it, and answer no
        sooner than ``_REJECT_AFTER`` after its AE titles were read.

        Why: the rejection is decided on the AE titles, within a millisecond of the request; a
        pynetdicom (3.0.4) requestor that receives its answer before it has looked at its own
        socket takes the closed socket for a failed connection and reports an abort, not a
        rejection. Answering the whole request, a moment later (as pynetdicom's own acceptor does),
        lets every requestor see the rejection for what it is.
        """
        started, left = time.monotonic(), guard.pdu_left
        try:
            while left > 0:
                data = self._waited(partial(self._os_recv, min(left, 65536)), self._deadline)
                if not data:
                    return
                left -= len(data)
        except OSError:  # too slow, or gone: the answer is sent all the same
            return
        time.sleep(max(0.0, _REJECT_AFTER - (time.monotonic() - started)))

    # --- reads and writes ---------------------------------------------------------------------

    def recv(self, bufsize: int = 1024, flags: int = 0, /) -> bytes:
        guard = self._guard
        if guard is None:
            return super().recv(bufsize, flags)  # type: ignore[misc, no-any-return]
        if self._pushback:
            data, self._pushback = self._pushback[:bufsize], self._pushback[bufsize:]
            return data
        if self._ended:
            return b""
        try:
            if self._tls:
                data = self._waited(partial(self._os_recv, bufsize, flags), self._read_deadline(guard))
            else:
                self._set_receive_timeout(guard)
                data = socket.socket.recv(self, bufsize, flags)  # type: ignore[arg-type]
        except (TimeoutError, BlockingIOError):  # BlockingIOError: SO_RCVTIMEO ran out
            self._end(_late())
            return b""
        return b"" if data and self._refused(guard, data) else data  # type: ignore[no-any-return]

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0, /) -> int:
        """As ``socket.recv_into``; on plain TCP, the path a transfer's bytes take, kept to one system
        call and a few attribute reads (the guard looks at no byte inside a data fragment)."""
        guard = self._guard
        if guard is None:
            return super().recv_into(buffer, nbytes or 0, flags)  # type: ignore[misc, no-any-return]
        if self._pushback:
            view = memoryview(buffer).cast("B")
            count = min(nbytes or len(view), len(self._pushback))
            view[:count] = self._pushback[:count]
            self._pushback = self._pushback[count:]
            return count
        if self._ended:
            return 0
        try:
            if self._tls:
                count = self._waited(partial(self._os_recv_into, buffer, nbytes or 0, flags),
                                     self._read_deadline(guard))
            else:
                self._set_receive_timeout(guard)
                count = socket.socket.recv_into(self, buffer, nbytes or 0, flags)  # type: ignore[arg-type]
        except (TimeoutError, BlockingIOError):  # BlockingIOError: SO_RCVTIMEO ran out
            self._end(_late())
            return 0
        if not count or guard.skip(count):
            return count  # type: ignore[no-any-return]
        return 0 if self._refused(guard, memoryview(buffer).cast("B")[:count]) else count  # type: ignore[no-any-return]

    def pending(self) -> int:
        """Bytes readable without waiting on the socket: what ``await_association_request`` kept,
        and for TLS what OpenSSL holds decrypted (pynetdicom asks before it selects)."""
        inner = super().pending() if isinstance(self, ssl.SSLSocket) else 0  # type: ignore[misc]
        return len(self._pushback) + int(inner)

    def send(self, data: Any, flags: int = 0, /) -> int:
        """Send what the peer's window takes; a peer that reads nothing for the network timeout
        fails the send (TimeoutError), which ends the association."""
        if self._guard is None or self._ended:
            return super().send(data, flags)  # type: ignore[misc, no-any-return]
        return self._waited(partial(self._os_send, data, flags), time.monotonic() + self._pdu_seconds, writing=True)

    def sendall(self, data: Any, flags: int = 0, /) -> None:
        view = memoryview(data).cast("B")
        while view:
            view = view[self.send(view, flags):]

    # --- the guard and the deadline -----------------------------------------------------------

    def _require_guard(self) -> PduStreamGuard:
        if self._guard is None:
            raise RuntimeError("arm() the socket first")
        return self._guard

    def _set_receive_timeout(self, guard: PduStreamGuard) -> None:
        """Let a blocking read of a plain connection wait no later than ``_read_deadline`` (the
        kernel's SO_RCVTIMEO, set again only when the time left has moved by over ``_SLACK``).

        Raises
        ------
        TimeoutError
            When the deadline has passed already.
        """
        remaining = self._read_deadline(guard) - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        current = self._kernel_timeouts[0]
        if not current or abs(current - remaining) > _SLACK:  # 0: none set yet (wait for ever)
            self._set_kernel_timeout(socket.SO_RCVTIMEO, remaining)

    def _set_kernel_timeout(self, option: int, seconds: float) -> None:
        whole = int(seconds)
        self.setsockopt(socket.SOL_SOCKET, option,  # type: ignore[attr-defined]
                        struct.pack("ll", whole, max(1, int((seconds - whole) * 1e6))))
        receiving, sending = self._kernel_timeouts
        self._kernel_timeouts = (receiving, seconds) if option == socket.SO_SNDTIMEO else (seconds, sending)

    def _read_deadline(self, guard: PduStreamGuard) -> float:
        """Until when the next read may wait: the current PDU's deadline; between PDUs, where
        pynetdicom reads only once data is there (it selects first), the network timeout."""
        if guard.mid_pdu or guard.pdus_started == 0:
            return self._deadline
        return time.monotonic() + self._pdu_seconds

    # The socket class's own calls, ``flags`` last so that ``_waited`` can call them with 0.
    def _os_recv(self, size: int, flags: int, more: int = 0) -> bytes:
        return super().recv(size, flags | more)  # type: ignore[misc, no-any-return]

    def _os_recv_into(self, view: memoryview, size: int, flags: int, more: int = 0) -> int:
        return super().recv_into(view, size, flags | more)  # type: ignore[misc, no-any-return]

    def _os_send(self, data: Any, flags: int, more: int = 0) -> int:
        return super().send(data, flags | more)  # type: ignore[misc, no-any-return]

    def _waited(self, operation: Callable[[int], _T], deadline: float, writing: bool = False) -> _T:
        """``operation(0)``, waiting no later than ``deadline`` for the socket to be ready for it.

        A plain connection stays a blocking socket whose kernel timeout (SO_RCVTIMEO, SO_SNDTIMEO)
        is the time left: the wait costs no system call of its own, where a Python socket timeout
        adds a poll to every read and write, and it is set again only when the time left has moved
        by more than ``_SLACK`` (in a PDU that takes that long). A TLS socket waits through its
        Python timeout, since OpenSSL reads the socket itself.

        Raises
        ------
        TimeoutError
            When ``deadline`` passes first.
        """
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        if isinstance(self, ssl.SSLSocket):
            current = self.gettimeout()
            if current is None or abs(current - remaining) > _SLACK:
                self.settimeout(remaining)
            return operation(0)
        current = self._kernel_timeouts[1 if writing else 0]
        if not current or abs(current - remaining) > _SLACK:  # 0: none set yet (wait for ever)
            self._set_kernel_timeout(socket.SO_SNDTIMEO if writing else socket.SO_RCVTIMEO, remaining)
        try:
            return operation(0)
        except BlockingIOError as err:  # the kernel timeout ran out (EAGAIN)
            raise TimeoutError("deadline passed") from err

    def _refused(self, guard: PduStreamGuard, data: bytes | memoryview) -> bool:
        started = guard.pdus_started
        refusal = guard.feed(data)
        if refusal is not None:
            self._end(refusal)
            return True
        if guard.pdus_started > max(started, 1):  # a PDU after the first began: its own deadline
            self._deadline = time.monotonic() + self._pdu_seconds
        return False

    def _end(self, refusal: Refusal, notify: bool = True) -> None:
        """Answer, shut the connection down and tell the listener; reads see end-of-file from now.

        After the answer the peer is given a moment to read it and close (ARTIM, PS3.8 AA-1), what it
        still sends being read and dropped: closing with unread bytes would reset the connection,
        and a reset can overtake the answer, so that an A-ASSOCIATE-RJ reads as a broken connection.
        """
        self._ended = True
        deadline, drained = time.monotonic() + _ANSWER_SECONDS, 0
        try:
            answer = memoryview(refusal.pdu)
            while answer:
                answer = answer[self._waited(partial(self._os_send, answer, 0), deadline, writing=True):]
            self.shutdown(socket.SHUT_WR)  # type: ignore[attr-defined]
            while drained < _DRAIN_BYTES:
                chunk = self._waited(partial(self._os_recv, 65536, 0), deadline)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:  # the peer has gone, or kept silent: either way the connection ends here
            pass
        try:
            self.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
        except OSError:
            pass
        if notify and self._on_refused is not None:
            self._on_refused(refusal)

    def _fail(self, reason: str) -> Refusal:
        refusal = Refusal("failed", b"", reason)
        self._end(refusal, notify=False)
        return refusal


def _late() -> Refusal:
    return aborted(NOT_SPECIFIED, "PDU not complete within node.network_timeout_seconds")


class GuardedSocket(GuardedIO, socket.socket):
    """A plain TCP connection read through the guard."""

    @classmethod
    def adopt(cls, connection: socket.socket) -> GuardedSocket:
        """The same connection (its file descriptor moves here; ``connection`` is left closed)."""
        return cls(connection.family, connection.type, connection.proto, fileno=connection.detach())


class GuardedSSLSocket(GuardedIO, ssl.SSLSocket):
    """A TLS connection read through the guard; made by a context whose ``sslsocket_class`` is this."""
