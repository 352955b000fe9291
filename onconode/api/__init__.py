"""The HTTP API and status page (FastAPI), served by ``onconode serve`` beside the DICOM listener."""
