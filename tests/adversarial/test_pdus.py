"""Malformed PDUs are aborted (A-ABORT, then the connection closes), before and during an
association, and the node serves on; on both acceptor paths, with and without receiver processes."""

from __future__ import annotations

import struct

import pytest

from tests.adversarial.conftest import MAX_PDU, TIMEOUT
from tests.adversarial.peer import A_ABORT, RawPeer, associate_rq, c_echo_rq, p_data, pdu
from tests.support import NodeProcess, echo_status

INVALID_PARAMETER, UNRECOGNIZED_PDU, UNEXPECTED_PDU = 0x06, 0x01, 0x02
SERVICE_PROVIDER = 0x02

DURING = {
    "unknown PDU type 0x09": (pdu(0x09, b"\0" * 4), UNRECOGNIZED_PDU),
    "zero-length P-DATA-TF": (pdu(0x04, b""), INVALID_PARAMETER),
    "P-DATA-TF whose item runs past it": (pdu(0x04, struct.pack(">IBB", 100, 1, 3) + b"\0" * 10), INVALID_PARAMETER),
    "PDV item without a message control header": (pdu(0x04, struct.pack(">IB", 1, 1) + b"\0"), INVALID_PARAMETER),
    "A-RELEASE-RQ of the wrong length": (pdu(0x05, b"\0" * 8), INVALID_PARAMETER),
    "P-DATA-TF over node.max_pdu_bytes": (struct.pack(">BBI", 0x04, 0, MAX_PDU + 1), INVALID_PARAMETER),
    "P-DATA-TF announcing 4 GiB": (struct.pack(">BBI", 0x04, 0, 0xFFFFFFFF), INVALID_PARAMETER),
}
BEFORE = {
    "unknown PDU type 0x09": (pdu(0x09, b"\0" * 4), UNRECOGNIZED_PDU),
    "P-DATA-TF before any association": (p_data((1, 0x03, c_echo_rq())), UNEXPECTED_PDU),
    "A-ASSOCIATE-RQ announcing 4 GiB": (struct.pack(">BBI", 0x01, 0, 0xFFFFFFFF), INVALID_PARAMETER),
    "A-ASSOCIATE-RQ shorter than its fixed fields": (pdu(0x01, b"\0\1" + b"\0" * 40), INVALID_PARAMETER),
}


@pytest.mark.parametrize("case", list(DURING))
def test_a_malformed_pdu_during_an_association_is_aborted(hostile: NodeProcess, case: str) -> None:
    _aborted_by_the_node(hostile.port, *DURING[case], associated=True)


@pytest.mark.parametrize("case", list(BEFORE))
def test_a_malformed_first_pdu_is_aborted_before_any_association(hostile: NodeProcess, case: str) -> None:
    _aborted_by_the_node(hostile.port, *BEFORE[case], associated=False)


def test_a_well_formed_association_sent_in_single_bytes_is_served(hostile: NodeProcess) -> None:
    # The guard follows PDUs across reads of any size: pieces of one byte are a valid stream.
    peer = RawPeer(hostile.port, timeout=TIMEOUT * 5)
    try:
        for byte in associate_rq():
            peer.send(bytes([byte]))
        kind, _ = peer.read_pdu() or (None, b"")
        assert kind == 0x02  # A-ASSOCIATE-AC
        for byte in p_data((1, 0x03, c_echo_rq())):
            peer.send(bytes([byte]))
        answer = peer.read_pdu()
        assert answer is not None and answer[0] == 0x04
    finally:
        peer.close()


def _aborted_by_the_node(port: int, data: bytes, reason: int, associated: bool) -> None:
    """``data`` (after an association and a C-ECHO when ``associated``) gets an A-ABORT from the
    service provider with ``reason``, and the node still answers the next peer."""
    peer = RawPeer(port, timeout=TIMEOUT * 5)
    try:
        if associated:
            peer.associate()
            assert peer.echo() == 0x0000
        peer.send(data)
        assert peer.until_closed() == [A_ABORT]
        assert peer.abort_reason() == (SERVICE_PROVIDER, reason)
    finally:
        peer.close()
    assert echo_status(port) == 0
