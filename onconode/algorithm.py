"""Who produced a result: OncoNode itself and the model it ran, as values every output names.

IHE AI Results (AIR) asks that a reader can tell which algorithm, in which version, made an
output, and that a retrained model is a different device. So the model's device UID is a
function of its name, version and file hash (PS3.5 B.2, a UUID-derived UID): the same file
always gives the same UID, any new file a new one. OncoNode's own version is kept apart from the
model's: the SR and FHIR report name both.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from onconode import __version__

MANUFACTURER = "OncoNode"
SOFTWARE = f"OncoNode {__version__}"
_MODEL_NAMESPACE = uuid.UUID("0b6f1f7e-2d8e-4c3f-9a51-6f2b9d1c7e20")


@dataclass(frozen=True)
class Algorithm:
    """The model as a piece of equipment: creator, name, version, file hash and device UID."""

    name: str
    version: str
    device_uid: str
    sha256: str = ""
    manufacturer: str = MANUFACTURER

    @classmethod
    def from_model(cls, name: str, version: str, sha256: str) -> Algorithm:
        """A stable Device UID per model file (see the module docstring)."""
        return cls(name, version, f"2.25.{uuid.uuid5(_MODEL_NAMESPACE, f'{name}/{version}/{sha256}').int}", sha256)
