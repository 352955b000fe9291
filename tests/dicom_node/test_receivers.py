"""Receiver processes (``node.receiver_processes`` > 1): real nodes, real associations, real signals.

The policy and TLS suites run on both listener kinds too (their fixtures are parametrized).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import httpx
import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from onconode.config import Settings
from onconode.dicom_node.receivers import ReceiverError, ReceiverPool
from onconode.dicom_node.scu import PeerAddress, send_paths
from tests.support import NodeProcess, dataset_bytes, echo_status, free_port, wait_for


@pytest.fixture
def node(tmp_path: Path, fast_ingest: bool) -> NodeProcess:
    process = NodeProcess(tmp_path, node={"receiver_processes": 2, "fast_ingest": fast_ingest})
    process.start()
    yield process
    process.stop()


def _established_ports(pid: int, node_port: int) -> set[int]:
    """Peer ports of the TCP connections to ``node_port`` whose sockets process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, remote_port, state, inode = int(fields[1].split(":")[1], 16), int(
            fields[2].split(":")[1], 16), fields[3], fields[9]
        if local_port == node_port and state == "01" and inode in inodes:  # 01: ESTABLISHED
            ports.add(remote_port)
    return ports


def _associate(port: int) -> object:
    ae = AE(ae_title="PACS")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    return ae.associate("127.0.0.1", port, ae_title="ONCONODE")


def test_associations_are_spread_over_the_receivers(node: NodeProcess) -> None:
    receivers = node.receivers()
    assert len(receivers) == 2
    held = [_associate(node.port) for _ in range(2)]
    try:
        assert all(a.is_established for a in held)
        served = [_established_ports(pid, node.port) for pid in receivers]
        # One association each: the node hands a connection to the receiver serving the fewest.
        assert sorted(len(ports) for ports in served) == [1, 1]
        assert set().union(*served) == {a.dul.socket.socket.getsockname()[1] for a in held}
    finally:
        for assoc in held:
            assoc.release()


def test_concurrent_associations_are_stored_indexed_and_reported_to_the_node(node: NodeProcess, data: Path) -> None:
    files = sorted((data / "dicom" / "lidc-idri-0001").glob("*.dcm"))[:40]
    shards = [files[i::4] for i in range(4)]
    reports = []

    def send(shard: list[Path]) -> None:
        reports.append(send_paths(shard, PeerAddress("ONCONODE", "127.0.0.1", node.port)))

    threads = [threading.Thread(target=send, args=(shard,)) for shard in shards]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.sent for r in reports) == len(files) and not any(r.failed for r in reports)
    for source in files:
        ds = pydicom.dcmread(source, stop_before_pixels=True)
        stored = node.store / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        assert dataset_bytes(stored) == dataset_bytes(source)
    study_uid = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    assert len(node.db().instances(study_uid)) == len(files)

    # What the receivers did reaches the node's own listeners: metrics and the audit trail.
    wait_for(lambda: len([r for r in _audit(node) if r["kind"] == "association"]) == 4, 20, "4 association records")
    associations = [r for r in _audit(node) if r["kind"] == "association"]
    assert sorted(r["instances"] for r in associations) == sorted(len(s) for s in shards)
    assert any(r["kind"] == "transition" and r["to_state"] == "receiving" for r in _audit(node))
    metrics = httpx.get(f"{node.api_url}/metrics", timeout=10).text
    assert f"onconode_instances_received_total {float(len(files))}" in metrics
    assert 'onconode_associations_total{outcome="released"} 4.0' in metrics


def _audit(node: NodeProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in node.audit_path.read_text().splitlines()]


def test_a_receiver_that_dies_is_replaced_and_the_node_serves_on(node: NodeProcess, data: Path) -> None:
    files = sorted((data / "dicom" / "lidc-idri-0001").glob("*.dcm"))[:3]
    before = node.receivers()
    os.kill(before[0], signal.SIGKILL)
    node.wait_for_log("event=receiver_exited")
    wait_for(lambda: len(node.receivers()) == 2 and node.receivers() != before, 20, "a new receiver")
    for _ in range(4):  # both receivers serve: the new one and the one that lived
        assert echo_status(node.port) == 0
    report = send_paths(files, PeerAddress("ONCONODE", "127.0.0.1", node.port))
    assert report.sent == len(files) and len(node.stored_files()) == len(files)


@pytest.mark.parametrize("ending", ["stop", "kill"])
def test_receivers_end_with_the_node(tmp_path: Path, ending: str) -> None:
    process = NodeProcess(tmp_path, node={"receiver_processes": 2})
    process.start()
    receivers = process.receivers()
    held = _associate(process.port)  # an open association must not keep a receiver alive
    assert len(receivers) == 2 and held.is_established
    if ending == "stop":
        process.stop()
    else:
        process.kill()  # SIGKILL: the receivers see their control socket close
    wait_for(lambda: not any(_running(pid) for pid in receivers), 20, "the receivers to end")
    wait_for(lambda: not held.is_established, 20, "the held association to end")


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_a_receiver_that_cannot_start_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    # The node checks storage, database and TLS before it starts receivers, so a receiver failing on
    # its own is exercised through the pool: a storage root that is a file fails only in the receiver.
    blocked = tmp_path / "store"
    blocked.write_text("not a folder")
    settings = Settings(node={"port": free_port(), "receiver_processes": 2}, storage={"root": blocked},
                        state={"database": tmp_path / "db.sqlite"})
    pool = ReceiverPool(settings, lambda transitions: None)
    with pytest.raises(ReceiverError, match=r"receiver process \d did not start \(exit code 1"):
        pool.start()
    assert not pool.listening
