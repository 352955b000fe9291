"""Re-run the external check of a released model with the node's current code, and re-render its card.

``python -m training.recheck chest-ct|brain-mr [--out models]``: reads ``<out>/<name>.metrics.json``
(what ``training.train`` measured), runs ``release.external_check`` with the files in ``<out>`` as
they are, and writes the card and the metrics again. Nothing is retrained: the node-side figures
(the external studies, the pictures) are measured anew, e.g. after a change to the node's selection
or heat maps, and where the run's out-of-fold predictions are kept (``runs/<name>-<version>/oof-*.json``)
the cross-validated summary is recomputed from them, e.g. after a change to how it is summarised, and
with the prepared training data at hand, so are the failure pictures.

The shipped calibration and threshold are refitted from those predictions the way training fits them
(``release.operating_point``), and the manifest is built again from the spec. Where either moves,
e.g. after a change to the fit or to what the spec accepts, the manifest is written anew for the
same ONNX file under the spec's version, which must then differ from the shipped one: a manifest
that says other things is another release. Where the spec ranks key slices by the nodule filter too
and the kept predictions lack its scores, they are computed from the prepared volumes
(``nodule_filter.attach``) and kept with the new version's run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from onconode.models import Manifest, load_manifest
from training.card import render_card
from training.evaluate import SeriesRecord, SliceRecord, series_records, summary
from training.examples import SeriesExamples, load_all, node_reads_only
from training.latency import Latency
from training.nodule_filter import attach
from training.release import (
    ExternalResult,
    Release,
    build_manifest,
    check_studies,
    external_check,
    failure_pictures,
    fit_plots,
    operating_point,
    run_folder,
    write_manifest,
)
from training.specs import SPECS, ModelSpec

log = logging.getLogger(__name__)


def load_release(path: Path) -> Release:
    data = json.loads(path.read_text())
    def external(entry: dict[str, Any]) -> ExternalResult:
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}
        return ExternalResult(**values)

    data["external"] = [external(e) for e in data["external"]]
    data["checks"] = [external(e) for e in data.get("checks", [])]
    data["latency"] = Latency(**data["latency"])
    data["calibration"] = tuple(data["calibration"])
    return Release(**data)


class VersionUnchanged(Exception):
    """The spec and the refitted operating point give another manifest than the shipped one, under the
    shipped one's version."""


def _content(manifest: Manifest) -> dict[str, Any]:
    """What a manifest says, its version aside."""
    return {k: v for k, v in manifest.model_dump(mode="json").items() if k != "version"}


def recheck(spec: ModelSpec, out: Path, runs: Path, dicom: Path, examples: list[SeriesExamples] | None = None
            ) -> Manifest:
    """Refit, re-check and re-render one released model in ``out``; returns the manifest it leaves.

    ``examples`` (the prepared training series) default to ``load_all(spec)``; with none, the failure
    pictures are kept as they are."""
    metrics = out / f"{spec.name}.metrics.json"
    report = load_release(metrics)
    manifest = load_manifest(out / f"{spec.name}.yaml")
    oof = run_folder(runs, spec)
    shipped_run = run_folder(runs, replace(spec, version=manifest.version))
    kept = (oof / "oof-slices.json").exists() or (shipped_run / "oof-slices.json").exists()
    calibration, threshold, basis = report.calibration, report.threshold, report.decision_basis
    ranked_anew = False
    if kept:
        source = oof if (oof / "oof-slices.json").exists() else shipped_run
        slices = [SliceRecord(**r) for r in json.loads((source / "oof-slices.json").read_text())]
        known = {f.name for f in fields(SeriesRecord)}  # files of earlier runs may hold more keys
        series = [SeriesRecord(**{k: v for k, v in r.items() if k in known})
                  for r in json.loads((source / "oof-series.json").read_text())]
        slices, series = node_reads_only(spec, slices), node_reads_only(spec, series)
        ranked_anew = spec.slices.ranking is not None and any(np.isnan(r.blob) for r in slices)
        if ranked_anew:  # the key slices, so the series values, now come from the node's ranking
            slices = attach(spec, slices)
            series = series_records(slices, {s.series: s.lesion for s in series}, spec.slices.key)
        calibration, threshold, basis = operating_point(slices, series)
    rebuilt = build_manifest(spec, out / manifest.file, calibration, threshold, basis)
    if (calibration, threshold, basis) != (report.calibration, report.threshold, report.decision_basis) or \
            _content(rebuilt) != _content(manifest):
        if manifest.version == spec.version:
            raise VersionUnchanged(f"{spec.name}: the spec and the refitted operating point give another manifest "
                                   f"than the shipped {manifest.version}; give the spec a new version to release it")
        log.info("model=%s %s -> %s: calibration %s -> %s, threshold %s -> %s", spec.name, manifest.version,
                 spec.version, report.calibration, calibration, report.threshold, threshold)
        manifest = rebuilt
        write_manifest(manifest, out)
        if kept:
            fit_plots(spec, slices, series, calibration, out)
        report = replace(report, calibration=calibration, threshold=threshold, decision_basis=basis)
    if kept and source != oof:  # a new version of the same weights keeps their run under its own name
        shutil.copytree(source, oof)
    if kept and ranked_anew:
        (oof / "oof-slices.json").write_text(json.dumps([asdict(r) for r in slices], indent=0))
        (oof / "oof-series.json").write_text(json.dumps([asdict(r) for r in series], indent=0))
    with tempfile.TemporaryDirectory() as folder:
        for suffix in (".onnx", ".yaml"):
            shutil.copy(out / f"{spec.name}{suffix}", Path(folder))
        external = external_check(spec, Path(folder), dicom, out)
        checks = check_studies(spec, Path(folder), out)
    cv, failures = report.cv, report.failures
    if kept:
        cv = summary(slices, series, spec.slices.key)
        examples = load_all(spec) if examples is None else examples
        if examples:  # the prepared data is here: the failure pictures are drawn again too
            failures = failure_pictures(spec, examples, slices, series, report.threshold, report.calibration,
                                        report.decision_basis, out)
    report = replace(report, external=external, checks=checks, cv=cv, failures=failures)
    (out / f"{spec.name}.md").write_text(render_card(spec, manifest, report))
    metrics.write_text(json.dumps(asdict(report), indent=1, default=str))
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", choices=sorted(SPECS))
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where training kept its out-of-fold files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    dicom = Path(os.environ.get("ONCONODE_DATA", "../shared/data")) / "dicom"
    try:
        recheck(SPECS[args.model], args.out, args.runs, dicom)
    except VersionUnchanged as error:
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    main()
