"""The patient and study attributes OncoNode copies from a source image into its own objects, made
safe to copy: a value that does not parse for its VR, or is not one of an attribute's enumerated
values, is left empty, and the note says which attribute it was, never its value.

Why: highdicom copies the Patient and General Study modules from the source and refuses a value
that is not valid for its VR (a PatientBirthDate "1901-01-01" is no DA). A scanner's typo must
not stop the whole report, and the offending value (a birth date, a name) must not reach an error
text or a log line.
"""

from __future__ import annotations

import copy
import warnings

from pydicom import Dataset, config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.valuerep import validate_value

# Attributes highdicom copies into SR, SC, SEG and KOS, and those OncoNode copies beside them.
COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
          "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription", "PatientAge",
          "PatientSize", "PatientWeight", "PatientIdentityRemoved", "DeidentificationMethod", "IssuerOfPatientID",
          "SeriesDate", "SeriesTime", "ContentDate", "ContentTime", "AcquisitionDate", "AcquisitionTime")
# Patient and General Study attributes highdicom does not copy into every object (its SR and SEG take
# the last three from the evidence, its SC and KOS do not); copied when the source has them, so every
# object of the study tells the same story (dcentvfy compares them).
PATIENT_STUDY_EXTRA = ("StudyDescription", "PatientAge", "PatientSize", "PatientWeight",
                       "PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
                       "IssuerOfPatientID", "OtherPatientIDsSequence",
                       "ProcedureCodeSequence", "ReferencedStudySequence", "PregnancyStatus")


# Type 2 attributes of the Patient and General Study modules that highdicom reads from the source
# without a default: a source that lacks one (COVID-CT-MD's has no PatientName) would stop the report.
REQUIRED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
            "ReferringPhysicianName", "StudyID", "AccessionNumber")
# Attributes with enumerated values (PS3.3 C.7.1.1): a value that parses for its VR but is not one of
# them ("0000" for a sex) is refused by highdicom all the same.
ENUMERATED = {"PatientSex": frozenset({"M", "F", "O"}), "PatientIdentityRemoved": frozenset({"YES", "NO"})}


def _valid(ds: Dataset, keyword: str) -> bool:
    allowed = ENUMERATED.get(keyword)
    if allowed is not None and ds[keyword].value not in (None, "") and ds[keyword].value not in allowed:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            element = ds[keyword]
            if element.VR == "SQ" or element.value is None:
                return True
            values = element.value if element.VM > 1 else [element.value]
            for value in values:
                validate_value(element.VR, value if isinstance(value, (bytes, str)) else str(value), config.RAISE)
    except (ValueError, KeyError, TypeError, OverflowError):
        return False
    return True


def sanitized(source: Dataset) -> tuple[Dataset, tuple[str, ...]]:
    """``source`` when every copied attribute parses and every ``REQUIRED`` one is there, else a copy
    whose unparsable ones are emptied and whose missing required ones are added empty; notes name
    each.

    Only a header that needs a change is copied: the source's own elements stay as received either
    way, and the common case (a few hundred clean headers per report) costs no copy at all.
    """
    bad = [keyword for keyword in COPIED if keyword in source and not _valid(source, keyword)]
    missing = [keyword for keyword in REQUIRED if keyword not in source]
    if not bad and not missing:
        return source, ()
    clean = copy.deepcopy(source)
    notes = []
    for keyword in missing:
        clean[keyword] = DataElement(keyword, dictionary_VR(keyword), "")
        notes.append(f"{keyword} is absent from the source; empty in OncoNode's outputs")
    for keyword in bad:
        element = clean[keyword]
        vr = element.VR
        clean[keyword] = DataElement(element.tag, vr, "")
        what = "one of its enumerated values" if keyword in ENUMERATED else f"a valid {vr}"
        notes.append(f"{keyword} in the source is not {what}; left empty in OncoNode's outputs")
    return clean, tuple(notes)


def copy_patient_study(source: Dataset, target: Dataset) -> None:
    """Copy the ``PATIENT_STUDY_EXTRA`` attributes the source has and the target lacks."""
    for keyword in PATIENT_STUDY_EXTRA:
        if keyword in source and keyword not in target:
            target[keyword] = source[keyword]
