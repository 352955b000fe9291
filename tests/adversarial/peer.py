"""A hostile or broken DICOM peer on a raw socket: PDUs built byte by byte (PS3.8 9.3), sent whole,
in pieces, slowly, or not at all; what the node answers is read back as PDUs."""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF, A_RELEASE_RP, A_ABORT = 2, 3, 4, 6, 7


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def _uid(uid: str) -> bytes:
    return uid.encode("ascii")


def associate_rq(called: str = "ONCONODE", calling: str = "HOSTILE",
                 contexts: tuple[tuple[str, str], ...] = ((VERIFICATION, IMPLICIT_LE),)) -> bytes:
    """An A-ASSOCIATE-RQ proposing ``contexts`` (abstract syntax, transfer syntax), IDs 1, 3, 5..."""
    body = struct.pack(">HH16s16s32s", 1, 0, called.encode().ljust(16), calling.encode().ljust(16), b"\0" * 32)
    body += _item(0x10, _uid("1.2.840.10008.3.1.1.1"))
    for index, (abstract, syntax) in enumerate(contexts):
        body += _item(0x20, struct.pack(">BBBB", 2 * index + 1, 0, 0, 0) + _item(0x30, _uid(abstract))
                      + _item(0x40, _uid(syntax)))
    body += _item(0x50, _item(0x51, struct.pack(">I", 16384)) + _item(0x52, _uid("1.2.826.0.1.3680043.9.9999")))
    return pdu(0x01, body)


def pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBI", kind, 0, len(body)) + body


def p_data(*pdvs: tuple[int, int, bytes]) -> bytes:
    """A P-DATA-TF of PDV items (context ID, message control header, fragment)."""
    return pdu(P_DATA_TF, b"".join(struct.pack(">IBB", len(f) + 2, c, h) + f for c, h, f in pdvs))


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0, element, len(value)) + value


def _ui(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def command(elements: list[tuple[int, bytes]]) -> bytes:
    """A command set in implicit VR little endian with its group length (PS3.7 6.3)."""
    body = b"".join(_element(e, v) for e, v in elements)
    return _element(0x0000, struct.pack("<I", len(body))) + body


def c_echo_rq(message_id: int = 1) -> bytes:
    return command([(0x0002, _ui(VERIFICATION)), (0x0100, struct.pack("<H", 0x0030)),
                    (0x0110, struct.pack("<H", message_id)), (0x0800, struct.pack("<H", 0x0101))])


def c_store_rq(sop_class: str, sop_instance: str, message_id: int = 1) -> bytes:
    return command([(0x0002, _ui(sop_class)), (0x0100, struct.pack("<H", 0x0001)),
                    (0x0110, struct.pack("<H", message_id)), (0x0700, struct.pack("<H", 0)),
                    (0x0800, struct.pack("<H", 0x0000)), (0x1000, _ui(sop_instance))])


def status_of(command_bytes: bytes) -> int | None:
    """The Status (0000,0900) of a response command set."""
    pos = 0
    while pos + 8 <= len(command_bytes):
        _, element, length = struct.unpack_from("<HHI", command_bytes, pos)
        if element == 0x0900:
            return int(struct.unpack_from("<H", command_bytes, pos + 8)[0])
        pos += 8 + length
    return None


@dataclass
class RawPeer:
    """One TCP connection to the node, driven by hand."""

    port: int
    timeout: float = 30
    received: list[tuple[int, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def trickle(self, data: bytes, interval: float, until_closed: bool = True) -> float:
        """Send ``data`` one byte every ``interval`` seconds; seconds until the node cut us off (or all
        was sent)."""
        start = time.monotonic()
        for byte in data:
            try:
                self.sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(interval)
            if until_closed and self._peer_closed():
                break
        return time.monotonic() - start

    def _peer_closed(self) -> bool:
        self.sock.setblocking(False)
        try:
            data = self.sock.recv(65536, socket.MSG_PEEK)
            return data == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            self.sock.setblocking(True)
            self.sock.settimeout(self.timeout)

    def read_pdu(self) -> tuple[int, bytes] | None:
        """The next PDU (type, body), or None once the node has closed the connection."""
        head = self._read(6)
        if head is None:
            return None
        kind, _, length = struct.unpack(">BBI", head)
        body = self._read(length)
        if body is None:
            return None
        self.received.append((kind, body))
        return kind, body

    def _read(self, count: int) -> bytes | None:
        data = b""
        while len(data) < count:
            try:
                chunk = self.sock.recv(count - len(data))
            except (ConnectionResetError, BrokenPipeError):
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def associate(self, contexts: tuple[tuple[str, str], ...] = ((VERIFICATION, IMPLICIT_LE),),
                  calling: str = "HOSTILE") -> None:
        self.send(associate_rq(contexts=contexts, calling=calling))
        answer = self.read_pdu()
        assert answer is not None and answer[0] == A_ASSOCIATE_AC, f"not accepted: {answer}"

    def until_closed(self) -> list[int]:
        """Read until the node closes the connection; the types of the PDUs it sent meanwhile."""
        kinds = []
        while (answer := self.read_pdu()) is not None:
            kinds.append(answer[0])
        return kinds

    def abort_reason(self) -> tuple[int, int] | None:
        """(source, reason) of the A-ABORT the node sent, if any."""
        for kind, body in self.received:
            if kind == A_ABORT:
                return body[2], body[3]
        return None

    def echo(self) -> int | None:
        """C-ECHO on context 1; the status, or None if the association ended."""
        self.send(p_data((1, 0x03, c_echo_rq())))
        answer = self.read_pdu()
        if answer is None or answer[0] != P_DATA_TF:
            return None
        return status_of(answer[1][6:])

    def close(self) -> None:
        self.sock.close()
