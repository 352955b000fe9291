"""Association policy on real associations: callers, called AE, host, association limit, disk guard."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from onconode.dicom_node.scu import PeerAddress, send_paths
from onconode.dicom_node.status import StoreStatus
from tests.support import NodeProcess, echo_status, require

CALLERS = [{"ae_title": "PACS", "host": "127.0.0.1"}, {"ae_title": "REMOTE", "host": "127.0.0.2"},
           {"ae_title": "ANYHOST"}]


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-receivers"])
def guarded(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, fast_ingest: bool
            ) -> NodeProcess:
    # With receiver processes the limit holds across them: each counts its own in one shared array.
    process = NodeProcess(tmp_path_factory.mktemp("policy"), callers=CALLERS,
                          node={"max_associations": 2, "receiver_processes": request.param, "fast_ingest": fast_ingest})
    process.start()
    yield process
    process.stop()


def associate(port: int, calling: str, called: str = "ONCONODE", bind: str = "127.0.0.1"):
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title=called, bind_address=(bind, 0))


def test_known_callers_are_accepted_from_their_hosts(guarded: NodeProcess) -> None:
    for calling, bind in (("PACS", "127.0.0.1"), ("REMOTE", "127.0.0.2"), ("ANYHOST", "127.0.0.3")):
        assoc = associate(guarded.port, calling, bind=bind)
        assert assoc.is_established, calling
        assert assoc.send_c_echo().Status == 0
        assoc.release()


@pytest.mark.parametrize(("calling", "called", "bind", "reason"), [
    ("STRANGER", "ONCONODE", "127.0.0.1", 0x03),  # unknown calling AE
    ("REMOTE", "ONCONODE", "127.0.0.1", 0x03),  # known AE from the wrong host
    ("PACS", "NOTUS", "127.0.0.1", 0x07),  # wrong called AE
])
def test_unknown_callers_and_wrong_called_ae_are_rejected(
        guarded: NodeProcess, calling: str, called: str, bind: str, reason: int) -> None:
    assoc = associate(guarded.port, calling, called, bind)
    assert assoc.is_rejected
    rejection = assoc.acceptor.primitive
    assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x01, 0x01, reason)
    guarded.wait_for_log("outcome=rejected")
    assert echo_status(guarded.port, calling_ae="PACS") == 0


def test_dcmtk_echoscu_with_unknown_ae_is_rejected(guarded: NodeProcess) -> None:
    echoscu = require("echoscu")
    refused = subprocess.run([echoscu, "-aet", "STRANGER", "-aec", "ONCONODE", "127.0.0.1", str(guarded.port)],
                             capture_output=True, text=True, timeout=30, check=False)
    accepted = subprocess.run([echoscu, "-aet", "PACS", "-aec", "ONCONODE", "127.0.0.1", str(guarded.port)],
                              capture_output=True, text=True, timeout=30, check=False)
    assert refused.returncode != 0 and "Rejected" in refused.stderr
    assert accepted.returncode == 0, accepted.stderr


def test_associations_beyond_the_limit_are_rejected_transiently(guarded: NodeProcess) -> None:
    held = [associate(guarded.port, "PACS") for _ in range(2)]
    try:
        assert all(a.is_established for a in held)
        extra = associate(guarded.port, "PACS")
        assert extra.is_rejected
        rejection = extra.acceptor.primitive
        assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x02, 0x03, 0x02)
    finally:
        for assoc in held:
            assoc.release()
    assert echo_status(guarded.port, calling_ae="PACS") == 0


def test_disk_below_minimum_answers_out_of_resources_and_writes_nothing(tmp_path: Path, data: Path,
                                                                        fast_ingest: bool) -> None:
    node = NodeProcess(tmp_path, storage={"min_free_mb": 1024 ** 3}, node={"fast_ingest": fast_ingest})  # more than any disk has free
    node.start()
    try:
        files = sorted((data / "dicom" / "lidc-idri-0001").glob("*.dcm"))[:3]
        report = send_paths(files, PeerAddress("ONCONODE", "127.0.0.1", node.port))
        assert [why for _, why in report.failed] == [f"status 0x{StoreStatus.OUT_OF_RESOURCES_DISK_GUARD:04X}"] * 3
        assert node.stored_files() == [] and node.leftovers() == []
        assert echo_status(node.port) == 0
    finally:
        node.stop()


def test_disk_filling_during_a_write_answers_out_of_resources_and_leaves_nothing_half_written(
        tmp_path: Path, data: Path, fast_ingest: bool) -> None:
    """A real full file system: a 1.5 MiB tmpfs holds two 520 KiB CT slices, not three."""
    store = tmp_path / "small"
    store.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(store)], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); the guard test above still runs")
    try:
        node = NodeProcess(tmp_path, storage={"root": str(store / "store"), "min_free_mb": 0},
                           node={"fast_ingest": fast_ingest})
        node.start()
        try:
            files = sorted((data / "dicom" / "lidc-idri-0001").glob("*.dcm"))[:4]
            report = send_paths(files, PeerAddress("ONCONODE", "127.0.0.1", node.port))
            assert report.sent == 2
            assert {why for _, why in report.failed} == {f"status 0x{StoreStatus.OUT_OF_RESOURCES_WRITE:04X}"}
            assert len(node.stored_files()) == 2 and node.leftovers() == []
            for stored in node.stored_files():
                pydicom.dcmread(stored).pixel_array  # the stored ones are whole  # noqa: B018
            assert echo_status(node.port) == 0
        finally:
            node.stop()
    finally:
        subprocess.run(["umount", str(store)], check=False)


def test_a_silent_association_is_aborted_after_the_network_timeout(tmp_path: Path, fast_ingest: bool) -> None:
    process = NodeProcess(tmp_path, node={"network_timeout_seconds": 1, "fast_ingest": fast_ingest})
    process.start()
    try:
        assoc = associate(process.port, "ANYONE")
        assert assoc.is_established
        deadline = time.monotonic() + 10
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.1)
        assert assoc.is_aborted
        assert time.monotonic() < deadline
        assert echo_status(process.port) == 0
    finally:
        process.stop()
    process.wait_for_log("outcome=aborted")


def test_a_peer_abort_ends_the_association_and_the_node_serves_on(guarded: NodeProcess) -> None:
    assoc = associate(guarded.port, "PACS")
    assert assoc.send_c_echo().Status == 0
    assoc.abort()
    assert echo_status(guarded.port, calling_ae="PACS") == 0
