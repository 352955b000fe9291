"""API hardening: readiness below the free-space floor, out-of-range queries answered 422 JSON,
security headers on every response, no write from a cross-site form, no foreign Host header.

The app is the one the node serves (``create_app``), in a TestClient on a real SQLite state in
``tmp_path`` holding one analysed study.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from onconode.api.app import create_app
from onconode.config import Settings
from onconode.state import ReceivedInstance, StateDB, StudyState
from onconode.values import InstanceIdentity

STUDY = "1.2.826.0.1.3680043.10.543.1"
CSP_SOURCES = ("default-src 'self'", "frame-ancestors 'none'", "object-src 'none'")


def _settings(tmp_path: Path, **api: object) -> Settings:
    return Settings(state={"database": tmp_path / "state.db"}, storage={"root": tmp_path / "store", "min_free_mb": 0},
                    analysis={"models": tmp_path / "models"}, node={"port": 1}, api=api)


def _client(settings: Settings, host: str = "127.0.0.1") -> TestClient:
    return TestClient(create_app(settings), base_url=f"http://{host}:8080", raise_server_exceptions=False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    db = StateDB(tmp_path / "state.db")
    identity = InstanceIdentity(STUDY, STUDY + ".1", STUDY + ".1.1", "1.2.840.10008.5.1.4.1.1.2", "CT")
    db.record_instance(ReceivedInstance(identity, "1.2.840.10008.1.2.1", 10, "0" * 64, time.time(), "PACS"))
    assert db.transition(STUDY, StudyState.NO_MODEL, "test: analysed, nothing applicable")
    db.close()
    return _settings(tmp_path)


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with _client(settings) as client:
        yield client


def _state(settings: Settings) -> StudyState:
    db = StateDB(settings.state.database)
    try:
        study = db.study(STUDY)
        assert study is not None
        return study.state
    finally:
        db.close()


def test_ready_says_not_ready_below_the_free_space_floor(settings: Settings) -> None:
    floor = settings.model_copy(update={"storage": settings.storage.model_copy(update={"min_free_mb": 1 << 40})})
    with _client(floor) as client:
        response = client.get("/ready")
    assert response.status_code == 503
    storage = next(c for c in response.json()["checks"] if c["name"] == "storage")
    assert storage["ok"] is False and "below storage.min_free_mb" in storage["detail"]


@pytest.mark.parametrize(("path", "params"), [
    ("/studies", {"offset": str(2**63)}),
    ("/studies", {"offset": str(2**63 - 1)}),
    ("/deadletter", {"offset": str(2**64)}),
    ("/studies", {"since": "0001-01-01T00:00:00"}),
    ("/studies", {"until": "0001-01-01T00:00:00Z"}),
    ("/studies", {"since": "9999-12-31T23:59:59"}),
])
def test_out_of_range_queries_answer_422_json(api: TestClient, path: str, params: dict[str, str]) -> None:
    response = api.get(path, params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"detail"}


@pytest.mark.parametrize("path", ["/health", "/ready", "/studies", f"/studies/{STUDY}", "/studies/1.2.9",
                                  "/studies?limit=0", "/status/", "/status/app.js", "/metrics", "/openapi.json"])
def test_every_response_carries_the_security_headers(api: TestClient, path: str) -> None:
    headers = api.get(path).headers
    assert all(source in headers["content-security-policy"] for source in CSP_SOURCES)
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


def test_the_docs_page_gets_a_csp_that_lets_it_load(api: TestClient) -> None:
    headers = api.get("/docs").headers
    assert "https://cdn.jsdelivr.net" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          None])
def test_a_cross_site_write_cannot_reach_reprocess_without_a_token(
        api: TestClient, settings: Settings, content_type: str | None) -> None:
    headers = {"Origin": "https://evil.example", **({"Content-Type": content_type} if content_type else {})}
    response = api.post(f"/studies/{STUDY}/reprocess", content=b"x=1", headers=headers)
    assert response.status_code == 403
    assert "application/json" in response.json()["detail"]
    assert _state(settings) == StudyState.NO_MODEL


@pytest.mark.parametrize("headers", [{"Content-Type": "application/json"}, {"X-Requested-With": "onconode"}])
def test_a_json_or_custom_header_write_reaches_reprocess(api: TestClient, settings: Settings,
                                                         headers: dict[str, str]) -> None:
    response = api.post(f"/studies/{STUDY}/reprocess", content=b"{}", headers=headers)
    assert response.status_code == 202, response.text
    assert _state(settings) == StudyState.QUEUED


def test_with_a_token_the_bearer_header_is_enough_for_a_write(settings: Settings, tmp_path: Path) -> None:
    with _client(_settings(tmp_path, token="s3cret")) as client:
        denied = client.post(f"/studies/{STUDY}/reprocess", headers={"Content-Type": "text/plain"})
        allowed = client.post(f"/studies/{STUDY}/reprocess", headers={"Authorization": "Bearer s3cret"})
    assert denied.status_code == 401
    assert allowed.status_code == 202


@pytest.mark.parametrize("host", ["evil.example", "attacker.127.0.0.1.nip.io", "127.0.0.1.evil.example"])
def test_a_foreign_host_header_is_refused_with_json(settings: Settings, host: str) -> None:
    with _client(settings, host) as client:
        response = client.get("/studies")
    assert response.status_code == 400
    assert response.json() == {"detail": "the Host header names a host this API does not serve"}
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_loopback_host_headers_are_served(settings: Settings, host: str) -> None:
    with _client(settings, host) as client:
        assert client.get("/health").status_code == 200


def test_configured_host_names_are_served(tmp_path: Path) -> None:
    settings = _settings(tmp_path, host="0.0.0.0", allowed_hosts=["onconode.example.org", "*.ward.example.org"])
    for host, served in (("onconode.example.org", True), ("node3.ward.example.org", True),
                         ("0.0.0.0", False), ("example.org", False)):
        with _client(settings, host) as client:
            assert (client.get("/health").status_code == 200) == served, host
