"""Results as DICOM: Secondary Capture overlays and the TID 1500 Structured Report."""
