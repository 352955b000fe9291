"""DICOM TLS with DCMTK's TLS-enabled echoscu/storescu and with our own SCU, on real certificates."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from onconode.cli import main
from tests.support import NodeProcess, echo_status, require


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-receivers"])
def tls_node(tmp_path_factory: pytest.TempPathFactory, pki: Path, request: pytest.FixtureRequest,
             fast_ingest: bool) -> Iterator[NodeProcess]:
    process = NodeProcess(tmp_path_factory.mktemp("tls"), node={"receiver_processes": request.param,
                                                               "fast_ingest": fast_ingest}, tls={
        "enabled": True, "cert": str(pki / "server.pem"), "key": str(pki / "server.key"), "ca": str(pki / "ca.pem")})
    process.start()
    yield process
    process.stop()


def _dcmtk_tls(pki: Path) -> list[str]:
    return ["+tls", str(pki / "client.key"), str(pki / "client.pem"), "-pw", "+cf", str(pki / "ca.pem")]


def test_dcmtk_echoscu_and_storescu_over_tls(tls_node: NodeProcess, pki: Path, data: Path) -> None:
    echoscu, storescu = require("echoscu"), require("storescu")
    echoed = subprocess.run([echoscu, *_dcmtk_tls(pki), "-aec", "ONCONODE", "127.0.0.1", str(tls_node.port)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert echoed.returncode == 0, echoed.stderr

    source = data / "dicom" / "lidc-idri-0001" / "IM-0001.dcm"
    stored = subprocess.run([storescu, *_dcmtk_tls(pki), "-aec", "ONCONODE", "127.0.0.1", str(tls_node.port),
                             str(source)], capture_output=True, text=True, timeout=30, check=False)
    assert stored.returncode == 0, stored.stderr
    ds = pydicom.dcmread(source, stop_before_pixels=True)
    assert (tls_node.store / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm").is_file()


def test_onconode_echo_over_tls(tls_node: NodeProcess, pki: Path) -> None:
    assert main(["echo", f"ONCONODE@127.0.0.1:{tls_node.port}", "--tls-ca", str(pki / "ca.pem"),
                 "--tls-cert", str(pki / "client.pem"), "--tls-key", str(pki / "client.key")]) == 0


def test_plain_and_certificate_less_callers_fail_and_tls_keeps_working(tls_node: NodeProcess, pki: Path) -> None:
    echoscu = require("echoscu")
    assert echo_status(tls_node.port) is None  # plain TCP to the TLS port
    no_cert = subprocess.run([echoscu, "+tla", "+cf", str(pki / "ca.pem"), "-aec", "ONCONODE", "127.0.0.1",
                              str(tls_node.port)], capture_output=True, text=True, timeout=30, check=False)
    assert no_cert.returncode != 0 and "Association Request Failed" in no_cert.stderr, no_cert.stderr
    again = subprocess.run([echoscu, *_dcmtk_tls(pki), "-aec", "ONCONODE", "127.0.0.1", str(tls_node.port)],
                           capture_output=True, text=True, timeout=30, check=False)
    assert again.returncode == 0, again.stderr
    tls_node.wait_for_log("outcome=failed reason=SSLError")  # the failed handshakes are logged, no traceback
    assert "Traceback" not in tls_node.log()


def test_a_caller_silent_before_the_handshake_holds_up_nobody(tls_node: NodeProcess, pki: Path) -> None:
    # pynetdicom's server would shake hands in its accept loop, where this connection would block
    # every later caller until the network timeout; the node does it on the connection's thread.
    with socket.create_connection(("127.0.0.1", tls_node.port)):
        assert main(["echo", f"ONCONODE@127.0.0.1:{tls_node.port}", "--tls-ca", str(pki / "ca.pem"),
                     "--tls-cert", str(pki / "client.pem"), "--tls-key", str(pki / "client.key")]) == 0


@pytest.mark.parametrize("receivers", [1, 2])
def test_an_unloadable_certificate_stops_the_start_with_one_line(tmp_path: Path, pki: Path, receivers: int) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    process = NodeProcess(tmp_path, node={"receiver_processes": receivers}, tls={
        "enabled": True, "cert": str(garbage), "key": str(pki / "server.key"), "ca": str(pki / "ca.pem")})
    with pytest.raises(RuntimeError, match="exited with 2"):
        process.start()
    assert f"onconode serve: tls: cannot load cert {garbage}" in process.log()
    assert "Traceback" not in process.log()
