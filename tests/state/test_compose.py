"""compose.yaml's scaled profile, checked without a Docker engine (none runs here): PostgreSQL, two
receivers behind the name Orthanc sends to, two workers, the API, each a valid OncoNode
configuration on one database and one shared storage volume, together running every role."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from onconode.cli import build_parser
from onconode.config import Role, load_settings
from tests.support import REPO

SCALED_NODES = {"receiver-1", "receiver-2", "worker-1", "worker-2", "api"}


def _services() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "compose.yaml").read_text())["services"])


def _env(service: dict[str, Any]) -> dict[str, str]:
    """The environment with ``${VAR:-default}`` replaced by its default, as compose would."""
    return {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)) for k, v in service["environment"].items()}


def _roles(service: dict[str, Any]) -> set[Role]:
    command = service["command"]
    assert command[:2] == ["onconode", "serve"]
    return set(build_parser().parse_args(command[1:]).roles)


def test_the_scaled_profile_runs_every_role_on_postgresql() -> None:
    services = _services()
    scaled = {name for name, s in services.items() if s.get("profiles") == ["scaled"]}
    assert scaled == SCALED_NODES | {"postgres"}
    roles = {name: _roles(services[name]) for name in SCALED_NODES}
    assert roles == {"receiver-1": {Role.RECEIVE}, "receiver-2": {Role.RECEIVE},
                     "worker-1": {Role.ANALYSE, Role.DELIVER}, "worker-2": {Role.ANALYSE, Role.DELIVER},
                     "api": {Role.API}}
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:") and postgres["healthcheck"]["test"][1] == "pg_isready"
    for name in SCALED_NODES:
        assert services[name]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert services[name]["image"] == services["onconode"]["image"]


@pytest.mark.parametrize("name", sorted(SCALED_NODES))
def test_each_scaled_service_is_a_valid_configuration_on_the_shared_database_and_storage(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    services = _services()
    service = services[name]
    dockerfile = dict(re.findall(r"(ONCONODE_\w+)=(\S+)", (REPO / "Dockerfile").read_text()))
    for key, value in {**dockerfile, **_env(service)}.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(REPO / "config" / "onconode.yaml")
    pg = _env(services["postgres"])
    assert settings.state.url is not None
    assert settings.state.url.get_secret_value() == (
        f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}")
    # One volume, at the folder holding the storage root, the results, the outbox and the audit files.
    mounts = dict(reversed(m.split(":")[:2]) for m in service["volumes"])
    shared = Path(next(path for path, volume in mounts.items() if volume == "onconode-shared"))
    for folder in (settings.storage.root, settings.storage.results, settings.delivery.outbox):
        assert folder.is_relative_to(shared), folder
    assert settings.audit.path is not None and settings.audit.path.is_relative_to(shared)
    assert settings.audit.path.name == f"{name}.jsonl"  # one writer per file
    assert all(p.startswith("127.0.0.1:") for p in service.get("ports", []))


def test_the_receivers_answer_to_the_name_and_port_orthanc_sends_to() -> None:
    services = _services()
    modality = json.loads((REPO / "config" / "orthanc" / "orthanc.json").read_text())["DicomModalities"]["onconode"]
    port = load_settings(REPO / "config" / "onconode.yaml").node.port
    for name in ("receiver-1", "receiver-2"):
        assert modality["Host"] in services[name]["networks"]["default"]["aliases"]
        assert [p.rsplit(":", 1)[1] for p in services[name]["ports"]] == [str(port)] == [str(modality["Port"])]
    published = [p.rsplit(":", 1)[0] for s in services.values() if s.get("profiles") == ["scaled"]
                 for p in s.get("ports", [])]
    assert len(published) == len(set(published))  # no host port twice within the profile
