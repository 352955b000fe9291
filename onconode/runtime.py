"""Process-wide settings of the libraries OncoNode uses, set once where a process starts (the CLI,
a receiver process), never as a side effect of importing a module.

Both keep values from a data set out of the log: pydicom, when it reads a value that does not
parse for its VR, logs a warning that quotes the value (a birth date, a name); highdicom warns,
quoting the patient's name, about single-component person names, which public and de-identified
data are full of. OncoNode checks the values it uses by its own rules, which name the attribute
and never the value.
"""

from __future__ import annotations

import warnings

import pydicom


def configure() -> None:
    """Quiet the libraries' value-quoting warnings (see the module docstring). Idempotent."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    warnings.filterwarnings("ignore", message=r".*unlikely to represent the intended person name.*")
    warnings.filterwarnings("ignore", message=r"(?s)Invalid value for VR.*")
