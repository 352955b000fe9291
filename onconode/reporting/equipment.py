"""OncoNode as the equipment that wrote an object, and the model as the equipment that processed it.

Every object OncoNode sends (SR, SC, SEG, KOS) carries the same General Equipment values: the
manufacturer and model "OncoNode", OncoNode's own version and the model's in Software Versions,
and this installation's identity as Device Serial Number; and a Contributing Equipment item
(PS3.3 C.7.5.1, purpose "Processing Equipment") naming the algorithm with its device UID, as
IHE AI Results asks. A reader can then tell which node, and which model file, made a result.
"""

from __future__ import annotations

from datetime import datetime

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes

from onconode.algorithm import MANUFACTURER, SOFTWARE, Algorithm

# CID 7005 Contributing Equipment Purposes of Reference: the algorithm processed the images.
PURPOSE_PROCESSING = codes.DCM.ProcessingEquipment


def contributing(algorithm: Algorithm) -> hd.ContributingEquipment:
    """The Contributing Equipment Sequence item naming the algorithm."""
    item = hd.ContributingEquipment(
        manufacturer=algorithm.manufacturer, purpose_of_reference=PURPOSE_PROCESSING,
        manufacturer_model_name=algorithm.name, software_versions=algorithm.version,
        contribution_description="AI analysis; research use only, not for diagnosis")
    item.DeviceUID = algorithm.device_uid
    return item


def stamp(ds: Dataset, algorithm: Algorithm, node_id: str, created: datetime) -> None:
    """General Equipment and the series' date and time, the same on every object of one report."""
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MANUFACTURER
    ds.SoftwareVersions = [SOFTWARE, f"{algorithm.name} {algorithm.version}"[:64]]
    ds.DeviceSerialNumber = node_id[:64]
    ds.SeriesDate = created.strftime("%Y%m%d")
    ds.SeriesTime = created.strftime("%H%M%S")
