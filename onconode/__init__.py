"""OncoNode: a DICOM node that runs AI cancer classifiers on CT/MR studies. Research use only, not for diagnosis."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
