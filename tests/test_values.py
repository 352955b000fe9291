from __future__ import annotations

import pytest

from onconode.values import check_ae_title, check_uid, unquoted


@pytest.mark.parametrize("uid", ["1.2.840.10008.5.1.4.1.1.2", "2.25.329800735698586629295641978511506172918", "0",
                                 "1.2.3.0.4"])
def test_valid_uids_pass(uid: str) -> None:
    assert check_uid(uid) is None


@pytest.mark.parametrize(("uid", "reason"), [
    ("../../etc", "grammar"), ("1.2.03", "grammar"), ("1..2", "grammar"), ("3.1", "grammar"), ("1.2.", "grammar"),
    ("1.2.3/4", "grammar"), ("", "empty"), ("1." + "2" * 63, "longer than 64"), (None, "not a string"),
    ("1.2.3 ", "grammar"),
])
def test_invalid_uids_are_refused_with_a_reason(uid: object, reason: str) -> None:
    assert reason in (check_uid(uid) or "")


@pytest.mark.parametrize(("title", "ok"), [("ONCONODE", True), ("A", True), ("X" * 16, True), ("X" * 17, False),
                                           ("A\\B", False), ("   ", False), ("TAB\tAE", False), (3, False)])
def test_ae_titles(title: object, ok: bool) -> None:
    assert (check_ae_title(title) is None) is ok


def test_a_library_message_loses_what_it_quotes() -> None:
    assert unquoted("'0000' is not a valid PatientSexValues") == "'…' is not a valid PatientSexValues"
    assert unquoted('Invalid value "Doe^Jane" for VR PN\nTraceback...') == "Invalid value '…' for VR PN"
    assert unquoted("") == ""
