"""Typed settings: ``config/onconode.yaml`` plus ``ONCONODE_<SECTION>__<KEY>`` environment overrides.

Priority, highest first: explicit keyword arguments, environment variables, the YAML file, the
defaults below. The defaults are the embedded configuration: loopback, a local folder, SQLite, so
``onconode serve`` runs with no file at all. Everything is validated at start-up so that a typo
fails the start, not the first association.
"""

from __future__ import annotations

import os
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from onconode.values import check_ae_title

DEFAULT_CONFIG = Path("config/onconode.yaml")
CONFIG_ENV = "ONCONODE_CONFIG"
POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")


def _ae_title(value: str) -> str:
    reason = check_ae_title(value)
    if reason:
        raise ValueError(f"AE title {value!r}: {reason}")
    return value.strip()


AETitle = Annotated[str, AfterValidator(_ae_title)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeSettings(_Section):
    """The DICOM listener."""

    ae_title: AETitle = "ONCONODE"
    host: str = "127.0.0.1"
    port: int = Field(11112, ge=1, le=65535)
    max_associations: int = Field(8, ge=1)
    # Largest P-DATA PDU we accept (the Maximum Length we advertise, PS3.8 D.1); a PDU announcing
    # more is aborted before anything is allocated for it. Large PDUs cut the per-fragment overhead of
    # a pure-Python receiver; 0 would mean "unlimited", which some SCUs treat as their own small default.
    max_pdu_bytes: int = Field(4 * 1024 * 1024, ge=4096)
    # Largest data set one C-STORE may carry (and a deflated one may inflate to). The largest objects
    # a CT/MR node expects are enhanced multi-frame series, ~1,000 frames of 512x512x16 bit = 500 MiB;
    # a receiver holds up to three copies of a data set while it frames and writes it, so 512 MiB keeps
    # eight associations within 12 GiB. A message announcing more is aborted before it is buffered.
    max_dataset_bytes: int = Field(512 * 1024 * 1024, ge=1024 * 1024)
    # An association that sends nothing for this long is aborted, and every PDU must arrive whole
    # within it once its first byte has: a peer that stalls mid-PDU, or trickles bytes, is dropped.
    network_timeout_seconds: float = Field(60, gt=0)
    # A new connection must finish its TLS handshake and send its A-ASSOCIATE-RQ within this; until
    # then it holds no association slot, and a silent one is closed after it.
    handshake_timeout_seconds: float = Field(10, gt=0)
    # The event-driven acceptor (dicom_node/acceptor/fast.py), about twice pynetdicom's rate per core;
    # false serves associations with stock pynetdicom, under the same limits and checks.
    fast_ingest: bool = True
    # Processes that serve associations (dicom_node/receivers.py). One Python process receives at
    # about one core; with several, concurrent associations are spread over them.
    receiver_processes: int = Field(1, ge=1, le=64)


class StorageSettings(_Section):
    """Where received instances live."""

    root: Path = Path("var/store")
    # Analysis results a person looks at (overlay PNGs for the status page), one folder per study.
    results: Path = Path("var/results")
    # Below this much free space C-STORE answers Out of Resources instead of filling the disk
    # (0 turns the guard off: a full disk then fails the write itself, also Out of Resources).
    min_free_mb: int = Field(500, ge=0)


class StateSettings(_Section):
    """Where instances, studies, their transitions and deliveries are kept.

    With no ``url`` the state is the embedded SQLite file ``database`` (one host). With
    ``url: postgresql://user:password@host:5432/dbname`` it is that PostgreSQL database, which
    every role on every host must share (the URL is a secret: it may hold the password).
    """

    database: Path = Path("var/onconode.db")
    url: SecretStr | None = None
    # A claim on a study (analysis) or a delivery lasts this long unless its holder renews it, which
    # it does every third of it while it works; a holder that dies loses its work after this long.
    lease_seconds: float = Field(30, gt=0)

    @model_validator(mode="after")
    def _postgresql_url(self) -> StateSettings:
        if self.url is not None and not self.url.get_secret_value().startswith(POSTGRESQL_SCHEMES):
            raise ValueError("state.url must start with postgresql:// (the SQLite state is state.database)")
        return self


class StudySettings(_Section):
    """Study assembly."""

    # A study is stable once no instance arrived for this long (seconds).
    stable_seconds: float = Field(10, gt=0)
    # A sender that releases the association which delivered a study says "that was all": the study
    # is complete this long after the release when nothing arrived since (seconds; null: only
    # stable_seconds decides). A caller's own settle_seconds overrides it.
    settle_seconds: float | None = Field(2, ge=0)
    # How often the assembler looks for stable studies (seconds).
    poll_seconds: float = Field(0.5, gt=0)


class Caller(_Section):
    """A peer allowed to open associations: its calling AE title and, optionally, its host."""

    ae_title: AETitle
    host: str | None = None
    # Where the caller listens for C-STORE: with a host and a port, results go back to the AE that
    # sent the study when no DICOM destination is configured.
    port: int | None = Field(default=None, ge=1, le=65535)
    # How long after this caller releases an association the study it delivered is complete; for a
    # sender that spreads one study over several associations in a row, longer than its gaps.
    settle_seconds: float | None = Field(default=None, ge=0)
    # Ask the caller (a Query/Retrieve SCP at host:port, e.g. the PACS) after each release how many
    # instances the study holds (C-FIND, NumberOfStudyRelatedInstances): when all are here, the study
    # is complete at once instead of after the settle time.
    count_query: bool = False

    @model_validator(mode="after")
    def _count_query_needs_an_address(self) -> Caller:
        if self.count_query and (self.host is None or self.port is None):
            raise ValueError(f"callers[{self.ae_title}].count_query needs the caller's host and port")
        return self


class TLSSettings(_Section):
    """DICOM TLS (PS3.15 B.1, BCP 195); off by default."""

    enabled: bool = False
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    require_client_cert: bool = True

    @model_validator(mode="after")
    def _files_when_enabled(self) -> TLSSettings:
        if self.enabled:
            missing = [n for n in ("cert", "key") if getattr(self, n) is None]
            if self.require_client_cert and self.ca is None:
                missing.append("ca")
            if missing:
                raise ValueError(f"tls.enabled needs {', '.join(missing)}")
            for name in ("cert", "key", "ca"):
                path = getattr(self, name)
                if path is not None and not path.is_file():
                    raise ValueError(f"tls.{name}: no such file {path}")
        return self


def _regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"regular expression {value!r}: {err}") from err
    return value


