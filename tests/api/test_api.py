"""Every API route against a real node that has received and processed real studies."""

from __future__ import annotations

import re

import pytest

from onconode.state import StudyState
from tests.processed_node import ANALYSED_END, Processed, wait_until_done
from tests.support import wait_for


def _metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{labels} not in the metrics"
    return float(match.group(1))


def mr_state(processed: Processed) -> str:
    study = processed.node.study(processed.mr_study)
    assert study is not None
    return study.state.value


def test_health_answers_ok(processed: Processed) -> None:
    with processed.client() as api:
        response = api.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_checks_models_storage_and_listener(processed: Processed) -> None:
    with processed.client() as api:
        response = api.get("/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ready"] is True
    assert {c["name"]: c["ok"] for c in body["checks"]} == {"models": True, "storage": True, "dicom_listener": True}
    assert "test-mr" in next(c["detail"] for c in body["checks"] if c["name"] == "models")


def test_openapi_documents_every_route_with_typed_responses(processed: Processed) -> None:
    with processed.client() as api:
        spec = api.get("/openapi.json").json()
    for path in ("/health", "/ready", "/studies", "/studies/{study_uid}", "/studies/{study_uid}/reprocess",
                 "/deadletter", "/deadletter/{delivery_id}/replay", "/models", "/metrics"):
        assert path in spec["paths"], path
    assert {"StudyPage", "StudyDetail", "DeliveryOut", "Models", "Ready"} <= set(spec["components"]["schemas"])


def test_studies_lists_both_studies_with_the_finding(processed: Processed) -> None:
    with processed.client() as api:
        page = api.get("/studies").json()
    rows = {s["study_uid"]: s for s in page["items"]}
    assert page["total"] >= 2
    mr = rows[processed.mr_study]
    assert mr["state"] in ANALYSED_END
    assert mr["model"] == "test-mr"
    assert mr["finding"] == "test finding" and mr["headline"].startswith("test finding: ")
    assert 0.0 <= mr["positive_probability"] <= 1.0
    assert mr["positive"] == (mr["positive_probability"] >= mr["threshold"])
    assert f"study probability {mr['positive_probability']:.2f}" in mr["headline"]
    assert mr["instances"] == 24
    assert rows[processed.multiframe_study]["state"] == StudyState.NO_MODEL.value


def test_studies_filter_by_state_and_date_and_page(processed: Processed) -> None:
    with processed.client() as api:
        no_model = api.get("/studies", params={"state": "no_model"}).json()
        both = api.get("/studies", params=[("state", "no_model"), ("state", mr_state(processed))]).json()
        future = api.get("/studies", params={"since": "2999-01-01T00:00:00Z"}).json()
        past = api.get("/studies", params={"until": "2000-01-01"}).json()
        first = api.get("/studies", params={"limit": 1}).json()
        second = api.get("/studies", params={"limit": 1, "offset": 1}).json()
    assert [s["study_uid"] for s in no_model["items"]] == [processed.multiframe_study]
    assert {processed.mr_study, processed.multiframe_study} <= {s["study_uid"] for s in both["items"]}
    assert future["total"] == 0 and future["items"] == []
    assert past["total"] == 0
    assert len(first["items"]) == 1 and len(second["items"]) == 1
    assert first["items"][0]["study_uid"] != second["items"][0]["study_uid"]
    assert first["total"] == second["total"] >= 2


