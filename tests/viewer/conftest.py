"""The viewer tests' peers: Orthanc with DICOMweb holding a real CT study and OncoNode's outputs for it,
OHIF Viewer 3 served in front of it (``ohif.OhifServer``), and headless Chromium driven by Playwright.

Orthanc, OHIF and Chromium start once per module; each test gets a fresh browser context (empty
storage) and opens OHIF anew.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests import peers
from tests.reporting_fixtures import *
from tests.support import REPO, require
from tests.viewer.ohif import OhifServer, copy_artifact

CHROMIUM = Path("/usr/bin/chromium")
# No outside network on the test machines: nothing in the browser may try to reach it.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "var" / "artifacts" / "viewer"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
# OHIF's first-run tour (shepherd.js) would cover the viewport; a reader who has seen it once has this.
SEEN_TOUR = "localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));"


@dataclass(frozen=True)
class Series:
    """One series as the viewer lists it, read from the files that were sent."""

    uid: str
    number: int
    description: str
    modality: str
    sop_class: str
    files: tuple[Path, ...]


@dataclass(frozen=True)
class Study:
    """The study in Orthanc: the source CT series and OncoNode's output series."""

    uid: str
    patient_name: str
    source: Series
    outputs: tuple[Series, ...]

    @property
    def instances(self) -> int:
        return len(self.source.files) + sum(len(s.files) for s in self.outputs)

    def outputs_of(self, *sop_classes: str) -> list[Series]:
        return [s for s in self.outputs if s.sop_class in sop_classes]


@dataclass
class Viewer:
    """Orthanc + OHIF + Chromium for one module, and the study once stored."""

    folder: Path
    orthanc: peers.Orthanc
    server: OhifServer
    browser: Any  # playwright.sync_api.Browser
    study: Study | None = None
    console: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url


def series_of(files: list[Path]) -> list[Series]:
    groups: dict[str, list[tuple[pydicom.Dataset, Path]]] = {}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        groups.setdefault(str(ds.SeriesInstanceUID), []).append((ds, path))
    found = []
    for uid, members in groups.items():
        first = members[0][0]
        found.append(Series(uid, int(first.get("SeriesNumber", 0) or 0), str(first.get("SeriesDescription", "")),
                            str(first.Modality), str(first.SOPClassUID), tuple(sorted(p for _, p in members))))
    return sorted(found, key=lambda s: s.number)


def send(viewer: Viewer, files: list[Path]) -> None:
    """C-STORE with DCMTK dcmsend: it proposes each file's own SOP class and transfer syntax (storescu's
    default list lacks Comprehensive 3D SR, PEERS.md 1)."""
    args = [require("dcmsend"), "-aet", "ONCONODE", "-aec", "ORTHANC", "127.0.0.1", str(viewer.orthanc.dicom_port),
            *map(str, files)]
    done = subprocess.run(args, check=False, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TCP_NODELAY": "1"})
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory, dicom_dir: Path) -> Iterator[Viewer]:
    """Orthanc, OHIF and Chromium; asks for ``dicom_dir`` first so that missing data skips before any start."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not installed (CI installs it via .ci/run: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install '.[test]')")
    dist = peers.ohif()
    folder = tmp_path_factory.mktemp("viewer")
    orthanc = peers.Orthanc(folder / "orthanc", node_port=None, dicomweb=True)
    orthanc.start()
    server = OhifServer(dist, orthanc.dicomweb_url, folder / "ohif-server.log")
    server.start()
    try:
        with sync_api.sync_playwright() as playwright:
            # launch() gives Chromium a fresh temporary user-data-dir, removed on close.
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS,
                                                 timeout=60_000)
            try:
                yield Viewer(folder, orthanc, server, browser)
            finally:
                browser.close()
    finally:
        server.stop()
        orthanc.stop()


@pytest.fixture
def study(viewer: Viewer, prepare: Callable[..., Any], ct_files: list[Path], ct_result: Any) -> Study:
    """The CT series and OncoNode's outputs for it, in Orthanc.

    ``prepare`` (tests/reporting_fixtures.py) runs per test and makes new UIDs each time, so the first
    test that asks for the study prepares and sends it, and the module's ``viewer`` keeps it.
    Everything in the report's outbox folder is sent, so outputs added later (SEG, Parametric Map,
    KOS) reach the viewer with no change here.
    """
    if viewer.study is None:
        _, prepared = prepare(ct_files, ct_result)
        outbox = viewer.folder / "outputs"
        shutil.copytree(prepared.folder, outbox, ignore=shutil.ignore_patterns("*.json", "*.tmp"))
        outputs = sorted(outbox.glob("*.dcm"))
        send(viewer, [*ct_files, *outputs])
        source = pydicom.dcmread(ct_files[0], stop_before_pixels=True)
        (source_series,) = series_of(list(ct_files))
        viewer.study = Study(str(source.StudyInstanceUID), str(source.PatientName), source_series,
                             tuple(series_of(outputs)))
        stored = viewer.orthanc.post("/tools/find", {"Level": "Instance",
                                                     "Query": {"StudyInstanceUID": viewer.study.uid}})
        assert isinstance(stored, list) and len(stored) == viewer.study.instances, stored
    return viewer.study


@pytest.fixture
def page(viewer: Viewer, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh browser context and page. At the end, pass or fail, the page as it was is kept as
    ``<test>.last.png`` and the console's warnings and errors as ``<test>.console.log``."""
    context = viewer.browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(SEEN_TOUR)
    context.set_default_timeout(20_000)
    page = context.new_page()
    lines: list[str] = []
    page.on("console", lambda m: lines.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: lines.append(f"pageerror: {e}"))
    try:
        yield page
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        last = tmp_path / f"{request.node.name}.last.png"
        try:
            page.screenshot(path=str(last))
            copy_artifact(last, ARTIFACTS)
        finally:
            context.close()
            (ARTIFACTS / f"{request.node.name}.console.log").write_text("\n".join(lines) + "\n")


@pytest.fixture
def shoot(tmp_path: Path) -> Callable[[Any, str], Path]:
    """shoot(page, name): a screenshot in the test's tmp_path, copied to var/artifacts/viewer/."""

    def take(page: Any, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path))
        copy_artifact(path, ARTIFACTS)
        return path

    return take
