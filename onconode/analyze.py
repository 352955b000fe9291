"""``onconode analyze PATH``: the whole analysis on a folder of DICOM files, with no network.

Input: a file or folder, the settings (routing rules, models folder, threads). Output: a table or
JSON on stdout, heat-map PNGs under ``--out``, and an exit status: 0 when every study ended with a
result or a "no applicable model" reason, 1 when a study failed (e.g. pixels not decodable).
Kept apart from ``cli.py`` so the CLI stays a thin argument parser.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from onconode.conclusion import Conclusion, conclude
from onconode.config import Settings
from onconode.folders import files_under
from onconode.inference.pipeline import AnalysisResult, Outcome, analyze_study
from onconode.inference.runner import RunnerPool
from onconode.models import ModelError, RegisteredModel, installed_models
from onconode.reporting.png import write_overlays
from onconode.selection.series import group_by_study
from onconode.selection.volume import PixelDecodeError


class AnalyzeError(Exception):
    """A problem with the command's inputs (path, models); printed as one line by the CLI."""


def _registry(folder: Path) -> tuple[dict[str, RegisteredModel], str | None]:
    try:
        return installed_models(folder)
    except ModelError as err:
        raise AnalyzeError(str(err)) from err


def _print_table(result: AnalysisResult, conclusion: Conclusion | None, overlays: list[str], stream: TextIO
                 ) -> None:
    print(f"Study {result.study_uid}", file=stream)
    print(f"  outcome   {result.reason}", file=stream)
    for decision in result.series:
        mark = "TAKEN" if decision.taken else "left "
        desc = decision.description or "(no description)"
        print(f"  {mark}     {decision.modality:<3} {desc[:38]:<38} {decision.slices:>4} sl  {decision.reason}",
              file=stream)
        for line in decision.evidence:
            print(f"            · {line}", file=stream)
    if conclusion is not None:
        rule = f" (rule {result.rule})" if result.rule else ""
        print(f"  model     {result.model} {result.model_version}{rule}; "
              f"{len(result.slices_analysed)} of {result.slices_total} slices analysed", file=stream)
        print(f"  result    {conclusion.headline()}", file=stream)
        print(f"            {conclusion.method}", file=stream)
        for rank, key in enumerate(conclusion.key, start=1):
            frame = f" frame {key.frame}" if key.frame is not None else ""
            print(f"  key {rank}     slice {key.index + 1:>4} of {conclusion.slices_total}: probability "
                  f"{key.probability:.3f} (per slice)  SOP {key.sop_instance_uid}{frame}", file=stream)
    for note in result.volume_notes:
        print(f"  note      {note}", file=stream)
    for path in overlays:
        print(f"  overlay   {path}", file=stream)
    timings = ", ".join(f"{k} {v:.0f}" for k, v in result.timings_ms.items())
    print(f"  time (ms) {timings}", file=stream)


def run_analyze(path: Path, settings: Settings, models: Path | None = None, out: Path | None = None,
                as_json: bool = False, stream: TextIO | None = None) -> int:
    """Analyse every study under ``path``; see the module docstring for the exit status.

    Raises
    ------
    AnalyzeError
        If ``path`` does not exist, holds no DICOM study, or a model fails its start-up checks.
    """
    stream = stream or sys.stdout
    if not path.exists():
        raise AnalyzeError(f"no such file or folder: {path}")
    studies = group_by_study(files_under([path]))
    if not studies:
        raise AnalyzeError(f"no DICOM study found under {path}")
    registry, models_note = _registry(models or settings.analysis.models)
    if models_note:
        print(f"onconode analyze: {models_note}", file=sys.stderr)
    pool = RunnerPool(settings.analysis.intra_op_threads)
    status, reports = 0, []
    for study_uid, files in sorted(studies.items()):
        try:
            result = analyze_study(files, registry, settings.routing, pool)
        except (PixelDecodeError, ValueError) as err:
            status = 1
            reports.append({"study_uid": study_uid, "outcome": "failed", "reason": str(err)})
            if not as_json:
                print(f"Study {study_uid}\n  outcome   failed: {err}", file=stream)
            continue
        overlays = [str(p) for p in write_overlays(result, out / result.study_uid)] if out is not None else []
        conclusion = conclude(result, registry[result.model].manifest) \
            if result.outcome is Outcome.ANALYSED and result.model else None
        if as_json:
            reports.append(result.summary() | {"overlays": overlays,
                                               "conclusion": conclusion.to_dict() if conclusion else None})
        else:
            _print_table(result, conclusion, overlays, stream)
            print(file=stream)
    if as_json:
        json.dump(reports, stream, indent=2)
        print(file=stream)
    return status
