"""Deployment files: compose.yaml and the Dockerfile wired consistently (no Docker engine runs here),
and the shipped Orthanc routing rule run for real in Orthanc, forwarding a study to a real node."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from onconode.config import load_settings
from onconode.dicom_node.scu import PeerAddress, send_paths
from tests.processed_node import MR_SERIES, Processed, study_uid
from tests.support import REPO, NodeProcess, free_port, wait_for

ORTHANC_DIR = REPO / "config" / "orthanc"


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "compose.yaml").read_text()))


def _orthanc_json() -> dict[str, Any]:
    return dict(json.loads((ORTHANC_DIR / "orthanc.json").read_text()))


def _env(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment with ``${VAR:-default}`` replaced by its default, as compose would."""
    return {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)) for k, v in service["environment"].items()}


def _dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def test_compose_wires_orthanc_and_onconode_together() -> None:
    services = _compose()["services"]
    assert {name for name, service in services.items() if "profiles" not in service} == {"orthanc", "onconode"}
    orthanc, node = services["orthanc"], services["onconode"]
    env = _env(node)
    assert env["ONCONODE_NODE__HOST"] == env["ONCONODE_API__HOST"] == "0.0.0.0"
    assert node["build"] == "." and "orthanc" in node["depends_on"]
    assert {"127.0.0.1:11112:11112", "127.0.0.1:8080:8080"} <= set(node["ports"])
    assert {"127.0.0.1:4242:4242", "127.0.0.1:8042:8042"} <= set(orthanc["ports"])
    mounts = {m.split(":")[1]: m.split(":")[0] for m in orthanc["volumes"] if m.startswith("./")}
    for source in mounts.values():
        assert (REPO / source).is_file(), source
    config = _orthanc_json()
    assert mounts["/etc/orthanc/orthanc.json"] == "./config/orthanc/orthanc.json"
    assert config["LuaScripts"] == ["/etc/orthanc/route.lua"] and "/etc/orthanc/route.lua" in mounts
    # Orthanc sends to the onconode service, on the port and AE title the node listens with.
    settings_node = load_settings(REPO / "config" / "onconode.yaml").node
    assert config["DicomModalities"]["onconode"] == {"AET": settings_node.ae_title, "Host": "onconode",
                                                     "Port": settings_node.port}
    # OncoNode accepts Orthanc's AE title and sends results back to Orthanc's DICOM port.
    assert json.loads(env["ONCONODE_CALLERS"]) == [{"ae_title": config["DicomAet"]}]
    assert json.loads(env["ONCONODE_DESTINATIONS__DICOM"]) == [
        {"ae_title": config["DicomAet"], "host": "orthanc", "port": config["DicomPort"]}]


def test_compose_environment_is_a_valid_onconode_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env(_compose()["services"]["onconode"])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(REPO / "config" / "onconode.yaml")
    assert settings.node.host == "0.0.0.0" and settings.api.host == "0.0.0.0"
    assert settings.api.token is not None and [c.ae_title for c in settings.callers] == ["ORTHANC"]
    assert settings.callers[0].host is None


def test_dockerfile_is_slim_non_root_with_a_health_check_on_health() -> None:
    text = _dockerfile()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert stages and all(re.fullmatch(r"python:3\.\d+-slim( AS \w+)?", s) or s.endswith("-slim") for s in stages)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    health = re.search(r"^HEALTHCHECK [^\n]*\\\n\s*CMD (\[.*\])$", text, re.MULTILINE)
    assert health, "HEALTHCHECK ... CMD [...] not found"
    command = json.loads(health.group(1))
    assert command[:2] == ["python", "-c"]
    assert "'http://127.0.0.1:' + os.environ.get('ONCONODE_API__PORT', '8080') + '/health'" in command[2]
    compile(command[2], "healthcheck", "exec")  # the probe is valid Python
    assert "ENV" in text and "ONCONODE_API__PORT=8080" in text
    assert "ONCONODE_NODE__HOST=0.0.0.0" in text and "ONCONODE_API__HOST=0.0.0.0" in text
    assert re.search(r"^EXPOSE 11112 8080$", text, re.MULTILINE)
    assert re.search(r"^COPY models/ ", text, re.MULTILINE)  # the models are part of the image
    assert re.search(r'^CMD \["onconode", "serve"\]$', text, re.MULTILINE)


