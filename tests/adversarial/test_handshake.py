"""Connections that never speak hold no association slot and are closed after the handshake
timeout; with TLS the handshake runs on the connection's own thread, so nine silent callers hold up
no one (on both acceptor paths, with and without receiver processes)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from onconode.cli import main
from tests.adversarial.conftest import MAX_ASSOCIATIONS, TIMEOUT, node_with
from tests.dicom_node.pki import pki  # noqa: F401  (the test CA and certificates)
from tests.support import NodeProcess


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-receivers"])
def tls_node(tmp_path_factory: pytest.TempPathFactory, pki: Path, fast_ingest: bool,  # noqa: F811
             request: pytest.FixtureRequest) -> Iterator[NodeProcess]:
    node = node_with(tmp_path_factory.mktemp("tls"), fast_ingest, request.param, tls={
        "enabled": True, "cert": str(pki / "server.pem"), "key": str(pki / "server.key"), "ca": str(pki / "ca.pem")})
    node.start()
    yield node
    node.stop()


def _tls_echo(node: NodeProcess, pki: Path) -> int:  # noqa: F811
    return main(["echo", f"ONCONODE@127.0.0.1:{node.port}", "--tls-ca", str(pki / "ca.pem"),
                 "--tls-cert", str(pki / "client.pem"), "--tls-key", str(pki / "client.key")])


def test_nine_silent_connections_hold_up_no_tls_caller(tls_node: NodeProcess, pki: Path) -> None:  # noqa: F811
    silent = [socket.create_connection(("127.0.0.1", tls_node.port)) for _ in range(MAX_ASSOCIATIONS * 3)]
    try:
        for _ in range(MAX_ASSOCIATIONS):
            assert _tls_echo(tls_node, pki) == 0  # at once, while they hang on
        for sock in silent:  # each is closed once the handshake time is up
            sock.settimeout(TIMEOUT * 5)
            assert sock.recv(1) == b""
    finally:
        for sock in silent:
            sock.close()
    tls_node.wait_for_log('reason="no TLS handshake within node.handshake_timeout_seconds"')
    assert _tls_echo(tls_node, pki) == 0
