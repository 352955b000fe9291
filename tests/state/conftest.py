"""Fixtures of the state tests: a database per engine, and instances to fill it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from onconode.state import ReceivedInstance, StateDB
from onconode.values import InstanceIdentity


def instance(sop: str, study: str = "1.2.3", at: float = 1000.0) -> ReceivedInstance:
    return ReceivedInstance(InstanceIdentity(study, f"{study}.4", sop, "1.2.840.10008.5.1.4.1.1.2", "CT"),
                            "1.2.840.10008.1.2.1", 10, "a" * 64, at, "PACS")


@pytest.fixture
def open_db(state_target: Path | str) -> Iterator[Callable[[str], StateDB]]:
    """``open_db(owner)``: a connection of its own to the test's database, its leases named ``owner``
    (as another process's would be)."""
    opened: list[StateDB] = []

    def open_one(owner: str) -> StateDB:
        db = StateDB(state_target)
        db.owner = owner
        opened.append(db)
        return db

    yield open_one
    for db in opened:
        db.close()
