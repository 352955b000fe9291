"""A data set over ``node.max_dataset_bytes`` is aborted before it is buffered; the receivers' memory
stays bounded while PDU headers announcing 4 GiB arrive (RSS read from /proc/<pid>/status)."""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path

from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.presentation import build_context

from tests.adversarial.conftest import MAX_ASSOCIATIONS, MAX_DATASET, TIMEOUT
from tests.adversarial.payloads import CT_SLICE, real
from tests.adversarial.peer import A_ABORT, CT_IMAGE, EXPLICIT_LE, RawPeer, c_store_rq, p_data
from tests.support import NodeProcess, echo_status, wait_for

MIB = 1 << 20


def test_a_data_set_over_the_limit_is_aborted_and_nothing_stored(hostile: NodeProcess, data: Path) -> None:
    ds = real(data, CT_SLICE)
    ds.Rows = ds.Columns = 1024  # 2 MiB of pixels: over the 1 MiB limit
    ds.PixelData = bytes(1024 * 1024 * 2)
    ae = AE(ae_title="BIGSCU")
    ae.requested_contexts = [build_context(CTImageStorage, [ExplicitVRLittleEndian])]
    assoc = ae.associate("127.0.0.1", hostile.port, ae_title="ONCONODE")
    assert assoc.is_established
    response = assoc.send_c_store(ds)
    assert "Status" not in response  # no answer: the association was aborted
    wait_for(lambda: assoc.is_aborted, 10, "the sender to see the abort")
    assert not list(hostile.store.rglob(f"{ds.SOPInstanceUID}.dcm"))
    hostile.wait_for_log('reason="data set longer than node.max_dataset_bytes"')
    assert echo_status(hostile.port) == 0


def test_the_abort_comes_before_the_data_set_is_buffered(hostile: NodeProcess) -> None:
    peer = RawPeer(hostile.port, timeout=TIMEOUT * 5)
    try:
        peer.associate(contexts=((CT_IMAGE, EXPLICIT_LE),))
        peer.send(p_data((1, 0x03, c_store_rq(CT_IMAGE, "1.2.3.4"))))
        fragment = bytes(60_000)
        sent = 0
        try:
            while sent < 64 * MAX_DATASET:
                peer.send(p_data((1, 0x00, fragment)))
                sent += len(fragment)
        except OSError:  # the node has closed the connection
            pass
        # Cut off at the limit: what the two sockets' buffers on loopback accept (a few MiB) aside.
        assert sent < MAX_DATASET + 12 * MIB
        hostile.wait_for_log('reason="data set longer than node.max_dataset_bytes"')
    finally:
        peer.close()
    assert echo_status(hostile.port) == 0


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_memory_stays_bounded_while_4_gib_pdu_headers_arrive(hostile: NodeProcess) -> None:
    pids = [hostile.proc.pid, *hostile.receivers()] if hostile.proc else []
    before = {pid: _rss_kib(pid) for pid in pids}
    peak = dict(before)
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            for pid in pids:
                peak[pid] = max(peak[pid], _rss_kib(pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    peers = []
    try:
        for index in range(10):
            peer = RawPeer(hostile.port, timeout=TIMEOUT * 5)
            if index < MAX_ASSOCIATIONS:  # associations, as many as there are slots
                peer.associate()
                peer.send(struct.pack(">BBI", 0x04, 0, 0xFFFFFFFF))  # a P-DATA-TF "of 4 GiB"
            else:
                peer.send(struct.pack(">BBI", 0x01, 0, 0xFFFFFFFF))  # an A-ASSOCIATE-RQ "of 4 GiB"
            peers.append(peer)
        for peer in peers:
            assert peer.until_closed() == [A_ABORT]
    finally:
        sampling.set()
        sampler.join()
        for peer in peers:
            peer.close()
    grown = {pid: (peak[pid] - before[pid]) // 1024 for pid in pids}
    assert all(mib < 32 for mib in grown.values()), f"MiB grown per process: {grown}"
    assert echo_status(hostile.port) == 0
