"""End-to-end benchmark: PACS (Orthanc) → OncoNode → SC + SR back in Orthanc, on loopback.

storescu sends lidc-idri-0001 (133 CT slices) to Orthanc (TCP_NODELAY=1); Orthanc's Lua
OnStableSeries rule routes the series to a real ``onconode serve``; the node analyses it, builds
SC + SR (+ FHIR when --fhir is given a base URL), and C-STOREs them back to Orthanc.

Per stage, from the node's state rows (wall clock, same machine):
  stable wait   last instance received → QUEUED (configured ``study.stable_seconds``; excluded)
  queue wait    QUEUED → ANALYSING
  analysis      the worker's own analysis_total
  reporting     end of analysis → report recorded in the outbox (SC + SR built, checked, fsynced)
  delivery      report recorded → SR C-STORE answered Success by Orthanc (= stored there)
  total         last instance received → SR stored, minus the stable wait
and compares with Orthanc's own time to store the 133 instances sent by storescu.

The model is the tests' tiny ONNX classifier at 224 px unless --models names a folder with
chest-ct-cancer. Not a test: no assertion on time. Run: `make bench-e2e`.
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
from tests.inference.tiny_model import write_model
from tests.peers import Orthanc
from tests.support import NodeProcess, free_port

DATA = Path(os.environ.get("ONCONODE_DATA", REPO.parent / "shared" / "data"))
SERIES = DATA / "dicom" / "lidc-idri-0001"


def _at(db: StateDB, study_uid: str, state: StudyState) -> float:
    return max(t.at for t in db.transitions(study_uid) if t.to_state == state)


def run(work: Path, stable_seconds: float, models: Path | None) -> dict[str, float]:
    files = sorted(SERIES.glob("*.dcm"))
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    if models is None:
        models = work / "models"
        write_model(models, "chest-ct-cancer", "CT", size=224)
    node_port = free_port()
    orthanc = Orthanc(work / "orthanc", node_port, stable_age=1)
    (work / "node").mkdir()
    node = NodeProcess(
        work / "node", node={"port": node_port},
        study={"stable_seconds": stable_seconds, "poll_seconds": 0.05},
        callers=[{"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.dicom_port}],
        analysis={"models": str(models)},
        routing=[{"name": "chest-ct", "modality": "CT", "model": "chest-ct-cancer", "target": "lung"}],
        delivery={"poll_seconds": 0.05})
    orthanc.start()
    node.start()
    try:
        started = time.perf_counter()
        subprocess.run(["storescu", "-aet", "MODALITY", "-aec", "ORTHANC", "127.0.0.1", str(orthanc.dicom_port),
                        *map(str, files)], check=True, capture_output=True, env={**os.environ, "TCP_NODELAY": "1"})
        orthanc_store_s = time.perf_counter() - started
        node.wait_for_state(study_uid, StudyState.DELIVERED, timeout=300)
        db = node.db()
        try:
            study = db.study(study_uid)
            assert study is not None and study.instances == len(files)
            queued = _at(db, study_uid, StudyState.QUEUED)
            analysing = _at(db, study_uid, StudyState.ANALYSING)
            result = db.latest_result(study_uid)
            assert result is not None
            analysis_s = result["timings_ms"]["analysis_total"] / 1000
            report = db.latest_report(study_uid)
            assert report is not None
            sr = next(d for d in db.deliveries(study_uid, DeliveryState.SENT) if d.object_uid == report.sr_sop_uid)
            assert sr.sent_at is not None
            last = study.last_received_at
            stages = {
                "stable_wait_s (excluded)": queued - last,
                "queue_wait_s": analysing - queued,
                "analysis_s": analysis_s,
                "reporting_s": report.created_at - (analysing + analysis_s),
                "delivery_s": sr.sent_at - report.created_at,
            }
            stages["total_s (last instance → SR stored, minus stable wait)"] = sr.sent_at - last - (queued - last)
        finally:
            db.close()
        in_orthanc = orthanc.series("SR")
        stages["orthanc_store_133_s"] = orthanc_store_s
        stages["sr_series_in_orthanc"] = float(len(in_orthanc))
        print(json.dumps({"analysis_stages_ms": result["timings_ms"]}, indent=1))
        return stages
    finally:
        node.stop()
        orthanc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stable-seconds", type=float, default=1.0)
    parser.add_argument("--models", type=Path, default=None, help="folder with chest-ct-cancer (default: tiny)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if not SERIES.is_dir():
        print(f"data not found: {SERIES} (set ONCONODE_DATA)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="onconode-bench-e2e-"))
    try:
        stages = run(work, args.stable_seconds, args.models)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    width = max(map(len, stages))
    for name, value in stages.items():
        print(f"{name:<{width}}  {value:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
