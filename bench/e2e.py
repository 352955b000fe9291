"""End-to-end benchmark: PACS (Orthanc) → OncoNode → SC + SR back in Orthanc, on loopback.

storescu sends lidc-idri-0001 (133 CT slices; ``--study`` another) to Orthanc (TCP_NODELAY=1); Orthanc's Lua
OnStableSeries rule (StableAge 10 by default, as a PACS would be set up) routes the series to a real
``onconode serve`` on its embedded defaults (no routing rules: the models' manifests choose); the node
analyses it with the shipped models, builds its outputs and C-STOREs them back to Orthanc.

Stages (wall clock, same machine; the node's from its state rows):
  orthanc_store      storescu's first instance sent → storescu done (Orthanc stored all 133)
  orthanc_stable     → first instance at the node (Orthanc's StableAge)
  transfer           first → last instance at the node (one association)
  completion         last instance → QUEUED (the signal that completed it is printed): with
                     ``count_query`` (default) Orthanc is asked by C-FIND for the study's count at
                     the release; ``--no-count-query`` leaves it to the 2 s settle time
  queue_wait         QUEUED → ANALYSING
  analysis           the worker's own analysis_total
  reporting          end of analysis → report recorded in the outbox (built, checked, fsynced)
  delivery           report recorded → SR C-STORE answered Success by Orthanc (= stored there)
  total              first instance sent → SR stored in Orthanc
The physical floor beside it: Orthanc's StableAge plus the analysis alone. Not a test: no assertion
on time. Run: `make bench-e2e` (`--stable-age`, `--models`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pydicom

from onconode.state import DeliveryState, StateDB, StudyState
from tests.peers import Orthanc
from tests.support import NodeProcess, free_port

DATA = Path(os.environ.get("ONCONODE_DATA", REPO.parent / "shared" / "data"))
SERIES = DATA / "dicom" / "lidc-idri-0001"


def _proposing(files: list[Path]) -> list[str]:
    """storescu's option to propose JPEG Lossless as well, where the study is stored in it (as the
    COVID-CT-MD and Lung-PET-CT-Dx studies are): by default it proposes uncompressed syntaxes only."""
    syntaxes = {str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID) for f in files}
    return ["-xs"] if "1.2.840.10008.1.2.4.70" in syntaxes else []


def _at(db: StateDB, study_uid: str, state: StudyState) -> float:
    return max(t.at for t in db.transitions(study_uid) if t.to_state == state)


def run(work: Path, stable_age: int, models: Path, count_query: bool = True,
        study: Path = SERIES) -> tuple[dict[str, float], str]:
    files = sorted(study.rglob("*.dcm"))
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    node_port = free_port()
    orthanc = Orthanc(work / "orthanc", node_port, stable_age=stable_age)
    (work / "node").mkdir()
    # The embedded study defaults (stable_seconds 10, settle_seconds 2) but a fast poll.
    node = NodeProcess(
        work / "node", node={"port": node_port},
        study={"stable_seconds": 10, "settle_seconds": 2, "poll_seconds": 0.05},
        callers=[{"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.dicom_port, "count_query": count_query}],
        analysis={"models": str(models)}, delivery={"poll_seconds": 0.05})
    orthanc.start()
    node.start()
    try:
        proposing = _proposing(files)  # reads every header: before the clock starts
        started = time.time()
        subprocess.run(["storescu", *proposing, "-aet", "MODALITY", "-aec", "ORTHANC", "127.0.0.1",
                        str(orthanc.dicom_port), *map(str, files)],
                       check=True, capture_output=True, env={**os.environ, "TCP_NODELAY": "1"})
        stored_in_orthanc = time.time()
        node.wait_for_state(study_uid, StudyState.DELIVERED, timeout=300)
        db = node.db()
        try:
            study = db.study(study_uid)
            assert study is not None and study.instances == len(files)
            stable = next(t for t in db.transitions(study_uid) if t.to_state == StudyState.STABLE)
            queued = _at(db, study_uid, StudyState.QUEUED)
            analysing = _at(db, study_uid, StudyState.ANALYSING)
            result = db.latest_result(study_uid)
            assert result is not None
            analysis_s = result["timings_ms"]["analysis_total"] / 1000
            report = db.latest_report(study_uid)
            assert report is not None
            sr = next(d for d in db.deliveries(study_uid, DeliveryState.SENT) if d.object_uid == report.sr_sop_uid)
            assert sr.sent_at is not None
            first, last = study.first_received_at, study.last_received_at
            stages = {
                "orthanc_store_s": stored_in_orthanc - started,
                "orthanc_stable_s": first - stored_in_orthanc,
                "transfer_s": last - first,
                "completion_s": queued - last,
                "queue_wait_s": analysing - queued,
                "analysis_s": analysis_s,
                "reporting_s": report.created_at - (analysing + analysis_s),
                "delivery_s": sr.sent_at - report.created_at,
                "total_s (first instance sent → SR stored in Orthanc)": sr.sent_at - started,
                "floor_s (StableAge + analysis)": stable_age + analysis_s,
            }
        finally:
            db.close()
        stages["sr_series_in_orthanc"] = float(len(orthanc.series("SR")))
        print(json.dumps({"analysis_stages_ms": result["timings_ms"]}, indent=1))
        return stages, stable.reason or ""
    finally:
        node.stop()
        orthanc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stable-age", type=int, default=10, help="Orthanc's StableAge (seconds)")
    parser.add_argument("--models", type=Path, default=REPO / "models", help="the models folder (default: shipped)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--no-count-query", dest="count_query", action="store_false",
                        help="do not ask Orthanc for the study's count (the settle time decides)")
    parser.add_argument("--study", type=Path, default=SERIES,
                        help="a folder holding one study, every series of it (default: LIDC-IDRI-0001)")
    args = parser.parse_args()
    if not args.study.is_dir():
        print(f"data not found: {args.study} (set ONCONODE_DATA)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="onconode-bench-e2e-"))
    try:
        stages, completed_by = run(work, args.stable_age, args.models, args.count_query, args.study)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"completed by: {completed_by}")
    width = max(map(len, stages))
    for name, value in stages.items():
        print(f"{name:<{width}}  {value:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
