"""The EHR side of a result: a FHIR R4B transaction Bundle.

Input: ``StudyFacts`` (identifiers read from the source header by the outbox), the ``Finding``
values of the SR, the ``Algorithm`` and the SR's SOP Instance UID.
Output: a validated ``fhir.resources.R4B.bundle.Bundle`` holding
- the Patient, matched by identifier (system from configuration, value = DICOM Patient ID) with a
  conditional create: an existing Patient is used as it is; a new one carries only the identifier,
  because the node must never invent (or overwrite) demographics;
- a Device for the model and an ImagingStudy with the Study Instance UID as ``urn:oid:``
  identifier, both conditional creates on their identifiers;
- one Observation per label (value = probability, interpretation detected / not detected,
  derivedFrom the ImagingStudy, device = the model);
- the DiagnosticReport (preliminary: nobody verified it), identified by the SR's UID.
Every entry is a conditional create on a stable identifier, so a bundle sent twice (a retry after
a lost answer) stores its resources once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from onconode.reporting.sc import Algorithm
from onconode.reporting.sr import Finding

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
URI = "urn:ietf:rfc:3986"  # identifier system for URIs such as urn:oid:<UID>
# LOINC 18748-4 Diagnostic imaging study (the report's code).
REPORT_CODE = {"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}
# HL7 v2 table 0074: RAD, the diagnostic service section.
CATEGORY_RAD = {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}
# HL7 v2 table 0203: ACSN, accession number.
TYPE_ACCESSION = {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}
# v3 ObservationInterpretation: detected / not detected.
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DETECTED = {"system": INTERPRETATION, "code": "DET", "display": "Detected"}
NOT_DETECTED = {"system": INTERPRETATION, "code": "ND", "display": "Not detected"}
# DICOM modality code system for ImagingStudy.modality.
DICOM_DCM = "http://dicom.nema.org/resources/ontology/DCM"
NOT_FOR_DIAGNOSIS = "AI result - research use only, NOT FOR DIAGNOSIS. Unverified by a physician."
_NAMESPACE = uuid.UUID("6b1f3c2e-4c1a-4c55-9a53-0f6d1e0c0a11")


@dataclass(frozen=True)
class StudyFacts:
    """What the EHR needs to know about the study; read from the source header, no demographics."""

    study_uid: str
    patient_id: str
    modality: str
    accession_number: str | None = None


def build_bundle(study: StudyFacts, findings: Sequence[Finding], algorithm: Algorithm, sr_uid: str,
                 issued: datetime, patient_system: str) -> Bundle:
    """The transaction Bundle for one report (see the module docstring).

    Raises
    ------
    ValueError
        When the study has no Patient ID (the EHR could not file the report), there are no
        findings, or the result does not validate against the R4B models.
    """
    if not study.patient_id.strip():
        raise ValueError("study has no Patient ID: the report cannot be matched to an EHR patient")
    if not findings:
        raise ValueError("findings: at least one is required")
    if issued.tzinfo is None:
        raise ValueError("issued must be timezone-aware")
    patient_url, device_url, study_url, report_url = (_urn(sr_uid, n) for n in
                                                      ("patient", "device", "study", "report"))
    patient_ident = {"system": patient_system, "value": study.patient_id}
    device_ident = {"system": URI, "value": f"urn:oid:{algorithm.device_uid}"}
    study_ident = {"system": URI, "value": f"urn:oid:{study.study_uid}"}
    report_ident = {"system": URI, "value": f"urn:oid:{sr_uid}"}
    patient = {"resourceType": "Patient", "identifier": [patient_ident]}
    device = {
        "resourceType": "Device", "identifier": [device_ident], "status": "active",
        "manufacturer": algorithm.manufacturer,
        "deviceName": [{"name": algorithm.name, "type": "model-name"}],
        "version": [{"value": algorithm.version}],
        "note": [{"text": NOT_FOR_DIAGNOSIS}],
    }
    imaging_study = {
        "resourceType": "ImagingStudy", "identifier": [study_ident], "status": "available",
        "subject": {"reference": patient_url},
        "modality": [{"system": DICOM_DCM, "code": study.modality}],
    }
    observations, observation_urls = [], []
    for index, finding in enumerate(findings):
        url = _urn(sr_uid, f"observation-{index}")
        observation_urls.append(url)
        observations.append(_entry(url, {
            "resourceType": "Observation", "status": "preliminary",
            "identifier": [{"system": URI, "value": f"urn:uuid:{url.removeprefix('urn:uuid:')}"}],
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "imaging"}]}],
            "code": {"coding": [{"system": SNOMED, "code": finding.code, "display": finding.meaning}],
                     "text": f"AI probability of {finding.label}"},
            "subject": {"reference": patient_url},
            "issued": issued.isoformat(),
            "valueQuantity": {"value": round(finding.probability, 6), "unit": "1", "system": UCUM, "code": "1"},
            "interpretation": [{"coding": [DETECTED if finding.predicted else NOT_DETECTED]}],
            "derivedFrom": [{"reference": study_url}],
            "device": {"reference": device_url},
            "note": [{"text": NOT_FOR_DIAGNOSIS}],
        }, _if_none_exist(url)))
    predicted = next((f for f in findings if f.predicted), findings[0])
    identifiers: list[dict[str, Any]] = [report_ident]
    if study.accession_number:
        identifiers.append({"type": {"coding": [TYPE_ACCESSION]}, "value": study.accession_number})
    report = {
        "resourceType": "DiagnosticReport", "identifier": identifiers, "status": "preliminary",
        "category": [{"coding": [CATEGORY_RAD]}], "code": {"coding": [REPORT_CODE]},
        "subject": {"reference": patient_url}, "issued": issued.isoformat(),
        "performer": [{"display": f"{algorithm.manufacturer} {algorithm.name} {algorithm.version} (AI)"}],
        "result": [{"reference": u} for u in observation_urls],
        "imagingStudy": [{"reference": study_url}],
        "conclusion": (f"{predicted.meaning} (model label {predicted.label}, probability "
                       f"{predicted.probability:.3f}). {NOT_FOR_DIAGNOSIS}"),
        "conclusionCode": [{"coding": [{"system": SNOMED, "code": predicted.code, "display": predicted.meaning}]}],
    }
    bundle = {
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            _entry(patient_url, patient, _query(patient_ident)),
            _entry(device_url, device, _query(device_ident)),
            _entry(study_url, imaging_study, _query(study_ident)),
            *observations,
            _entry(report_url, report, _query(report_ident)),
        ],
    }
    try:
        return Bundle.model_validate(bundle)
    except Exception as err:  # pydantic.ValidationError; re-raised as the documented ValueError
        raise ValueError(f"FHIR bundle does not validate: {err}") from err


def _urn(sr_uid: str, name: str) -> str:
    """A stable ``urn:uuid:`` per report and resource, so a rebuilt bundle is the same bundle."""
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{sr_uid}/{name}')}"


def _query(identifier: dict[str, str]) -> str:
    return f"identifier={identifier['system']}|{identifier['value']}"


def _if_none_exist(url: str) -> str:
    return f"identifier={URI}|urn:uuid:{url.removeprefix('urn:uuid:')}"


def _entry(full_url: str, resource: dict[str, Any], if_none_exist: str) -> dict[str, Any]:
    """A conditional create (FHIR R4 3.1.0.8.1 ``ifNoneExist``)."""
    return {"fullUrl": full_url, "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"], "ifNoneExist": if_none_exist}}
