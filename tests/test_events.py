"""Log lines: key=value format, and no data values quoted by libraries."""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator

import pytest
from highdicom.base import check_person_name

from onconode.events import Event, log_event, withhold_library_values


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, warnings.showwarning)
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    withhold_library_values()
    yield stream
    root.handlers[:], root.level, warnings.showwarning = saved[0], saved[1], saved[2]


def test_log_event_quotes_values_with_spaces() -> None:
    stream = io.StringIO()
    log = logging.getLogger("test.events")
    log.addHandler(logging.StreamHandler(stream))
    log.setLevel(logging.INFO)
    log_event(log, Event.STORE_FAILED, status="0xC221", reason='a "b" c', sop=None)
    assert stream.getvalue().strip() == 'event=store_failed status=0xC221 reason="a \\"b\\" c"'


def test_library_warnings_and_records_lose_their_values(captured: io.StringIO) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        check_person_name("Secretname")  # highdicom quotes the name in its warning
    logging.getLogger("pydicom").warning("Invalid value for VR UI: 'Secretuid'")
    text = captured.getvalue()
    assert "Secret" not in text
    assert text.count("event=library_warning") == 2
