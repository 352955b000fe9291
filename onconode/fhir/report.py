"""The EHR side of a conclusion: a FHIR R4B transaction Bundle an EHR can file.

Input: the ``Conclusion`` (the one record every output renders), ``StudyFacts`` (identifiers,
exam date and the study's series and instances, read from the source headers by the reporting
stage, no demographics), the SR's SOP Instance UID and the key images as PNG.
Output: a validated ``fhir.resources.R4B.bundle.Bundle`` holding
- the Patient, matched by identifier (the site's system, which the configuration must name, and
  the DICOM Patient ID) with a conditional create: an existing Patient is used as it is, a new
  one carries only the identifier, because the node must never invent or overwrite demographics;
- the Device (the model: name, version, OncoNode's version, the model file's SHA-256), an
  Endpoint (the PACS's DICOMweb base, when configured) and an ImagingStudy with its series,
  instances, start and endpoint, so the EHR can open the images;
- two Observations: the study probability (code "Probability", DICOM 122157; the threshold as a
  component) and the decision (code = the finding the model looks for, value Present/Absent,
  interpretation POS/NEG), both with the exam's date as ``effectiveDateTime``; a model that states
  no verdict (``Decision.verdict``) gets the probability alone, without threshold or decision,
  its text saying it is the key slices' mean and not a probability for the study;
- one Media per key image (PNG), and the DiagnosticReport (preliminary: nobody verified it),
  identified by the SR's UID, with the headline as ``conclusion`` and no ``conclusionCode``: a
  coded disorder there would reach problem lists, and an AI probability is not a diagnosis;
R4B's DiagnosticReport.performer cannot name a Device (Practitioner, Organization or CareTeam
only), so the model is named where FHIR allows it: each result Observation's and Media's ``device``.
Every entry is a conditional create on a stable identifier, so a bundle sent twice (a retry after a
lost answer) stores its resources once.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from onconode.algorithm import SOFTWARE
from onconode.conclusion import NOT_FOR_DIAGNOSIS, Conclusion

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
DICOM_DCM = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"
URI = "urn:ietf:rfc:3986"  # identifier system for URIs such as urn:oid:<UID>
SYSTEMS = {"SCT": SNOMED, "DCM": DICOM_DCM, "LN": LOINC}
REPORT_CODE = {"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}
CATEGORY_RAD = {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}
CATEGORY_IMAGING = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging"}
TYPE_ACCESSION = {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
POSITIVE = {"system": INTERPRETATION, "code": "POS", "display": "Positive"}
NEGATIVE = {"system": INTERPRETATION, "code": "NEG", "display": "Negative"}
PRESENT = {"system": SNOMED, "code": "52101004", "display": "Present"}
ABSENT = {"system": SNOMED, "code": "272519000", "display": "Absent"}
PROBABILITY = {"system": DICOM_DCM, "code": "122157", "display": "Probability"}
WADO_RS = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "dicom-wado-rs"}
_NAMESPACE = uuid.UUID("6b1f3c2e-4c1a-4c55-9a53-0f6d1e0c0a11")


@dataclass(frozen=True)
class InstanceFacts:
    sop_instance_uid: str
    sop_class_uid: str
    number: int | None


@dataclass(frozen=True)
class SeriesFacts:
    series_uid: str
    modality: str
    number: int | None
    description: str
    instances: tuple[InstanceFacts, ...]


@dataclass(frozen=True)
class StudyFacts:
    """What the EHR needs to know about the study; read from the source headers, no demographics."""

    study_uid: str
    patient_id: str
    modality: str
    accession_number: str | None = None
    started: str | None = None            # FHIR dateTime of the exam (StudyDate/StudyTime)
    series: tuple[SeriesFacts, ...] = ()


@dataclass(frozen=True)
class KeyImage:
    title: str
    png: bytes


@dataclass(frozen=True)
class Destination:
    patient_system: str
    dicomweb_url: str | None = None


def fhir_datetime(date: str, time: str = "", offset: str = "") -> str | None:
    """DICOM DA (+ TM, + TimezoneOffsetFromUTC) as a FHIR dateTime; the date alone when the time
    zone is unknown (FHIR requires one with a time). None when the date does not parse."""
    date = date.strip()
    if len(date) != 8 or not date.isdigit():
        return None
    try:
        day = datetime.strptime(date, "%Y%m%d")
    except ValueError:
        return None
    text = day.strftime("%Y-%m-%d")
    time, offset = time.strip().split(".")[0], offset.strip()
    if len(time) >= 4 and time.isdigit() and len(offset) == 5 and offset[0] in "+-" and offset[1:].isdigit():
        seconds = time[4:6] if len(time) >= 6 else "00"
        text += f"T{time[:2]}:{time[2:4]}:{seconds}{offset[:3]}:{offset[3:]}"
    return text


def build_bundle(conclusion: Conclusion, study: StudyFacts, sr_uid: str, issued: datetime,
                 destination: Destination, key_images: Sequence[KeyImage] = ()) -> Bundle:
    """The transaction Bundle for one report (see the module docstring).

    Raises
    ------
    ValueError
        When the study has no Patient ID (the EHR could not file the report), no patient
        identifier system is configured, or the result does not validate against R4B.
    """
    if not study.patient_id.strip():
        raise ValueError("study has no Patient ID: the report cannot be matched to an EHR patient")
    if not destination.patient_system.strip():
        raise ValueError("no patient identifier system (destinations.fhir.patient_system) is configured")
    if issued.tzinfo is None:
        raise ValueError("issued must be timezone-aware")
    url = {name: _urn(sr_uid, name) for name in ("patient", "device", "endpoint", "study", "probability",
                                                 "decision", "report")}
    algorithm = conclusion.algorithm
    patient_ident = {"system": destination.patient_system, "value": study.patient_id}
    device_ident = {"system": URI, "value": f"urn:oid:{algorithm.device_uid}"}
    study_ident = {"system": URI, "value": f"urn:oid:{study.study_uid}"}
    report_ident = {"system": URI, "value": f"urn:oid:{sr_uid}"}
    effective = {"effectiveDateTime": study.started} if study.started else {}
    subject = {"reference": url["patient"]}
    device_ref = {"reference": url["device"]}
    note = [{"text": NOT_FOR_DIAGNOSIS}]
    entries: list[dict[str, Any]] = [
        _entry(url["patient"], {"resourceType": "Patient", "identifier": [patient_ident]}, _query(patient_ident)),
        _entry(url["device"], {
            "resourceType": "Device", "identifier": [device_ident], "status": "active",
            "manufacturer": algorithm.manufacturer,
            "deviceName": [{"name": algorithm.name, "type": "model-name"}],
            "version": [{"type": {"text": "model"}, "value": algorithm.version},
                        {"type": {"text": "software"}, "value": SOFTWARE}],
            "property": [{"type": {"text": "SHA-256 of the model file"},
                          "valueCode": [{"text": algorithm.sha256 or "unknown"}]}],
            "note": note}, _query(device_ident)),
    ]
    imaging_study: dict[str, Any] = {
        "resourceType": "ImagingStudy", "identifier": [study_ident], "status": "available", "subject": subject,
        "modality": [{"system": DICOM_DCM, "code": study.modality}],
        "numberOfSeries": len(study.series), "numberOfInstances": sum(len(s.instances) for s in study.series),
        "series": [_series(s) for s in study.series],
    }
    if study.started:
        imaging_study["started"] = study.started
    if destination.dicomweb_url:
        endpoint_ident = {"system": URI, "value": destination.dicomweb_url}
        entries.append(_entry(url["endpoint"], {
            "resourceType": "Endpoint", "identifier": [endpoint_ident], "status": "active",
            "connectionType": WADO_RS, "payloadType": [{"text": "DICOM"}],
            "payloadMimeType": ["application/dicom"], "address": destination.dicomweb_url}, _query(endpoint_ident)))
        imaging_study["endpoint"] = [{"reference": url["endpoint"]}]
    entries.append(_entry(url["study"], imaging_study, _query(study_ident)))
    common = {"status": "preliminary", "category": [{"coding": [CATEGORY_IMAGING]}], "subject": subject,
              **effective, "issued": issued.isoformat(), "device": device_ref,
              "derivedFrom": [{"reference": url["study"]}], "note": note}
    finding = conclusion.finding
    # A model that states no verdict (``Decision.verdict``) gets no decision Observation and no
    # threshold: the probability stands alone, and the conclusion text says why.
    threshold = [{"code": {"text": "decision threshold"},
                  "valueQuantity": {"value": round(conclusion.threshold, 6), "unit": "1", "system": UCUM, "code": "1"}}]
    entries.append(_observation(url["probability"], {
        **common,
        "code": {"coding": [PROBABILITY], "text": f"AI probability of {finding.display} ({conclusion.value_scope})"},
        "valueQuantity": {"value": round(conclusion.probability, 6), "unit": "1", "system": UCUM, "code": "1"},
        "method": {"text": f"{algorithm.name} {algorithm.version}: {conclusion.method}"},
        **({"component": threshold} if conclusion.positive is not None else {}),
    }))
    results = [{"reference": url["probability"]}]
    if conclusion.positive is not None:
        entries.append(_observation(url["decision"], {
            **common,
            "code": {"coding": [{"system": SYSTEMS.get(finding.scheme, finding.scheme), "code": finding.code,
                                 "display": finding.meaning}], "text": f"AI: {finding.display}"},
            "valueCodeableConcept": {"coding": [PRESENT if conclusion.positive else ABSENT]},
            "interpretation": [{"coding": [POSITIVE if conclusion.positive else NEGATIVE]}],
            "hasMember": [{"reference": url["probability"]}],
        }))
        results.insert(0, {"reference": url["decision"]})
    media_refs = []
    for n, image in enumerate(key_images, start=1):
        media_url = _urn(sr_uid, f"media-{n}")
        media_refs.append({"comment": image.title, "link": {"reference": media_url}})
        entries.append(_observation(media_url, {
            "status": "completed", "subject": subject, "device": device_ref,
            "content": {"contentType": "image/png", "data": base64.b64encode(image.png).decode(),
                        "title": image.title}, "note": note}, resource_type="Media"))
    identifiers: list[dict[str, Any]] = [report_ident]
    if study.accession_number:
        identifiers.append({"type": {"coding": [TYPE_ACCESSION]}, "value": study.accession_number})
    report = {
        "resourceType": "DiagnosticReport", "identifier": identifiers, "status": "preliminary",
        "category": [{"coding": [CATEGORY_RAD]}], "code": {"coding": [REPORT_CODE]}, "subject": subject,
        **effective, "issued": issued.isoformat(),
        "result": results,
        "imagingStudy": [{"reference": url["study"]}],
        "conclusion": f"{conclusion.headline()}. {NOT_FOR_DIAGNOSIS}",
    }
    if media_refs:
        report["media"] = media_refs
    entries.append(_entry(url["report"], report, _query(report_ident)))
    try:
        return Bundle.model_validate({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    except Exception as err:  # pydantic.ValidationError; re-raised as the documented ValueError
        raise ValueError(f"FHIR bundle does not validate: {err}") from err


def _series(series: SeriesFacts) -> dict[str, Any]:
    out: dict[str, Any] = {"uid": series.series_uid, "modality": {"system": DICOM_DCM, "code": series.modality},
                           "numberOfInstances": len(series.instances),
                           "instance": [_instance(i) for i in series.instances]}
    if series.number is not None:
        out["number"] = series.number
    if series.description:
        out["description"] = series.description
    return out


def _instance(instance: InstanceFacts) -> dict[str, Any]:
    out: dict[str, Any] = {"uid": instance.sop_instance_uid,
                           "sopClass": {"system": URI, "code": f"urn:oid:{instance.sop_class_uid}"}}
    if instance.number is not None:
        out["number"] = instance.number
    return out


def _urn(sr_uid: str, name: str) -> str:
    """A stable ``urn:uuid:`` per report and resource, so a rebuilt bundle is the same bundle."""
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{sr_uid}/{name}')}"


def _query(identifier: dict[str, str]) -> str:
    return f"identifier={identifier['system']}|{identifier['value']}"


def _observation(url: str, body: dict[str, Any], resource_type: str = "Observation") -> dict[str, Any]:
    """A resource identified by its own stable URN, created once (conditional on that identifier)."""
    ident = {"system": URI, "value": url}
    return _entry(url, {"resourceType": resource_type, "identifier": [ident], **body}, _query(ident))


def _entry(full_url: str, resource: dict[str, Any], if_none_exist: str) -> dict[str, Any]:
    """A conditional create (FHIR R4 3.1.0.8.1 ``ifNoneExist``)."""
    return {"fullUrl": full_url, "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"], "ifNoneExist": if_none_exist}}