Regex = Annotated[str | None, AfterValidator(_regex)]


class RoutingRule(_Section):
    """Which model analyses which series; rules are tried in order and the first match wins.

    Every given condition must hold for a series to match; an absent condition matches anything.
    Regexes are searched (``re.search``), so anchor them when you mean the whole value. ``image_type``
    lists values that must be present in ImageType, or absent with a leading ``!`` (``!LOCALIZER``).
    A rule narrows what the model's manifest accepts; with ``use_manifest: false`` its conditions
    alone decide (an override, e.g. for a site whose series the classifier reads wrongly).
    ``target``, ``max_analysed_slices`` and ``key_slices`` override the manifest's ``slices``.
    """

    name: str = Field(min_length=1)
    model: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    modality: Literal["CT", "MR"] | None = None
    body_part: Regex = None
    study_description: Regex = None
    series_description: Regex = None
    sop_class: list[str] = []
    image_type: list[str] = []
    min_slices: int = Field(default=1, ge=1)
    max_slices: int | None = Field(default=None, ge=1)
    use_manifest: bool = True
    target: Literal["lung", "brain", "body"] | None = None
    max_analysed_slices: int | None = Field(default=None, ge=1)
    key_slices: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _slice_range(self) -> RoutingRule:
        if self.max_slices is not None and self.max_slices < self.min_slices:
            raise ValueError(f"routing rule {self.name}: max_slices {self.max_slices} < min_slices "
                             f"{self.min_slices}")
        return self


class AnalysisSettings(_Section):
    """Where models live and how hard onnxruntime may use the CPU."""

    models: Path = Path("models")
    intra_op_threads: int = Field(default=2, ge=1)


class DicomDestination(_Section):
    """A DICOM AE that receives the SC and SR objects by C-STORE."""

    kind: Literal["dicom"] = "dicom"
    ae_title: AETitle
    host: str
    port: int = Field(ge=1, le=65535)

    @property
    def key(self) -> str:
        """The destination as recorded in delivery rows: ``AE@HOST:PORT``."""
        return f"{self.ae_title}@{self.host}:{self.port}"