def test_dockerfile_copies_only_files_that_exist() -> None:
    for line in re.findall(r"^COPY (?!--from)(.+)$", _dockerfile(), re.MULTILINE):
        *sources, _ = line.split()
        for source in sources:
            if source == "models/" and not (REPO / "models").is_dir():
                continue  # the models branch adds models/; the image build needs it
            assert (REPO / source).exists(), source


# --- the shipped Lua rule in a real Orthanc ----------------------------------------------------

@pytest.fixture
def orthanc_and_node(tmp_path: Path) -> Iterator[tuple[int, NodeProcess, Path]]:
    orthanc = shutil.which("Orthanc")
    if orthanc is None:
        pytest.skip("Orthanc not installed (CI installs it via .ci/run: apt-get install orthanc)")
    folder = tmp_path / "orthanc"
    folder.mkdir()
    node = NodeProcess(_mkdir(tmp_path / "node"))
    node.start()
    config = _orthanc_json()
    dicom_port, http_port = free_port(), free_port()
    config.update({"StorageDirectory": "db", "IndexDirectory": "db", "DicomPort": dicom_port, "HttpPort": http_port,
                   "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "StableAge": 1,
                   "LuaScripts": [str(ORTHANC_DIR / "route.lua")]})
    config["DicomModalities"]["onconode"].update({"Host": "127.0.0.1", "Port": node.port})
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("wb")
    proc = subprocess.Popen([orthanc, "orthanc.json"], cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                            env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"})
    try:
        _wait_http(http_port, proc)
        yield dicom_port, node, folder / "orthanc.log"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        node.stop()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _wait_http(port: int, proc: subprocess.Popen[bytes]) -> None:
    import urllib.request

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/system", timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("Orthanc did not start")


@pytest.mark.peers
def test_the_shipped_lua_rule_routes_a_stable_mr_series_to_onconode_and_not_its_results(
        orthanc_and_node: tuple[int, NodeProcess, Path], data: Path) -> None:
    dicom_port, node, log = orthanc_and_node
    series = data / "dicom" / MR_SERIES
    orthanc = PeerAddress("ORTHANC", "127.0.0.1", dicom_port)
    assert send_paths([series], orthanc, calling_ae="MODALITY").all_succeeded
    localizer = data / "dicom" / "misc" / "ct-localizer-ap.dcm"  # CT, but "sent by OncoNode": not routed
    assert send_paths([localizer], orthanc, calling_ae="ONCONODE").all_succeeded
    uid = study_uid(series)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        study = node.study(uid)
        if study is not None and study.instances == 24:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"the series never reached OncoNode:\n{log.read_text()[-3000:]}")
    # Orthanc's Lua rule prints its decision for the localizer once that series, too, is stable.
    wait_for(lambda: "route.lua: not routing CT series" in log.read_text(), 20, "the localizer's routing decision")
    assert "route.lua: routing MR series" in log.read_text()
    db = node.db()
    try:
        assert [s.study_uid for s in db.studies()] == [uid]  # the localizer stayed in Orthanc
    finally:
        db.close()


def test_the_healthcheck_command_passes_on_a_running_node_and_fails_without_one(processed: Processed) -> None:
    import os
    import sys

    health = re.search(r"^HEALTHCHECK [^\n]*\\\n\s*CMD (\[.*\])$", _dockerfile(), re.MULTILINE)
    assert health
    probe = json.loads(health.group(1))[2]
    port = processed.node.config["api"]["port"]
    for api_port, expected in ((port, 0), (free_port(), 1)):
        done = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "ONCONODE_API__PORT": str(api_port)},
                              capture_output=True, timeout=30, check=False)
        assert done.returncode == expected, done.stderr
