"""Stalled and trickling peers are dropped at their timeout, and never keep an association slot.

Every test runs on both acceptor paths, with the node serving associations itself and with two
receiver processes (``conftest.hostile``).
"""

from __future__ import annotations

from typing import Any

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.adversarial.conftest import MAX_ASSOCIATIONS, TIMEOUT
from tests.adversarial.peer import A_ABORT, RawPeer, associate_rq, c_echo_rq, p_data
from tests.support import NodeProcess, echo_status, wait_for

# A peer cut off at the timeout is seen to be within this (the node's read deadlines may run up to
# half a second late, and the node process may be busy with another test's work).
CUT_OFF = TIMEOUT * 3 + 2


def _hold_all_slots(port: int) -> list[Any]:
    """``MAX_ASSOCIATIONS`` real associations at once; all must be accepted."""
    held = []
    for _ in range(MAX_ASSOCIATIONS):
        ae = AE(ae_title="PACS")
        ae.add_requested_context(Verification)
        held.append(ae.associate("127.0.0.1", port, ae_title="ONCONODE"))
    return held


def _every_slot_is_free(port: int) -> None:
    held = _hold_all_slots(port)
    try:
        assert all(a.is_established for a in held), "a slot is still held by a dropped peer"
    finally:
        for assoc in held:
            if assoc.is_established:
                assoc.release()


def test_silent_connections_and_stalled_headers_hold_no_slot_and_are_dropped(hostile: NodeProcess) -> None:
    # More than there are slots: what locked every sender out until a restart.
    stalled = [RawPeer(hostile.port, timeout=CUT_OFF) for _ in range(MAX_ASSOCIATIONS + 2)]
    for index, peer in enumerate(stalled):
        if index % 2:
            peer.send(associate_rq()[:6])  # a header announcing the rest of the request, then nothing
    try:
        _every_slot_is_free(hostile.port)  # served while they hang on
        for peer in stalled:
            assert peer.until_closed() == []  # closed at the handshake timeout, no PDU owed
    finally:
        for peer in stalled:
            peer.close()
    _every_slot_is_free(hostile.port)


def test_callers_stalled_inside_their_request_are_dropped_and_give_their_slots_back(hostile: NodeProcess) -> None:
    request = associate_rq()
    stalled = [RawPeer(hostile.port, timeout=CUT_OFF) for _ in range(MAX_ASSOCIATIONS)]
    for peer in stalled:
        peer.send(request[:60])  # past the AE titles (admitted, a slot taken), not the whole request
    try:
        for peer in stalled:
            assert peer.until_closed() in ([], [A_ABORT])  # aborted mid-PDU, or closed by ARTIM
    finally:
        for peer in stalled:
            peer.close()
    wait_for(lambda: echo_status(hostile.port) == 0, 10, "the node to serve again")
    _every_slot_is_free(hostile.port)


def test_a_pdu_stalled_half_way_is_aborted_after_the_network_timeout(hostile: NodeProcess) -> None:
    peers = [RawPeer(hostile.port, timeout=CUT_OFF) for _ in range(MAX_ASSOCIATIONS)]
    try:
        for peer in peers:
            peer.associate()
            whole = p_data((1, 0x03, c_echo_rq()))
            peer.send(whole[:-10])  # all but the last bytes of a P-DATA-TF
        for peer in peers:
            assert peer.until_closed() == [A_ABORT]
    finally:
        for peer in peers:
            peer.close()
    _every_slot_is_free(hostile.port)


def test_a_peer_sending_a_byte_at_a_time_is_dropped_at_the_timeout(hostile: NodeProcess) -> None:
    before = RawPeer(hostile.port, timeout=CUT_OFF)  # trickling its A-ASSOCIATE-RQ
    during = RawPeer(hostile.port, timeout=CUT_OFF)  # trickling a P-DATA-TF of an association
    during.associate()
    try:
        # Each would take over 20 s at this pace; the node cuts both off at its timeout.
        assert before.trickle(associate_rq(), interval=0.2) < CUT_OFF
        assert during.trickle(p_data((1, 0x03, c_echo_rq())), interval=0.2) < CUT_OFF
        assert A_ABORT in during.until_closed() + [kind for kind, _ in during.received]
    finally:
        before.close()
        during.close()
    _every_slot_is_free(hostile.port)
