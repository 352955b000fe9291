"""Response models of the API: the public contract, kept apart from the state rows (``onconode/state``).

A route returns one of these; FastAPI validates, documents (OpenAPI) and filters the output, so a
column added to a state row never leaks into the API by accident. No model carries a patient's
name, ID or birth date.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from onconode.state import DeliveryState, StudyState


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(_Out):
    detail: str | list[object] = Field(description="what went wrong, for a person")


class Health(_Out):
    status: str = "ok"


class Check(_Out):
    name: str
    ok: bool
    detail: str


class Ready(_Out):
    ready: bool
    checks: list[Check]


class StudySummary(_Out):
    study_uid: str
    state: StudyState
    reason: str | None
    instances: int
    first_received_at: float = Field(description="epoch seconds")
    last_received_at: float
    state_changed_at: float
    calling_ae: str | None
    model: str | None = None
    headline: str | None = Field(default=None, description="the conclusion in one sentence, as every output says it")
    finding: str | None = Field(default=None, description="what the model looks for")
    positive: bool | None = None
    positive_probability: float | None = Field(default=None, description="the conclusion's probability (see "
                                                                         "ConclusionOut.value_name)")
    threshold: float | None = None


class StudyPage(_Out):
    total: int
    limit: int
    offset: int
    items: list[StudySummary]


class TransitionOut(_Out):
    at: float
    from_state: StudyState | None
    to_state: StudyState
    reason: str | None


class SeriesOut(_Out):
    """A series as received."""

    series_uid: str
    modality: str
    instances: int


class SeriesDecisionOut(_Out):
    """Whether the analysis took a series, and why."""

    series_uid: str
    description: str
    modality: str
    slices: int
    taken: bool
    reason: str
    evidence: list[str] = []


class KeySliceOut(_Out):
    sop_instance_uid: str
    frame: int | None
    index: int
    positive_probability: float = Field(description="this slice's own probability (per slice), not the study's")


class FindingOut(_Out):
    code: str
    scheme: str
    meaning: str
    display: str


class ConclusionOut(_Out):
    """What the node concluded about the study; the SR, the FHIR report and the captions say the same."""

    headline: str
    verdict: str = Field(description="positive, negative, or 'no verdict' when the model's study decision was "
                                     "never measured on studies without the finding (slices ranked only)")
    finding: FindingOut
    probability: float = Field(description="with a verdict, the study probability that the finding is present "
                                           "(calibrated); without one, the mean of the key slices' calibrated "
                                           "probabilities: value_name says which")
    value_name: str = Field(description="what probability is, as every output names it")
    threshold: float
    positive: bool | None = Field(description="None when the model states no verdict")
    method: str = Field(description="how probability comes from the per-slice probabilities")
    model: str
    model_version: str
    device_uid: str
    slices_total: int
    slices_analysed: int
    not_for_diagnosis: str


class ResultOut(_Out):
    outcome: str
    reason: str
    rule: str | None = None
    model: str | None = None
    model_version: str | None = None
    series_uid: str | None = None
    probabilities: dict[str, float] = {}
    predicted_label: str | None = None
    positive: bool | None = None
    positive_probability: float | None = None
    threshold: float | None = None
    slices_total: int = 0
    slices_analysed: int = 0
    key_slices: list[KeySliceOut] = []


class DeliveryOut(_Out):
    """One object of a study's report for one destination, and how sending it went."""

    id: int
    study_uid: str
    destination: str = Field(description="AE@HOST:PORT or the FHIR base URL")
    kind: str = Field(description="dicom or fhir")
    object: str = Field(description="file name in the outbox")
    object_uid: str
    state: DeliveryState
    attempts: int
    next_try_at: float
    last_error: str | None
    sent_at: float | None


class StudyDetail(StudySummary):
    transitions: list[TransitionOut]
    series: list[SeriesOut]
    series_decisions: list[SeriesDecisionOut] = []
    conclusion: ConclusionOut | None = None
    result: ResultOut | None = None
    timings_ms: dict[str, float] = Field(default={}, description="per analysis stage, milliseconds")
    overlays: list[str] = Field(default=[], description="URLs of the overlay PNGs, relative to the API root")
    deliveries: list[DeliveryOut] = []


class ModelOut(_Out):
    name: str
    version: str
    modality: str
    file: str
    sha256: str
    labels: list[str]
    positive_labels: list[str]
    threshold: float
    verdict: bool = Field(default=True, description="false: the model states no positive or negative, its study "
                                                    "decision never having been measured (slices ranked only)")
    finding: FindingOut | None = None
    accepts: str | None = Field(default=None, description="the series it reads")


class Models(_Out):
    models: list[ModelOut]
    note: str | None = Field(default=None, description="why no model is installed, when none is")
