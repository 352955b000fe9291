"""The acceptor's own rules, without a node: the pynetdicom version the fast path needs, the PDU
guard's verdicts on real PDU streams however they are cut into reads, and the association slots
shared by receiver processes."""

from __future__ import annotations

import itertools
import multiprocessing
import random

import pytest

from onconode.dicom_node.acceptor import PYNETDICOM_VERSION, AcceptorVersionError, check_pynetdicom
from onconode.dicom_node.acceptor.pdu_guard import Limits, PduStreamGuard, Refusal
from onconode.dicom_node.policy import CALLED_AE_NOT_OURS, AssociationSlots, Rejection
from tests.adversarial.peer import CT_IMAGE, EXPLICIT_LE, associate_rq, c_store_rq, p_data, pdu

LIMITS = Limits(max_pdu_bytes=1 << 16, max_dataset_bytes=1 << 20)


def test_the_fast_path_needs_the_pinned_pynetdicom() -> None:
    check_pynetdicom(PYNETDICOM_VERSION)
    with pytest.raises(AcceptorVersionError, match=r"pynetdicom 3\.1\.0 is installed.*node\.fast_ingest: false"):
        check_pynetdicom("3.1.0")


def _verdict(stream: bytes, sizes: list[int], admit: Rejection | None = None) -> tuple[Refusal | None, int]:
    guard = PduStreamGuard(LIMITS, lambda called, calling: admit)
    pos, refusal = 0, None
    for size in itertools.cycle(sizes):
        refusal = guard.feed(stream[pos:pos + size])
        pos += size
        if refusal is not None or pos >= len(stream):
            break
    return refusal, guard.pdus_started


START = associate_rq(contexts=((CT_IMAGE, EXPLICIT_LE),)) + p_data((1, 0x03, c_store_rq(CT_IMAGE, "1.2.3")))
STORE = (START + b"".join(p_data((1, 0x00, bytes(60_000))) for _ in range(10)) + p_data((1, 0x02, b"end"))
         + pdu(0x05, b"\0" * 4))
STREAMS = {
    "a C-STORE in fragments, then a release": (STORE, None, None),
    "a data set over the limit": (START + b"".join(p_data((1, 0x00, bytes(60_000))) for _ in range(20)),
                                  None, "data set longer than node.max_dataset_bytes"),
    "a rejected caller": (STORE, CALLED_AE_NOT_OURS, "called AE title not ours"),
}


@pytest.mark.parametrize("name", list(STREAMS))
def test_the_guard_decides_alike_however_the_stream_is_cut(name: str) -> None:
    stream, admit, reason = STREAMS[name]
    whole = _verdict(stream, [len(stream)], admit)
    assert (whole[0].reason if whole[0] else None) == reason
    chance = random.Random(name)
    for _ in range(20):
        sizes = [chance.choice((1, 5, 6, 7, 4096, 65536)) for _ in range(50)]
        assert _verdict(stream, sizes, admit)[0] == whole[0]


def test_slots_are_counted_across_processes_and_freed_by_their_owner() -> None:
    counts = multiprocessing.RawArray("i", 2)
    first, second = AssociationSlots(3, counts, 0), AssociationSlots(3, counts, 1)
    assert first.take() and first.take() and second.take()
    assert not second.take() and not first.take()  # three held across the two
    second.give_back()
    assert first.take() and first.held == 3
    counts[0] = 0  # what the node does for a receiver that died
    assert second.take() and second.held == 1
