"""The key images, flagged: a Key Object Selection document (PS3.3 A.35.4) that a PACS and a viewer
show as "key images" of the study, pointing at the source slices the conclusion rests on.

Input: the ``Conclusion`` and the key slices' headers (and the SR, so the selection leads to it).
Output: a ``highdicom.ko.KeyObjectSelectionDocument`` titled "Of Interest", whose description
says what the images are and that the selection is an unverified AI result.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes

from onconode.algorithm import MANUFACTURER
from onconode.conclusion import Conclusion
from onconode.reporting.equipment import contributing, stamp
from onconode.reporting.identity import copy_patient_study

SERIES_DESCRIPTION = "AI key images - NOT FOR DIAGNOSIS"
TITLE = codes.DCM.OfInterest


def build_kos(conclusion: Conclusion, key_sources: Sequence[Dataset], series_uid: str, sop_instance_uid: str,
              series_number: int, created: datetime, node_id: str) -> hd.ko.KeyObjectSelectionDocument:
    """The selection of the key slices, most suspicious first.

    Raises
    ------
    ValueError
        When there is no key slice.
    """
    if not key_sources:
        raise ValueError("no key slice to select")
    algorithm = conclusion.algorithm
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=algorithm.device_uid, name=algorithm.name, manufacturer_name=algorithm.manufacturer,
            model_name=f"{algorithm.name} {algorithm.version}"[:64], serial_number=node_id[:64]))
    selection = hd.ko.KeyObjectSelection(
        document_title=TITLE, referenced_objects=list(key_sources), observer_device_context=observer,
        description=(f"AI key images: {conclusion.headline()} - research use only, NOT FOR DIAGNOSIS")[:1024])
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=list(key_sources), content=selection, series_instance_uid=series_uid,
        series_number=series_number, sop_instance_uid=sop_instance_uid, instance_number=1,
        manufacturer=MANUFACTURER, contributing_equipment=[contributing(algorithm)])
    copy_patient_study(key_sources[0], kos)
    stamp(kos, algorithm, node_id, created)
    kos.SeriesDescription = SERIES_DESCRIPTION
    return kos
