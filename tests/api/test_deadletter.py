"""Dead letter over the API, deliveries in the study detail, delivery audit records and metrics, with a
real node whose only destination is down: every object of the analysed study ends in the dead letter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from onconode.audit import read_audit
from onconode.dicom_node.scu import PeerAddress, send_paths
from onconode.state import StudyState
from tests.inference.tiny_model import write_model
from tests.processed_node import MR_SERIES, study_uid, wait_until_done
from tests.support import NodeProcess, free_port, wait_for


@pytest.fixture(scope="module")
def failed(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Iterator[tuple[NodeProcess, str]]:
    folder = tmp_path_factory.mktemp("dead-node")
    write_model(folder / "models", "test-mr", "MR")
    node = NodeProcess(folder, analysis={"models": str(folder / "models"), "intra_op_threads": 1},
                       routing=[{"name": "brain-mr", "modality": "MR", "model": "test-mr", "target": "brain",
                                 "max_analysed_slices": 4, "key_slices": 1}],
                       destinations={"dicom": [{"ae_title": "PACS", "host": "127.0.0.1", "port": free_port()}]},
                       delivery={"outbox": str(folder / "outbox"), "max_attempts": 1, "backoff_seconds": 0.1,
                                 "poll_seconds": 0.2})
    node.start()
    try:
        series = data / "dicom" / MR_SERIES
        assert send_paths([series], PeerAddress("ONCONODE", "127.0.0.1", node.port)).all_succeeded
        uid = study_uid(series)
        assert wait_until_done(node, uid, timeout=90) == StudyState.FAILED
        yield node, uid
    finally:
        node.stop()


def test_dead_letter_lists_the_objects_that_could_not_be_delivered(failed: tuple[NodeProcess, str]) -> None:
    node, uid = failed
    with httpx.Client(base_url=node.api_url) as api:
        dead = api.get("/deadletter").json()
        detail = api.get(f"/studies/{uid}").json()
    assert dead and {d["study_uid"] for d in dead} == {uid}
    assert {d["state"] for d in dead} == {"dead"} and all(d["last_error"] for d in dead)
    assert {d["kind"] for d in dead} == {"dicom"} and dead[0]["destination"].startswith("PACS@127.0.0.1:")
    assert {d["id"] for d in detail["deliveries"]} == {d["id"] for d in dead}
    assert "dead letter" in detail["reason"]


def test_replay_makes_a_dead_delivery_pending_and_is_404_afterwards(failed: tuple[NodeProcess, str]) -> None:
    node, uid = failed
    with httpx.Client(base_url=node.api_url) as api:
        first = api.get("/deadletter").json()[0]
        replayed = api.post(f"/deadletter/{first['id']}/replay", json={})
        assert replayed.status_code == 202, replayed.text
        assert replayed.json()["id"] == first["id"] and replayed.json()["attempts"] == 0
        assert replayed.json()["state"] in ("pending", "dead")  # the dispatcher may have tried again already
        states = [t["to_state"] for t in api.get(f"/studies/{uid}").json()["transitions"]]
    assert "delivering" in states[states.index("failed"):]


def test_delivery_attempts_are_audited_and_counted(failed: tuple[NodeProcess, str]) -> None:
    node, uid = failed
    deliveries = [r for r in read_audit(node.audit_path) if r["kind"] == "delivery"]
    assert deliveries and {r["study"] for r in deliveries} == {uid}
    assert {r["outcome"] for r in deliveries} >= {"dead"}
    assert all(r["destination"].startswith("PACS@") and r["error"] and r["object"] for r in deliveries)
    with httpx.Client(base_url=node.api_url) as api:

        def counted() -> str | None:
            text = api.get("/metrics").text
            return text if 'onconode_delivery_attempts_total{outcome="dead"}' in text else None

        metrics = wait_for(counted, 10, "the dead delivery counted")
    assert 'onconode_delivery_attempts_total{outcome="dead"}' in metrics
    assert 'onconode_deliveries{state="dead"}' in metrics
