"""The operations commands: models list|verify and doctor, and --help on every command."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.inference.tiny_model import write_model
from tests.processed_node import Processed
from tests.support import free_port

COMMANDS = [[], ["serve"], ["send"], ["echo"], ["analyze"], ["models"], ["models", "list"], ["models", "verify"],
            ["deadletter"], ["doctor"]]


def onconode(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["--config", str(config)] if config else []
    return subprocess.run([sys.executable, "-m", "onconode", *prefix, *args], capture_output=True, text=True,
                          timeout=120, check=False)


def _config(tmp_path: Path, **sections: Any) -> Path:
    write_model(tmp_path / "models", "test-mr", "MR")
    config: dict[str, Any] = {
        "node": {"port": free_port()},
        "storage": {"root": str(tmp_path / "store"), "results": str(tmp_path / "results"), "min_free_mb": 1},
        "state": {"database": str(tmp_path / "db" / "onconode.db")},
        "callers": [{"ae_title": "ORTHANC", "host": "127.0.0.1"}],
        "routing": [{"name": "brain", "modality": "MR", "model": "test-mr"}],
        "analysis": {"models": str(tmp_path / "models")},
        "api": {"port": free_port()},
        "audit": {"path": str(tmp_path / "audit.jsonl")},
    }
    config.update(sections)
    path = tmp_path / "onconode.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "onconode")
def test_every_command_has_help(command: list[str]) -> None:
    done = onconode(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: onconode") and len(done.stdout.splitlines()) >= 4


def test_models_list_and_verify_a_good_model(tmp_path: Path) -> None:
    config = _config(tmp_path)
    listed = onconode("models", "list", config=config)
    assert listed.returncode == 0 and "test-mr" in listed.stdout and "malignant*" in listed.stdout
    verified = onconode("models", "verify", config=config)
    assert verified.returncode == 0, verified.stdout
    assert verified.stdout.startswith("ok      test-mr 0.0.1-test")


def test_models_list_says_which_shipped_model_states_no_verdict() -> None:
    shipped = Path(__file__).resolve().parents[1] / "models"
    listed = onconode("models", "list", "--models", str(shipped))
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines() if line and not line[0].isspace()}
    assert "no verdict (ranks slices)" in lines["chest-ct-nodule"]
    assert "threshold " in lines["brain-mr-tumour"] and "no verdict" not in lines["brain-mr-tumour"]


def test_models_verify_fails_on_a_changed_onnx_file(tmp_path: Path) -> None:
    config = _config(tmp_path)
    onnx = tmp_path / "models" / "test-mr.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    done = onconode("models", "verify", config=config)
    assert done.returncode == 1
    assert "FAILED  test-mr.yaml" in done.stdout and "sha256" in done.stdout


def test_doctor_passes_a_good_configuration(tmp_path: Path) -> None:
    done = onconode("doctor", "--offline", config=_config(tmp_path))
    assert done.returncode == 0, done.stdout
    assert "test-mr 0.0.1-test (MR) verified" in done.stdout
    assert "0 problem(s)" in done.stdout


def test_doctor_says_what_is_wrong_in_plain_words(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))  # bound, not listening: nobody answers on it
        port = busy.getsockname()[1]
        garbage = tmp_path / "garbage.pem"
        garbage.write_text("not a certificate\n")
        config = _config(tmp_path, node={"port": port}, callers=[],
                         tls={"enabled": True, "cert": str(garbage), "key": str(garbage), "ca": str(garbage)},
                         routing=[{"name": "chest", "modality": "CT", "model": "chest-ct-cancer"}],
                         api={"host": "0.0.0.0", "port": free_port()},
                         storage={"root": str(tmp_path / "store"), "min_free_mb": 10 ** 12})
        done = onconode("doctor", "--offline", config=config)
    assert done.returncode == 1
    out = done.stdout
    assert "rule chest sends CT series to model chest-ct-cancer, which is not installed" in out
    assert f"cannot listen on 127.0.0.1:{port}" in out
    assert "the API listens on 0.0.0.0 without api.token" in out
    assert "every C-STORE will be refused" in out
    assert "callers is empty" in out
    assert f"tls: cannot load cert {tmp_path / 'garbage.pem'}" in out


def test_doctor_reports_an_invalid_configuration_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("node: {port: 70000}\n")
    done = onconode("doctor", config=path)
    assert done.returncode == 2
    assert done.stderr.startswith("onconode doctor: configuration:") and "Traceback" not in done.stderr


def test_serve_stops_in_one_line_when_the_api_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = _config(tmp_path, api={"port": port})
        done = onconode("serve", config=config)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"onconode serve: HTTP API could not listen on 127.0.0.1:{port} (in use or not an address of this host)")


def test_doctor_reaches_dicom_and_fhir_destinations_or_says_why_not(processed: Processed) -> None:
    from onconode.doctor import Level, _echo, _http_reachable

    node = processed.node
    assert _echo("ONCONODE", "127.0.0.1", node.port).level is Level.OK
    down = _echo("PACS", "127.0.0.1", free_port())
    assert down.level is Level.PROBLEM and down.message.startswith("DICOM destination PACS@127.0.0.1:")
    assert _http_reachable(node.api_url).level is Level.OK  # answers HTTP (404 for /metadata) = reachable
    unreachable = _http_reachable(f"http://127.0.0.1:{free_port()}/fhir")
    assert unreachable.level is Level.PROBLEM and "cannot be reached" in unreachable.message
