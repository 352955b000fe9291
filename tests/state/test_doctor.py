"""``onconode doctor`` on the state: the database reached, its schema version, the storage marker;
read only (the database is not migrated, the marker not written)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from onconode.cli import main
from onconode.state import StateDB
from onconode.state.schema import SCHEMA_VERSION
from onconode.state.shared_storage import MARKER, check_shared_storage
from tests.state import raw
from tests.support import free_port


def _doctor(tmp_path: Path, state: Path | str, store: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    config = tmp_path / "doctor.yaml"
    config.write_text(yaml.safe_dump({
        "state": {"url": state} if isinstance(state, str) else {"database": str(state)},
        "storage": {"root": str(store), "results": str(tmp_path / "results"), "min_free_mb": 0},
        "analysis": {"models": str(tmp_path / "models")}, "node": {"port": free_port()},
        "api": {"port": free_port()}, "audit": {"path": None}}))
    status = main(["--config", str(config), "doctor", "--offline"])
    lines = capsys.readouterr().out.splitlines()
    return status, "\n".join(line for line in lines if line.split()[1:2] in (["state"], ["shared"]))


def test_doctor_reads_an_empty_database_without_changing_it(state_target: Path | str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    status, found = _doctor(tmp_path, state_target, tmp_path / "store", capsys)
    assert status == 0, found
    assert "ok       state" in found and f"is empty: the schema (version {SCHEMA_VERSION}) is created at the first start" in found
    assert f"ok       shared       storage root {tmp_path / 'store'} gets its marker at the first start" in found
    assert not (tmp_path / "store" / MARKER).exists()
    if isinstance(state_target, Path):
        assert not state_target.exists()
    else:
        assert raw.execute(state_target, "SELECT to_regclass('schema_version')") == [(None,)]


def test_doctor_finds_the_schema_version_and_the_storage_marker(state_target: Path | str, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    db = StateDB(state_target)
    try:
        node_id = check_shared_storage(db, tmp_path / "store")
    finally:
        db.close()
    status, found = _doctor(tmp_path, state_target, tmp_path / "store", capsys)
    assert f"answers, schema version {SCHEMA_VERSION}" in found
    assert f"storage root {tmp_path / 'store'} is this database's (marker {node_id[:12]})" in found

    status, found = _doctor(tmp_path, state_target, tmp_path / "not-mounted", capsys)
    assert status == 1
    assert (f"PROBLEM  shared       storage root {tmp_path / 'not-mounted'} has no {MARKER}, but this database's "
            "storage was set up before") in found and found.endswith("the node will not start")

    raw.set_schema_version(state_target, 2)
    status, found = _doctor(tmp_path, state_target, tmp_path / "store", capsys)
    assert "warning  state" in found and f"has schema version 2: the next start migrates it to {SCHEMA_VERSION}" in found
    assert raw.schema_version(state_target) == 2  # read, not migrated


def test_doctor_names_an_unreachable_database_without_its_password(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql://onconode:secret-word@127.0.0.1:{free_port()}/onconode"
    status, found = _doctor(tmp_path, url, tmp_path / "store", capsys)
    assert status == 1
    assert found.startswith("PROBLEM  state        cannot open the state database: database: connection failed")
    assert "secret-word" not in found
