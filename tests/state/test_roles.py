"""``onconode serve --role``: each process runs only its parts, on the shared state and storage."""

from __future__ import annotations

from pathlib import Path

import httpx

from onconode.dicom_node.scu import PeerAddress, send_paths
from onconode.state import StudyState
from tests.inference.tiny_model import write_model
from tests.state.nodes import SharedNode
from tests.state.studies import reuid_studies
from tests.support import echo_status, wait_for


def test_a_receiver_and_an_api_process_share_the_state_and_only_the_receiver_listens(
        postgres_url: str, tmp_path: Path, data: Path) -> None:
    store = tmp_path / "shared" / "store"
    write_model(tmp_path / "models", "test-ct", "CT", size=64)
    receiver = SharedNode(tmp_path / "receiver", postgres_url, store, api={"enabled": False},
                          study={"stable_seconds": 1, "poll_seconds": 0.2})
    api = SharedNode(tmp_path / "api", postgres_url, store, analysis={"models": str(tmp_path / "models")})
    receiver.start(serve_args=("--role", "receive"))
    try:
        api.start(serve_args=("--role", "api"))
        try:
            assert "roles=receive " in receiver.log() and "roles=api " in api.log()
            study_uid, paths = next(iter(reuid_studies(data / "dicom" / "lung-pet-ct-dx-a0002-ct",
                                                       tmp_path / "studies", 1, 12).items()))
            assert send_paths(paths, PeerAddress("ONCONODE", "127.0.0.1", receiver.port)).all_succeeded
            assert echo_status(api.port) is None  # the API process does not listen for DICOM
            with httpx.Client(base_url=api.api_url, timeout=10) as client:
                # Queued by the receiver's assembler; nothing analyses it (no analyse role runs).
                study = wait_for(lambda: (r := client.get(f"/studies/{study_uid}")).status_code == 200
                                 and r.json()["state"] == StudyState.QUEUED.value and r.json(), 30,
                                 "the API to show the queued study")
                assert study["instances"] == 12
                ready = client.get("/ready")
                assert ready.status_code == 200, ready.json()
                assert [m["name"] for m in client.get("/models").json()["models"]] == ["test-ct"]
        finally:
            api.stop()
    finally:
        receiver.stop()
