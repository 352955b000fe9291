"""Copied patient and study attributes: a clean header is used as it is, a broken one is copied with
the broken value emptied, and the source never changes."""

from __future__ import annotations

from pydicom import Dataset

from onconode.reporting.identity import sanitized


def _header(birth_date: str) -> Dataset:
    ds = Dataset()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "P1"
    ds.PatientBirthDate = birth_date
    ds.PatientSex = "F"
    ds.StudyInstanceUID = "1.2.3"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20200411", "140053", "1", ""
    ds.ReferringPhysicianName = ""
    return ds


def test_a_clean_header_is_not_copied() -> None:
    source = _header("19610101")
    clean, notes = sanitized(source)
    assert clean is source and notes == ()


def test_a_broken_value_is_emptied_in_a_copy_and_the_note_holds_no_value() -> None:
    source = _header("1961-01-01")
    clean, notes = sanitized(source)
    assert clean is not source
    assert clean.PatientBirthDate == "" and clean.PatientName == "Doe^Jane"
    assert source.PatientBirthDate == "1961-01-01"  # the source stays as received
    assert notes == ("PatientBirthDate in the source is not a valid DA; left empty in OncoNode's outputs",)
    assert not any("1961" in n or "Doe" in n for n in notes)


def test_a_value_outside_the_enumerated_ones_is_emptied_too() -> None:
    """A sex "0000" (as the BRAINIX sample study sends it) is a valid CS but no sex highdicom accepts."""
    source = _header("19610101")
    source.PatientSex = "0000"
    clean, notes = sanitized(source)
    assert clean.PatientSex == "" and source.PatientSex == "0000"
    note = "PatientSex in the source is not one of its enumerated values; left empty in OncoNode's outputs"
    assert notes == (note,)
    for sex in ("M", "F", "O", ""):
        source.PatientSex = sex
        assert sanitized(source) == (source, ())


def test_a_missing_required_attribute_is_added_empty() -> None:
    """A source without PatientName (as COVID-CT-MD's sample studies come): highdicom reads it
    unconditionally, so the copy carries it empty, and the source stays as received."""
    source = _header("19610101")
    del source.PatientName
    clean, notes = sanitized(source)
    assert clean.PatientName == "" and "PatientName" not in source
    assert "PatientName is absent from the source; empty in OncoNode's outputs" in notes
    assert clean.PatientID == "P1"
