"""Re-run the external check of a released model with the node's current code, and re-render its card.

``python -m training.recheck chest-ct|brain-mr [--out models]``: reads ``<out>/<name>.metrics.json``
(what ``training.train`` measured), runs ``release.external_check`` with the files in ``<out>`` as
they are, and writes the card and the metrics again. Nothing is retrained: the node-side figures
(the external studies, the pictures) are measured anew, e.g. after a change to the node's selection
or heat maps, and where the run's out-of-fold predictions are kept (``runs/<name>-<version>/oof-*.json``)
the cross-validated summary is recomputed from them, e.g. after a change to how it is summarised, and
with the prepared training data at hand, so are the failure pictures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from onconode.models import load_manifest
from training.card import render_card
from training.evaluate import SeriesRecord, SliceRecord, summary
from training.examples import load_all
from training.latency import Latency
from training.release import ExternalResult, Release, external_check, failure_pictures, run_folder
from training.specs import SPECS


def load_release(path: Path) -> Release:
    data = json.loads(path.read_text())
    def external(entry: dict[str, Any]) -> ExternalResult:
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}
        return ExternalResult(**values)

    data["external"] = [external(e) for e in data["external"]]
    data["latency"] = Latency(**data["latency"])
    data["calibration"] = tuple(data["calibration"])
    return Release(**data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", choices=sorted(SPECS))
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where training kept its out-of-fold files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    spec = SPECS[args.model]
    metrics = args.out / f"{spec.name}.metrics.json"
    report = load_release(metrics)
    dicom = Path(os.environ.get("ONCONODE_DATA", "../shared/data")) / "dicom"
    with tempfile.TemporaryDirectory() as folder:
        for suffix in (".onnx", ".yaml"):
            shutil.copy(args.out / f"{spec.name}{suffix}", Path(folder))
        external = external_check(spec, Path(folder), dicom, args.out)
    cv, failures = report.cv, report.failures
    oof = run_folder(args.runs, spec)
    if (oof / "oof-slices.json").exists():
        slices = [SliceRecord(**r) for r in json.loads((oof / "oof-slices.json").read_text())]
        known = {f.name for f in fields(SeriesRecord)}  # files of earlier runs may hold more keys
        series = [SeriesRecord(**{k: v for k, v in r.items() if k in known})
                  for r in json.loads((oof / "oof-series.json").read_text())]
        cv = summary(slices, series, spec.slices.key)
        examples = load_all(spec)
        if examples:  # the prepared data is here: the failure pictures are drawn again too
            failures = failure_pictures(spec, examples, slices, series, report.threshold, report.calibration,
                                        report.decision_basis,
                                        args.out)
    report = Release(**{**report.__dict__, "external": external, "cv": cv, "failures": failures})
    manifest = load_manifest(args.out / f"{spec.name}.yaml")
    (args.out / f"{spec.name}.md").write_text(render_card(spec, manifest, report))
    metrics.write_text(json.dumps(asdict(report), indent=1, default=str))


if __name__ == "__main__":
    main()
