"""Process-wide settings of the libraries OncoNode uses, set once where a process starts (the CLI,
a receiver process), never as a side effect of importing a module.

Both keep values from a data set out of the log: pydicom, when it reads a value that does not
parse for its VR, logs a warning that quotes the value (a birth date, a name); highdicom warns,
quoting the patient's name, about single-component person names, which public and de-identified
data are full of. OncoNode checks the values it uses by its own rules, which name the attribute
and never the value.

pynetdicom sends a stored file's data set bytes straight from disk instead of decoding and
re-encoding them (its documented switch ``STORE_SEND_CHUNKED_DATASET``; the default re-encodes,
which may change the bytes and costs a decode per instance): what OncoNode forwards or returns is
exactly what it stored.
"""

from __future__ import annotations

import warnings

import pydicom
from pynetdicom import _config as pynetdicom_config


def configure() -> None:
    """Quiet the libraries' value-quoting warnings and send files as stored (see the module
    docstring). Idempotent."""
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    warnings.filterwarnings("ignore", message=r".*unlikely to represent the intended person name.*")
    warnings.filterwarnings("ignore", message=r"(?s)Invalid value for VR.*")
