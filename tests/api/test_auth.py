"""Bearer token: on when ``api.token`` is set, off otherwise; probes stay open for health checkers.

The app runs in a TestClient on the database a real node filled (``processed``), through the same
``create_app`` the node serves; only the settings differ.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from onconode.api.app import create_app
from onconode.config import Settings
from tests.processed_node import Processed

TOKEN = "correct horse battery staple"


def _client(processed: Processed, token: str | None) -> TestClient:
    config = processed.node.config
    settings = Settings(state=config["state"], storage=config["storage"], analysis=config["analysis"],
                        node=config["node"], api={"token": token})
    return TestClient(create_app(settings), base_url="http://127.0.0.1:8080", raise_server_exceptions=False)


@pytest.fixture
def secured(processed: Processed) -> Iterator[TestClient]:
    with _client(processed, TOKEN) as client:
        yield client


@pytest.mark.parametrize("method,path", [("get", "/studies"), ("get", "/models"), ("get", "/metrics"),
                                         ("get", "/deadletter"), ("post", "/deadletter/1/replay"),
                                         ("get", "/studies/1.2.3")])
def test_without_or_with_a_wrong_token_every_route_answers_401_json(secured: TestClient, method: str,
                                                                     path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = getattr(secured, method)(path, headers=headers)
        assert response.status_code == 401, (path, headers, response.text)
        assert response.json() == {"detail": "missing or wrong bearer token"}
        assert response.headers["www-authenticate"] == "Bearer"


def test_with_the_token_the_routes_answer(secured: TestClient, processed: Processed) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    page = secured.get("/studies", headers=headers)
    assert page.status_code == 200
    assert processed.mr_study in {s["study_uid"] for s in page.json()["items"]}
    assert secured.get(f"/studies/{processed.mr_study}", headers=headers).status_code == 200


def test_probes_and_the_status_page_need_no_token(secured: TestClient) -> None:
    assert secured.get("/health").json() == {"status": "ok"}
    assert secured.get("/ready").status_code in (200, 503)  # no listener in this process: 503 is right
    page = secured.get("/status/")
    assert page.status_code == 200 and "<title>OncoNode status</title>" in page.text


def test_without_a_configured_token_no_header_is_needed(processed: Processed) -> None:
    with _client(processed, None) as client:
        assert client.get("/studies").status_code == 200


def test_the_token_is_secret_in_the_settings_repr() -> None:
    settings = Settings(api={"token": TOKEN})
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.api)


def test_an_unexpected_error_is_json_without_a_traceback(processed: Processed, tmp_path: Path) -> None:
    from onconode.api.deps import get_db
    from onconode.state import StateDB

    closed = StateDB(tmp_path / "closed.db")
    closed.close()  # every query now raises sqlite3.ProgrammingError: a bug path, not a StateError
    with _client(processed, None) as client:
        client.app.dependency_overrides[get_db] = lambda: closed  # type: ignore[attr-defined]
        response = client.get("/studies")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error (see the node log)"}