class FhirDestination(_Section):
    """The EHR's FHIR R4 base URL; the report goes there as one transaction Bundle."""

    kind: Literal["fhir"] = "fhir"
    base_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    token: SecretStr | None = None  # sent as "Authorization: Bearer <token>"
    # Identifier system of the DICOM Patient ID in the EHR (Patient.identifier.system): the site's
    # own (e.g. its MRN namespace, urn:oid:...); required with a base_url, never guessed.
    patient_system: str | None = None
    # The PACS's DICOMweb base (WADO-RS), named in the ImagingStudy's Endpoint so the EHR can open
    # the images, e.g. http://pacs:8042/dicom-web
    dicomweb_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    timeout_seconds: float = Field(30, gt=0)

    @model_validator(mode="after")
    def _patient_system_with_base_url(self) -> FhirDestination:
        if self.base_url and not (self.patient_system or "").strip():
            raise ValueError("destinations.fhir.patient_system is required when base_url is set: the EHR's "
                             "identifier system for the DICOM Patient ID (e.g. urn:oid:<your MRN OID>)")
        return self

    @property
    def key(self) -> str:
        return (self.base_url or "").rstrip("/")


class DestinationSettings(_Section):
    """Where results go. No DICOM destination: the AE that sent the study, if it is a known
    caller with a host and a port; no FHIR base URL: no FHIR delivery."""

    dicom: list[DicomDestination] = []
    fhir: FhirDestination = FhirDestination()


class DeliverySettings(_Section):
    """The outbox and how hard the dispatcher retries."""

    outbox: Path = Path("var/outbox")
    max_attempts: int = Field(8, ge=1)
    backoff_seconds: float = Field(2, gt=0)  # first retry after this, doubling each time
    max_backoff_seconds: float = Field(300, gt=0)
    poll_seconds: float = Field(0.5, gt=0)
    calling_ae: AETitle | None = None  # our AE title when sending; default node.ae_title


class LogSettings(_Section):
    level: str = "INFO"


class ApiSettings(_Section):
    """The HTTP API and status page, served by ``onconode serve`` beside the DICOM listener.

    Loopback by default; set ``host: 0.0.0.0`` only behind a firewall or with a ``token``. With a
    token every route except ``/health`` needs ``Authorization: Bearer <token>``.
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)  # 0: any free port (tests)
    token: SecretStr | None = None
    # Host names (as in the Host header; "*.example.org" for subdomains) the API answers to besides
    # loopback and ``host``; any other is refused (DNS rebinding). Needed when host is 0.0.0.0.
    allowed_hosts: list[str] = []


class AuditSettings(_Section):
    """The JSON-lines audit trail: associations, study transitions, deliveries; no patient data."""

    path: Path | None = Path("var/audit.jsonl")  # null turns the audit trail off


class Role(str, Enum):
    """What one ``onconode serve`` process does; every role may run on any host that sees the same
    state and storage, and the default is all four in one process."""

    RECEIVE = "receive"  # the DICOM listener: C-STORE into the shared storage root
    ANALYSE = "analyse"  # the worker: claims queued studies, analyses them, records the outputs
    DELIVER = "deliver"  # the dispatcher: claims due deliveries and sends them
    API = "api"  # the HTTP API and status page


class Settings(BaseSettings):
    """The whole configuration; one nested model per YAML section."""

    model_config = SettingsConfigDict(
        env_prefix="ONCONODE_", env_nested_delimiter="__", extra="forbid", yaml_file=None
    )

    node: NodeSettings = Field(default_factory=NodeSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    study: StudySettings = Field(default_factory=StudySettings)
    # Empty list: accept any calling AE (demo only; the shipped YAML lists the callers).
    callers: list[Caller] = []
    tls: TLSSettings = Field(default_factory=TLSSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    # First match wins; no match means "no applicable model" for the study (not an error).
    routing: list[RoutingRule] = []
    analysis: AnalysisSettings = Field(default_factory=AnalysisSettings)
    destinations: DestinationSettings = Field(default_factory=DestinationSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    # What this process runs (``onconode serve --role`` overrides it).
    roles: list[Role] = Field(default_factory=lambda: list(Role), min_length=1)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls))


def config_path(explicit: Path | None = None) -> Path | None:
    """The YAML file to read: ``--config``, else ``$ONCONODE_CONFIG``, else the default if present.

    Raises
    ------
    FileNotFoundError
        When a file was named explicitly (flag or environment) and does not exist.
    """
    named = explicit or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    if named is not None:
        if not named.is_file():
            raise FileNotFoundError(f"configuration file not found: {named}")
        return named
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read and validate the configuration (see the module docstring for the priority order)."""
    source = config_path(path)

    class _FromFile(Settings):
        model_config = SettingsConfigDict(yaml_file=source)

    return _FromFile(**overrides)
