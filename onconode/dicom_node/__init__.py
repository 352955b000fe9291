"""Receive, store durably, assemble studies: the DICOM side of OncoNode (receive → store → assemble)."""
