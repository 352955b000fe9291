"""Follow the PDUs a peer sends, as their bytes are read, and refuse what no receiver should buffer.

Input: the bytes of one connection in the order they arrive, in pieces of any size. Output:
``None`` while the stream is acceptable, else a ``Refusal``: the PDU to answer with (A-ABORT or
A-ASSOCIATE-RJ) and a reason that holds no value from the stream.

Why under pynetdicom rather than in it: both acceptor paths (the fast one and stock pynetdicom)
read the peer through the same socket (``guarded_socket.py``), so one check, run on the bytes
before they are handed on, holds for both, and a PDU is judged by its header before a byte of
memory is set aside for its body. pynetdicom 3 checks none of the limits below on receive.

What it checks (PS3.8 section numbers):
- the PDU type is one of 9.3's (0x01-0x07); anything else is aborted as an unrecognized PDU;
- a P-DATA-TF is no longer than the Maximum Length we advertised (D.1, ``max_pdu_bytes``), an
  association PDU no longer than ``MAX_ASSOCIATION_PDU``, and A-ASSOCIATE-RJ, A-RELEASE and
  A-ABORT PDUs are exactly 4 bytes long (9.3.4, 9.3.6-9.3.8);
- a P-DATA-TF holds at least one PDV item and its items tile it exactly, each with a presentation
  context ID and a message control header (9.3.5.1);
- the data set fragments of one message add up to no more than ``max_dataset_bytes``, counting
  ``FRAGMENT_CHARGE`` for each fragment besides its bytes (what a receiver keeps per fragment), and
  a command to no more than ``MAX_COMMAND_BYTES``;
- the first PDU is an A-ASSOCIATE-RQ, whose called and calling AE titles (fixed fields at offsets
  10 and 26, 9.3.2) go to ``admit`` before the rest of it is read.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from onconode.dicom_node.policy import Rejection

MAX_ASSOCIATION_PDU = 1 << 20  # an A-ASSOCIATE-RQ/AC with 128 contexts of 64-character UIDs is ~60 kB
MAX_COMMAND_BYTES = 1 << 16  # a C-STORE-RQ command is ~200 bytes; a command set has no large values
FRAGMENT_CHARGE = 256  # bytes a receiver keeps per fragment besides the fragment (views, list slots)

_A_ASSOCIATE_RQ, _A_ASSOCIATE_RJ, _P_DATA_TF, _A_RELEASE_RQ, _A_RELEASE_RP, _A_ABORT = 1, 3, 4, 5, 6, 7
_KNOWN_TYPES = frozenset(range(1, 8))
_FIXED_LENGTH_TYPES = frozenset({_A_ASSOCIATE_RJ, _A_RELEASE_RQ, _A_RELEASE_RP, _A_ABORT})
_ASSOCIATE_FIXED = 68  # protocol version, reserved, called AE, calling AE, reserved (9.3.2)
_AE_TITLES_END = 36  # body bytes up to the end of the calling AE title

# A-ABORT reasons (9.3.8, source 0x02: service-provider)
NOT_SPECIFIED, UNRECOGNIZED_PDU, UNEXPECTED_PDU, INVALID_PARAMETER = 0x00, 0x01, 0x02, 0x06


@dataclass(frozen=True)
class Limits:
    """What one connection may send."""

    max_pdu_bytes: int  # the Maximum Length of a P-DATA-TF we advertise (its PDU length field)
    max_dataset_bytes: int


@dataclass(frozen=True)
class Refusal:
    """How a connection ended early: the PDU answered (none for ``failed``: the peer went quiet or
    away) and why (safe to log)."""

    outcome: Literal["aborted", "rejected", "failed"]
    pdu: bytes
    reason: str
    calling_ae: str | None = None


def abort_pdu(reason: int) -> bytes:
    """An A-ABORT PDU from the service provider (PS3.8 9.3.8)."""
    return struct.pack(">BBIBBBB", _A_ABORT, 0, 4, 0, 0, 0x02, reason)


def reject_pdu(rejection: Rejection) -> bytes:
    """An A-ASSOCIATE-RJ PDU (PS3.8 9.3.4)."""
    return struct.pack(">BBIBBBB", _A_ASSOCIATE_RJ, 0, 4, 0, rejection.result, rejection.source,
                       rejection.diagnostic)


def aborted(reason_code: int, reason: str) -> Refusal:
    return Refusal("aborted", abort_pdu(reason_code), reason)


Admit = Callable[[str, str], Rejection | None]


class PduStreamGuard:
    """The state of one connection's incoming PDU stream; ``feed`` it every byte read, in order."""

    def __init__(self, limits: Limits, admit: Admit) -> None:
        self._limits = limits
        self._admit = admit
        self._head = bytearray()  # the header being read: of a PDU (6 bytes) or of a PDV item (6)
        self._pdu_type = 0
        self._pdu_left = 0  # body bytes of the current PDU not yet seen
        self._pdv_left = 0  # fragment bytes of the current PDV item not yet seen
        self._associate = bytearray()  # the first PDU's fixed fields, up to the calling AE title
        self._dataset_charge = 0
        self._command_bytes = 0
        self.pdus_started = 0
        self.admitted = False
        self.refusal: Refusal | None = None

    @property
    def pdu_left(self) -> int:
        """Bytes of the current PDU not yet seen."""
        return self._pdu_left

    @property
    def mid_pdu(self) -> bool:
        """Part of a PDU has arrived and the rest has not."""
        return bool(self._head) or self._pdu_left > 0

    def skip(self, count: int) -> bool:
        """Take ``count`` bytes without looking at them when they lie inside the current data
        fragment, where there is nothing to check; ``False`` (nothing taken) otherwise: ``feed``
        them."""
        if self.refusal is None and count <= self._pdv_left:
            self._pdv_left -= count
            self._pdu_left -= count
            return True
        return False

    def feed(self, data: bytes | bytearray | memoryview) -> Refusal | None:
        """Take the next bytes of the stream; a ``Refusal`` once it must end (and from then on)."""
        if self.refusal is not None:
            return self.refusal
        if self.skip(len(data)):  # the common case: the middle of a data set fragment
            return None
        view = memoryview(data).cast("B")
        pos, end = 0, len(view)
        while pos < end and self.refusal is None:
            if self._pdu_left == 0:
                pos = self._read_pdu_head(view, pos, end)
            elif self._pdu_type != _P_DATA_TF:
                pos = self._read_body(view, pos, end)
            elif self._pdv_left == 0:
                pos = self._read_pdv_head(view, pos, end)
            else:
                take = min(self._pdv_left, end - pos)
                self._pdv_left -= take
                self._pdu_left -= take
                pos += take
        return self.refusal

    # --- PDU headers -----------------------------------------------------------------------------

    def _read_pdu_head(self, view: memoryview, pos: int, end: int) -> int:
        if not self._head:
            self.pdus_started += 1
        take = min(6 - len(self._head), end - pos)
        self._head += view[pos:pos + take]
        pos += take
        if len(self._head) == 6:
            pdu_type, _, length = struct.unpack(">BBI", self._head)
            self._head.clear()
            self.refusal = self._check_pdu(pdu_type, length)
            self._pdu_type, self._pdu_left = pdu_type, length
        return pos

    def _check_pdu(self, pdu_type: int, length: int) -> Refusal | None:
        first = self.pdus_started == 1
        if pdu_type not in _KNOWN_TYPES:
            return aborted(UNRECOGNIZED_PDU, "unrecognized PDU type")
        if first and pdu_type != _A_ASSOCIATE_RQ:
            return aborted(UNEXPECTED_PDU, "the first PDU is not an A-ASSOCIATE-RQ")
        if pdu_type in _FIXED_LENGTH_TYPES and length != 4:
            return aborted(INVALID_PARAMETER, "release, abort or reject PDU whose length is not 4")
        if pdu_type == _P_DATA_TF:
            if length > self._limits.max_pdu_bytes:
                return aborted(INVALID_PARAMETER, "P-DATA-TF longer than node.max_pdu_bytes")
            if length < 6:
                return aborted(INVALID_PARAMETER, "P-DATA-TF without a PDV item")
        elif length > MAX_ASSOCIATION_PDU:
            return aborted(INVALID_PARAMETER, "association PDU longer than 1 MiB")
        if pdu_type == _A_ASSOCIATE_RQ and length < _ASSOCIATE_FIXED:
            return aborted(INVALID_PARAMETER, "A-ASSOCIATE-RQ shorter than its fixed fields")
        return None

    def _read_body(self, view: memoryview, pos: int, end: int) -> int:
        take = min(self._pdu_left, end - pos)
        if self.pdus_started == 1 and len(self._associate) < _AE_TITLES_END:
            wanted = min(take, _AE_TITLES_END - len(self._associate))
            self._associate += view[pos:pos + wanted]
            if len(self._associate) == _AE_TITLES_END:
                self._decide_admission()
        self._pdu_left -= take
        return pos + take

    def _decide_admission(self) -> None:
        called = _ae_title(self._associate[4:20])
        calling = _ae_title(self._associate[20:36])
        rejection = self._admit(called, calling)
        if rejection is None:
            self.admitted = True
        else:
            self.refusal = Refusal("rejected", reject_pdu(rejection), rejection.reason, calling)

    # --- PDV items inside a P-DATA-TF -------------------------------------------------------------

    def _read_pdv_head(self, view: memoryview, pos: int, end: int) -> int:
        take = min(6 - len(self._head), end - pos)
        self._head += view[pos:pos + take]
        pos += take
        if len(self._head) < 6:
            return pos
        item_length, _, control = struct.unpack(">IBB", self._head)
        self._head.clear()
        if item_length < 2 or item_length + 4 > self._pdu_left:
            self.refusal = aborted(INVALID_PARAMETER, "PDV item length does not fit its P-DATA-TF")
            return pos
        self._pdu_left -= 6
        fragment = item_length - 2
        self._pdv_left = fragment
        self.refusal = self._account(control, fragment)
        return pos

    def _account(self, control: int, fragment: int) -> Refusal | None:
        """Charge a fragment to its message (bit 0: command; bit 1: last fragment, PS3.8 E.2)."""
        if control & 0x01:
            self._command_bytes += fragment
            if self._command_bytes > MAX_COMMAND_BYTES:
                return aborted(NOT_SPECIFIED, "DIMSE command longer than 64 KiB")
            if control & 0x02:
                self._command_bytes = 0
            return None
        self._dataset_charge += fragment + FRAGMENT_CHARGE
        if self._dataset_charge > self._limits.max_dataset_bytes:
            return aborted(NOT_SPECIFIED, "data set longer than node.max_dataset_bytes")
        if control & 0x02:
            self._dataset_charge = 0
        return None


def _ae_title(value: bytes | bytearray) -> str:
    """An AE title as sent, stripped, with anything but printable ASCII shown as '?'."""
    return "".join(chr(b) if 0x20 <= b < 0x7F else "?" for b in value).strip()
