"""Model manifests and the registry: ``models/<name>.yaml`` beside ``models/<name>.onnx``.

Models are data: no label, window or size is written in code. The manifest is the single source of
truth for both training (``training/``) and inference, so that the pixels a model sees at the node
are prepared exactly as they were when it learned. The registry refuses to start with a model whose
file is missing, whose hash differs, or whose graph does not have the inputs and outputs the
manifest names: a wrong model must fail loudly at start-up, not produce plausible numbers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    name: str
    size: tuple[int, int]  # (height, width) in pixels
    channels: Literal[1, 3]
    layout: Literal["NCHW"] = "NCHW"


class Window(_Strict):
    """A CT window in Hounsfield units: [center - width/2, center + width/2] maps to [0, 1]."""

    center: float
    width: float = Field(gt=0)


class Percentiles(_Strict):
    """MR normalisation: the low/high intensity percentiles of a slice map to [0, 1]."""

    low: float = Field(ge=0, lt=100)
    high: float = Field(gt=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> Percentiles:
        if self.low >= self.high:
            raise ValueError(f"percentiles: low {self.low} must be below high {self.high}")
        return self


class Resize(_Strict):
    keep_aspect: bool = True
    pad_value: float = 0.0  # in the [0, 1] intensity scale, before normalisation


class Normalize(_Strict):
    mean: tuple[float, ...]
    std: tuple[float, ...]


class CropBody(_Strict):
    """Crop to the bounding box of the largest bright region before resizing.

    ``threshold`` is on the [0, 1] intensity scale after windowing; ``margin`` is a fraction of the
    box size added on each side.
    """

    threshold: float = Field(0.1, ge=0, lt=1)
    margin: float = Field(0.02, ge=0, le=0.5)


class Crop(_Strict):
    """Crop to the patient before resizing, from the raw values (HU on CT): ``body`` is the body's
    outline, ``lungs`` the lung-density tissue inside it (the body where a slice shows no lung);
    ``margin`` is a fraction of the box size added on each side."""

    region: Literal["body", "lungs"]
    margin: float = Field(0.05, ge=0, le=0.5)


class Preprocess(_Strict):
    """How a slice becomes the model's input; training and the node run the same code on it.

    Kinds: ``ct_window`` (one window, repeated over the channels), ``ct_windows`` (one window per
    channel, e.g. lung, mediastinum, bone), ``mr_percentile`` (each slice's own percentiles) and
    ``mr_volume`` (the series' percentiles, so a slice keeps its brightness relative to the rest of
    the volume, as a reader sees it).
    """

    kind: Literal["ct_window", "ct_windows", "mr_percentile", "mr_volume"]
    window: Window | None = None
    windows: tuple[Window, ...] = ()
    percentiles: Percentiles | None = None
    resize: Resize = Resize()
    crop_body: CropBody | None = None
    crop: Crop | None = None
    normalize: Normalize
    # Neighbouring slices as channels: the slices nearest ``context_mm`` before and after the slice
    # along the series (one intensity plane each) beside the slice itself. A nodule ends within a few
    # millimetres; a vessel runs on.
    context_mm: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _parameters_for_kind(self) -> Preprocess:
        if self.kind == "ct_window" and self.window is None:
            raise ValueError("preprocess.kind ct_window needs preprocess.window")
        if self.kind == "ct_windows" and not self.windows:
            raise ValueError("preprocess.kind ct_windows needs preprocess.windows")
        if self.kind in ("mr_percentile", "mr_volume") and self.percentiles is None:
            raise ValueError(f"preprocess.kind {self.kind} needs preprocess.percentiles")
        if self.crop is not None and self.crop_body is not None:
            raise ValueError("preprocess: crop and crop_body exclude each other")
        if self.context_mm is not None and self.kind == "ct_windows":
            raise ValueError("preprocess.context_mm needs one intensity plane per slice, not ct_windows")
        return self


class Outputs(_Strict):
    logits: str
    features: str  # the last convolutional feature map, (N, K, h, w), for Grad-CAM


class GradCamSpec(_Strict):
    """Names of the classifier weight (classes, K) and bias initializers in the ONNX graph."""

    weights: str
    bias: str | None = None


class SnomedCode(_Strict):
    code: str
    display: str = Field(max_length=64)  # DICOM Code Meaning is LO


class Label(_Strict):
    name: str
    cancer: bool
    snomed: SnomedCode


class FindingSpec(_Strict):
    """What the model looks for, as a coded concept every output names (SR, FHIR, captions).

    ``display`` is the phrase a person reads ("suspicious lung nodule or mass"); the code is the
    finding itself, never a diagnosis: a probability of a finding must not land in a problem list.
    """

    code: str
    scheme: str = "SCT"
    meaning: str = Field(max_length=64)  # DICOM Code Meaning is LO
    display: str


class DisplaySpec(_Strict):
    """How a key slice is shown to a person (the window a radiologist would pick for this organ),
    independent of how the model's input is scaled."""

    window: Window | None = None
    percentiles: Percentiles | None = None


class Calibration(_Strict):
    """Platt scaling: sigmoid(slope · logit(p) + intercept), and what it was fitted on.

    ``series``: on cross-validated series scores; it maps the study score (the mean of the key
    slices), so that "0.8" means about 8 in 10 such studies have the finding. ``slices``: on
    cross-validated slices, lesion against lesion-free, because no series without the finding was
    there to fit a study calibration on; it maps each slice's probability, and the study value is
    the mean of the key slices' calibrated values, which is no study probability.
    """

    slope: float = Field(gt=0)
    intercept: float
    fitted_on: Literal["series", "slices"] = "series"


class Decision(_Strict):
    """How a study probability becomes a decision.

    ``verdict`` false: the threshold was never measured on studies without the finding (e.g. every
    training series showed it), so the node states the ranked key slices and the mean of their
    probabilities, but no positive or negative and no study probability; a verdict no one measured
    would be a number dressed as a finding. A calibration fitted on slices goes with no verdict,
    one fitted on series with a verdict: a study decision rests on studies or on nothing.
    """

    positive_labels: tuple[str, ...]
    threshold: float = Field(0.5, gt=0, lt=1)
    temperature: float = Field(1.0, gt=0)
    calibration: Calibration | None = None
    verdict: bool = True

    @model_validator(mode="after")
    def _calibration_fits_the_verdict(self) -> Decision:
        if self.calibration is not None and (self.calibration.fitted_on == "series") != self.verdict:
            raise ValueError(f"decision: a calibration fitted on {self.calibration.fitted_on} goes with "
                             f"verdict: {'false' if self.verdict else 'true'}")
        return self


Plane = Literal["axial", "coronal", "sagittal", "oblique"]
Preference = Literal["sequence", "original", "thinnest", "most_slices", "latest"]


class Accepts(_Strict):
    """Which series the model can read; the node offers it a series only when every field holds.

    ``regions`` are body regions (``onconode/selection/region.py``); ``sequences`` (MR only) are
    what ``onconode/selection/sequence.py`` reads, with ``t1post`` for a T1 after contrast.
    ``prefer`` ranks the series that pass, best first: the order of ``sequences``, ORIGINAL
    before DERIVED, the thinnest slices, the most slices, the latest acquired.
    """

    regions: tuple[str, ...] = Field(min_length=1)
    planes: tuple[Plane, ...] = ("axial",)
    sequences: tuple[str, ...] = ()
    thickness_mm: tuple[float, float] = (0.0, 10.0)
    min_slices: int = Field(10, ge=1)
    # Rows and columns at least this: a thumbnail or a corrupt 2×2 image is not what a model trained
    # on scanner slices reads, whatever its header says.
    min_matrix: int = Field(128, ge=1)
    # How far along the slice normal a series must reach (first to last slice, plus one spacing) for
    # the model's statement to cover the organ: a whole brain, both lungs. A slab planned on one part
    # (the internal auditory canals, the lung bases of an abdominal CT) is not read as the organ; 0
    # asks nothing.
    min_coverage_mm: float = Field(0.0, ge=0)
    # How much of that reach the slices must image: SliceThickness over the spacing between slices. A
    # series sampled with wide gaps (1 mm slices 10 mm apart) shows a tenth of the organ, and a lesion
    # between its slices is not there to be found; 0 asks nothing.
    min_imaged_fraction: float = Field(0.0, ge=0, le=1)
    prefer: tuple[Preference, ...] = ("sequence", "original", "thinnest", "most_slices")

    def summary(self, modality: str) -> str:
        """One line a person reads in ``onconode models list`` and ``doctor``."""
        parts = [modality, "/".join(self.regions), "/".join(self.planes)]
        if self.sequences:
            parts.append("/".join(self.sequences))
        low, high = self.thickness_mm
        parts.append(f"{low:g}–{high:g} mm")
        parts.append(f">= {self.min_slices} slices")
        if self.min_coverage_mm:
            parts.append(f">= {self.min_coverage_mm:g} mm along the slice normal")
        if self.min_imaged_fraction:
            parts.append(f"slices at least {self.min_imaged_fraction:.0%} as thick as their spacing")
        parts.append(f">= {self.min_matrix}×{self.min_matrix} px")
        return ", ".join(parts) + f"; prefers {', '.join(self.prefer)}"

    @model_validator(mode="after")
    def _range(self) -> Accepts:
        low, high = self.thickness_mm
        if not 0 <= low <= high:
            raise ValueError(f"accepts.thickness_mm: need 0 <= low <= high, got {self.thickness_mm}")
        return self


class BlobRanking(_Strict):
    """Rank the key slices by the model and a fixed nodule filter together (``inference/blobs.py``):
    the filter's scales (Gaussian sigma, mm), the HU range it sees, and how much each slice is
    reduced before it runs."""

    sigmas_mm: tuple[float, ...] = Field(min_length=1)
    hu: tuple[float, float] = (-1000.0, 200.0)
    shrink: int = Field(2, ge=1, le=8)

    @model_validator(mode="after")
    def _sizes(self) -> BlobRanking:
        if any(not 0 < s <= 50 for s in self.sigmas_mm):
            raise ValueError(f"slices.ranking.sigmas_mm: need values in (0, 50] mm, got {self.sigmas_mm}")
        if not self.hu[0] < self.hu[1]:
            raise ValueError(f"slices.ranking.hu: need low < high, got {self.hu}")
        return self


class SliceSpec(_Strict):
    """Which slices of the chosen series go through the model (``inference/slices.py``), and how
    the key slices among them are ranked: by the model's probability alone, or (``ranking``) by it
    and a nodule filter together."""

    target: Literal["lung", "brain", "body"]
    max_analysed: int = Field(64, ge=1)
    key: int = Field(3, ge=1)
    ranking: BlobRanking | None = None


class Manifest(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    version: str
    modality: Literal["CT", "MR"]
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    input: InputSpec
    preprocess: Preprocess
    outputs: Outputs
    gradcam: GradCamSpec
    labels: tuple[Label, ...] = Field(min_length=2)
    decision: Decision
    accepts: Accepts
    slices: SliceSpec
    finding: FindingSpec
    display: DisplaySpec = DisplaySpec()
    card: str | None = None
    metrics: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        names = [label.name for label in self.labels]
        if len(set(names)) != len(names):
            raise ValueError(f"labels: duplicate names in {names}")
        unknown = set(self.decision.positive_labels) - set(names)
        if unknown:
            raise ValueError(f"decision.positive_labels: not among the labels: {sorted(unknown)}")
        if self.modality == "CT" and self.accepts.sequences:
            raise ValueError("accepts.sequences: only an MR model names sequences")
        if self.preprocess.kind == "ct_windows" and len(self.preprocess.windows) != self.input.channels:
            raise ValueError(f"preprocess.windows: need one window per input channel ({self.input.channels})")
        if self.preprocess.kind.startswith("ct_") != (self.modality == "CT"):
            raise ValueError(f"preprocess.kind {self.preprocess.kind} does not fit modality {self.modality}")
        if self.slices.ranking is not None and self.modality != "CT":
            raise ValueError("slices.ranking: the nodule filter reads Hounsfield units, so only a CT model has one")
        norm = self.preprocess.normalize
        if len(norm.mean) != self.input.channels or len(norm.std) != self.input.channels:
            raise ValueError(f"preprocess.normalize: need {self.input.channels} mean and std values")
        return self


class ModelError(ValueError):
    """A model that cannot be used; the message names the model and what is wrong."""


@dataclass(frozen=True, eq=False)
class RegisteredModel:
    """A verified model. ``head_weights`` (classes, K) and ``head_bias`` (classes,) are the classifier
    initializers the manifest names, read once at start-up for Grad-CAM (``gradcam.py``)."""

    manifest: Manifest
    onnx_path: Path
    head_weights: np.ndarray
    head_bias: np.ndarray | None = None


def load_manifest(path: Path) -> Manifest:
    """Read and validate one manifest file.

    Raises
    ------
    ModelError
        If the file cannot be read or does not match the manifest schema.
    """
    try:
        data = yaml.safe_load(path.read_text())
        return Manifest.model_validate(data)
    except (OSError, yaml.YAMLError, ValidationError) as err:
        raise ModelError(f"model manifest {path}: {err}") from err


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(manifest: Manifest, folder: Path) -> RegisteredModel:
    """Check the ONNX file against its manifest: presence, hash, input and output names.

    Raises
    ------
    ModelError
        Naming the model and the first problem found.
    """
    import onnxruntime as ort

    onnx_path = folder / manifest.file
    who = f"model {manifest.name} {manifest.version}"
    if not onnx_path.is_file():
        raise ModelError(f"{who}: ONNX file missing: {onnx_path}")
    actual = sha256_of(onnx_path)
    if actual != manifest.sha256:
        raise ModelError(f"{who}: sha256 of {onnx_path.name} is {actual}, manifest says {manifest.sha256}")
    try:
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for unreadable graphs
        raise ModelError(f"{who}: onnxruntime cannot load {onnx_path.name}: {err}") from err
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if manifest.input.name not in inputs:
        raise ModelError(f"{who}: input {manifest.input.name!r} not in the graph inputs {inputs}")
    for wanted in (manifest.outputs.logits, manifest.outputs.features):
        if wanted not in outputs:
            raise ModelError(f"{who}: output {wanted!r} not in the graph outputs {outputs}")
    features = next(o for o in session.get_outputs() if o.name == manifest.outputs.features)
    weights, bias = _check_head(manifest, onnx_path, features.shape, who)
    return RegisteredModel(manifest=manifest, onnx_path=onnx_path, head_weights=weights, head_bias=bias)


def _check_head(manifest: Manifest, onnx_path: Path, features_shape: list[object], who: str
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """The Grad-CAM head must be (classes, K) [+ (classes,)], K = channels of the feature output.

    Read with ``onnx_graph.read_initializers`` (a protobuf reader) because ``onnx`` is not a
    runtime dependency. A head that does not fit would give heat maps for the wrong label or
    channel, so it fails start-up like a wrong hash.
    """
    from onconode.onnx_graph import InitializerError, read_initializers

    spec = manifest.gradcam
    wanted = {spec.weights} | ({spec.bias} if spec.bias else set())
    try:
        found = read_initializers(onnx_path, wanted)
    except (OSError, InitializerError) as err:
        raise ModelError(f"{who}: gradcam head: {err}") from err
    weights = found[spec.weights]
    classes = len(manifest.labels)
    if weights.ndim != 2 or weights.shape[0] != classes:
        raise ModelError(f"{who}: gradcam.weights {spec.weights!r} has shape {weights.shape}, "
                         f"expected ({classes}, K) for {classes} labels")
    channels = features_shape[1] if len(features_shape) == 4 else None
    if isinstance(channels, int) and weights.shape[1] != channels:
        raise ModelError(f"{who}: gradcam.weights {spec.weights!r} has {weights.shape[1]} columns but "
                         f"output {manifest.outputs.features!r} has {channels} channels")
    bias = found.get(spec.bias) if spec.bias else None
    if bias is not None and bias.shape != (classes,):
        raise ModelError(f"{who}: gradcam.bias {spec.bias!r} has shape {bias.shape}, expected ({classes},)")
    return weights, bias


def load_registry(folder: Path) -> dict[str, RegisteredModel]:
    """Every ``<name>.yaml`` in ``folder``, verified; keyed by model name.

    Raises
    ------
    ModelError
        For the first model that fails its checks, or two manifests with the same name.
    """
    registry: dict[str, RegisteredModel] = {}
    for path in sorted(folder.glob("*.yaml")):
        model = verify(load_manifest(path), folder)
        if model.manifest.name in registry:
            raise ModelError(f"model {model.manifest.name}: defined twice (second in {path})")
        registry[model.manifest.name] = model
    return registry


def installed_models(folder: Path) -> tuple[dict[str, RegisteredModel], str | None]:
    """The verified registry of ``folder``, plus a note for a person when no model is installed.

    A missing or empty folder is not an error (studies then end "no applicable model"); a model
    that is present but fails its checks is.

    Raises
    ------
    ModelError
        As ``load_registry``.
    """
    if not folder.is_dir():
        return {}, f"models folder {folder} does not exist: no model is installed"
    registry = load_registry(folder)
    return registry, None if registry else f"models folder {folder} holds no model manifest (*.yaml)"
