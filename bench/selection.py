"""Benchmark: classifying a study's series from headers already read (selection without pixels).

The target is ≤ 50 ms for a 500-instance study. The headers of LIDC-IDRI-0001 (133 CT slices) are
read once, then repeated with new positions and UIDs into a 500-instance series plus a 3-instance
localizer series; the timed part is what the worker does after reading headers: the exclusions,
each series' profile (region, sequence, geometry) and the model choice against two manifests
(the test models: a chest CT and a brain MR one). Pixels are not read: the headers name the region.

Usage: ``python bench/selection.py [--runs 20]``; prints the median and range in milliseconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from onconode.models import load_registry
from onconode.selection import (
    match,
    series,
)
from tests.inference.tiny_model import write_model


def study(count: int) -> list[series.SeriesInfo]:
    data = Path(os.environ.get("ONCONODE_DATA", REPO.parent / "shared" / "data")) / "dicom"
    headers = [series.read_header(p) for p in sorted((data / "lidc-idri-0001").glob("*.dcm"))]
    repeated = []
    for i in range(count):
        h = headers[i % len(headers)]
        position = h.positions[0]
        moved = (position[0], position[1], -1.25 * i) if position else None
        repeated.append(dataclasses.replace(h, sop_instance_uid=f"2.25.{i + 1}", positions=(moved,)))
    scout = [dataclasses.replace(h, series_uid="2.25.999", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
                                 sop_instance_uid=f"2.25.{10_000 + i}") for i, h in enumerate(headers[:3])]
    return [series.SeriesInfo(headers[0].series_uid, tuple(repeated)), series.SeriesInfo("2.25.999", tuple(scout))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--instances", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        write_model(Path(folder), "test-ct", "CT")
        write_model(Path(folder), "test-mr", "MR")
        registry = load_registry(Path(folder))
    infos = study(args.instances)
    times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        candidates = [s for s in infos if series.exclusion(s) is None]
        choice = match.choose(candidates, registry, [])
        times.append((time.perf_counter() - started) * 1000)
        assert choice.offer is not None and choice.offer.model_name == "test-ct"
    print(f"selection of {sum(len(s.instances) for s in infos)} instances in {len(infos)} series: "
          f"median {statistics.median(times):.1f} ms [{min(times):.1f}–{max(times):.1f}] over {args.runs} runs "
          f"(target ≤ 50 ms)")


if __name__ == "__main__":
    main()