def test_study_detail_has_history_series_choice_result_timings_and_overlays(processed: Processed) -> None:
    with processed.client() as api:
        response = api.get(f"/studies/{processed.mr_study}")
        assert response.status_code == 200, response.text
        detail = response.json()
        png = api.get("/" + detail["overlays"][0])
    states = [t["to_state"] for t in detail["transitions"]]
    assert states[:4] == ["receiving", "stable", "queued", "analysing"]
    assert "reported" in states and states[-1] in ANALYSED_END
    assert [s["instances"] for s in detail["series"]] == [24]
    taken = [d for d in detail["series_decisions"] if d["taken"]]
    assert len(taken) == 1 and taken[0]["series_uid"] == detail["series"][0]["series_uid"] and taken[0]["reason"]
    assert detail["result"]["model"] == "test-mr"
    assert detail["result"]["outcome"] == "analysed"
    assert set(detail["result"]["probabilities"]) == {"malignant", "benign", "normal"}
    assert detail["result"]["key_slices"]
    conclusion = detail["conclusion"]
    assert conclusion["headline"] == detail["headline"] and conclusion["verdict"] in ("positive", "negative")
    assert conclusion["value_name"] == "study probability"
    assert conclusion["probability"] == detail["positive_probability"] == detail["result"]["positive_probability"]
    assert conclusion["model"] == "test-mr" and "per-slice probabilities" in conclusion["method"]
    assert conclusion["slices_analysed"] == detail["result"]["slices_analysed"]
    assert "NOT FOR DIAGNOSIS" in conclusion["not_for_diagnosis"]
    assert taken[0]["evidence"] and taken[0]["evidence"][0].startswith("region brain")
    assert detail["timings_ms"]["inference"] >= 0 and "analysis_total" in detail["timings_ms"]
    assert all(d["study_uid"] == processed.mr_study for d in detail["deliveries"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_no_model_study_says_why(processed: Processed) -> None:
    with processed.client() as api:
        detail = api.get(f"/studies/{processed.multiframe_study}").json()
    assert detail["state"] == "no_model"
    assert "no applicable model" in detail["reason"]
    assert detail["overlays"] == []


@pytest.mark.parametrize("uid", ["not-a-uid", "1.2.03", "1..2", "9.1", "1." + "2" * 70])
def test_a_malformed_uid_answers_422_json(processed: Processed, uid: str) -> None:
    with processed.client() as api:
        for response in (api.get(f"/studies/{uid}"), api.post(f"/studies/{uid}/reprocess", json={})):
            assert response.status_code == 422, response.text
            assert response.headers["content-type"] == "application/json"
            assert "study_uid" in response.json()["detail"]


def test_an_unknown_uid_answers_404_json(processed: Processed) -> None:
    with processed.client() as api:
        for response in (api.get("/studies/1.2.3.4.5"), api.post("/studies/1.2.3.4.5/reprocess", json={}),
                         api.get("/studies/1.2.3.4.5/overlays/key1.png"),
                         api.get(f"/studies/{processed.mr_study}/overlays/nothing.png"),
                         api.post("/deadletter/987654/replay", json={})):
            assert response.status_code == 404, response.text
            assert response.json()["detail"]
            assert "Traceback" not in response.text


def test_overlay_names_cannot_leave_the_results_folder(processed: Processed) -> None:
    with processed.client() as api:
        for name in ("..%2F..%2Fonconode.yaml", "%2E%2E.png", "a b.png"):
            response = api.get(f"/studies/{processed.mr_study}/overlays/{name}")
            assert response.status_code in (404, 422), (name, response.text)


def test_reprocess_queues_the_study_again_and_it_is_analysed_again(processed: Processed) -> None:
    uid = processed.multiframe_study
    with processed.client() as api:
        response = api.post(f"/studies/{uid}/reprocess", json={})
        assert response.status_code == 202, response.text
        assert response.json()["state"] in ("queued", "analysing", "no_model")
    assert wait_until_done(processed.node, uid) == StudyState.NO_MODEL
    with processed.client() as api:
        reasons = [t["reason"] for t in api.get(f"/studies/{uid}").json()["transitions"]]
    assert "reprocess requested over the API" in reasons


def test_dead_letter_lists_and_replay_needs_an_existing_id(processed: Processed) -> None:
    with processed.client() as api:
        assert api.get("/deadletter").json() == []
        assert api.post("/deadletter/not-a-number/replay", json={}).status_code == 422
        assert api.post("/deadletter/0/replay", json={}).status_code == 422


def test_models_lists_the_verified_models(processed: Processed) -> None:
    with processed.client() as api:
        body = api.get("/models").json()
    assert [m["name"] for m in body["models"]] == ["test-mr"]
    model = body["models"][0]
    assert model["modality"] == "MR" and re.fullmatch(r"[0-9a-f]{64}", model["sha256"])
    assert model["labels"] == ["malignant", "benign", "normal"] and model["positive_labels"] == ["malignant"]


def test_metrics_report_states_latencies_and_move_when_a_study_is_sent(processed: Processed) -> None:
    with processed.client() as api:
        before = api.get("/metrics")
        assert before.headers["content-type"].startswith("text/plain")
        processed.send(processed.data / "dicom" / "misc" / "ct-localizer-ap.dcm")
        received = _metric(before.text, "onconode_instances_received_total")

        def counted() -> str | None:  # the counters move when the association's summary arrives
            text = api.get("/metrics").text
            return text if _metric(text, "onconode_instances_received_total") > received else None

        after = wait_for(counted, 10, "the instance counted")
    text = before.text
    assert _metric(text, "onconode_instances_received_total") >= 25
    assert _metric(text, "onconode_studies", f'{{state="{mr_state(processed)}"}}') >= 1
    assert _metric(text, "onconode_stage_seconds_count", '{stage="inference"}') >= 1
    assert _metric(text, "onconode_stage_seconds_bucket", '{le="+Inf",stage="analysis_total"}') >= 1
    assert _metric(after, "onconode_instances_received_total") == _metric(text, "onconode_instances_received_total") + 1
    assert _metric(after, "onconode_received_bytes_total") > _metric(text, "onconode_received_bytes_total")
    assert (_metric(after, "onconode_associations_total", '{outcome="released"}')
            == _metric(text, "onconode_associations_total", '{outcome="released"}') + 1)
    assert _metric(after, "onconode_stored_instances") == _metric(text, "onconode_stored_instances") + 1
    assert "onconode_deliveries{state=\"dead\"} 0.0" in after
