"""Configuration: YAML, environment overrides, validation at start."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from onconode.config import Settings, load_settings


def test_embedded_defaults_are_loopback_and_tls_off() -> None:
    settings = Settings()
    assert (settings.node.host, settings.node.port, settings.node.ae_title) == ("127.0.0.1", 11112, "ONCONODE")
    assert settings.tls.enabled is False


def test_shipped_yaml_is_valid_and_lists_callers() -> None:
    settings = load_settings(Path(__file__).resolve().parents[1] / "config" / "onconode.yaml")
    assert {c.ae_title for c in settings.callers} >= {"ORTHANC", "STORESCU"}


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("node: {port: 2000, ae_title: FROMFILE}\nstudy: {stable_seconds: 5}\n")
    monkeypatch.setenv("ONCONODE_NODE__PORT", "3000")
    monkeypatch.setenv("ONCONODE_CALLERS", '[{"ae_title": "PACS", "host": "10.0.0.5"}]')
    settings = load_settings(config)
    assert settings.node.port == 3000 and settings.node.ae_title == "FROMFILE"
    assert settings.study.stable_seconds == 5
    assert settings.callers[0].host == "10.0.0.5"


def test_config_named_by_environment_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ONCONODE_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_settings()


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("node: {ae_title: 'WAY-TOO-LONG-AE-TITLE'}", "AE title"),
    ("node: {ae_title: 'BACK\\\\SLASH'}", "AE title"),
    ("callers: [{ae_title: '   '}]", "AE title"),
    ("node: {port: 70000}", "port"),
    ("node: {colour: blue}", "colour"),
    ("tls: {enabled: true}", "tls.enabled needs cert, key, ca"),
    ("tls: {enabled: true, cert: /nope.pem, key: /nope.key, ca: /nope.ca}", "no such file"),
])
def test_invalid_configuration_fails_at_start_naming_the_field(tmp_path: Path, yaml_text: str, message: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ValidationError, match=message):
        load_settings(config)
