"""C-STORE command sets and P-DATA-TF PDUs coded with ``struct``, as pynetdicom codes them.

Input: command fragments as received / the values of a response. Output: command elements /
encoded bytes. pynetdicom decodes every command set into a pydicom ``Dataset`` and encodes every
response from one, which costs more than the rest of a C-STORE; the fast acceptor (``fast.py``)
uses these instead, and ``tests/dicom_node/test_reactor.py`` checks that they give what pynetdicom
gives.
"""

from __future__ import annotations

import struct

from onconode.dicom_node.part10 import uid_value

_C_STORE_RQ_ELEMENTS = {0x0000, 0x0002, 0x0100, 0x0110, 0x0700, 0x0800, 0x1000, 0x1030, 0x1031}
_C_STORE_RQ_REQUIRED = {0x0002, 0x0100, 0x0110, 0x0700, 0x0800, 0x1000}


def c_store_rq_command(pdv: memoryview | bytes) -> dict[int, bytes] | None:
    """The command elements (by element number) of a C-STORE-RQ with a data set, from a last command
    fragment (control header byte 0x03), or None when it is anything else."""
    data = bytes(pdv[1:])
    command: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        if pos + 8 > len(data):
            return None
        group, element, length = struct.unpack_from("<HHI", data, pos)
        pos += 8
        if group != 0 or element not in _C_STORE_RQ_ELEMENTS or pos + length > len(data):
            return None
        command[element] = data[pos:pos + length]
        pos += length
    try:
        if not _C_STORE_RQ_REQUIRED <= command.keys() or us_value(command[0x0100]) != 0x0001:
            return None
        if us_value(command[0x0800]) == 0x0101:  # no data set: not a valid C-STORE-RQ; pynetdicom reports it
            return None
    except ValueError:
        return None
    return command


def us_value(value: bytes) -> int:
    """A US value (little endian).

    Raises
    ------
    ValueError
        When it is not 2 bytes long.
    """
    if len(value) != 2:
        raise ValueError("US value of the wrong length")
    return int.from_bytes(value, "little")


def ui_value(value: bytes) -> str:
    """A UI value without its padding."""
    return value.decode("ascii").rstrip("\0 ")


def c_store_rsp_command(sop_class_uid: str, sop_instance_uid: str, message_id: int, status: int) -> bytes:
    """The command set of a C-STORE-RSP (PS3.7 9.3.1.2) in implicit VR little endian, no data set."""
    elements = b"".join((
        _implicit(0x0002, uid_value(sop_class_uid)),
        _implicit(0x0100, struct.pack("<H", 0x8001)),          # Command Field: C-STORE-RSP
        _implicit(0x0120, struct.pack("<H", message_id)),      # Message ID Being Responded To
        _implicit(0x0800, struct.pack("<H", 0x0101)),          # Command Data Set Type: none
        _implicit(0x0900, struct.pack("<H", status)),
        _implicit(0x1000, uid_value(sop_instance_uid)),
    ))
    return _implicit(0x0000, struct.pack("<I", len(elements))) + elements


def p_data_tf(context_id: int, pdv: bytes) -> bytes:
    """A P-DATA-TF PDU (PS3.8 9.3.5) carrying one PDV (control header and fragment)."""
    return struct.pack(">BBIIB", 0x04, 0x00, 5 + len(pdv), 1 + len(pdv), context_id) + pdv


def _implicit(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value
