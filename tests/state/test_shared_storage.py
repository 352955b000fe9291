"""Every role sees the same storage and database: the storage marker, checked at start, refusing a
wrong or missing storage root with one line and exit 2; and an index entry whose file the storage
root does not hold is stored again when the instance is re-sent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from onconode.dicom_node.scu import PeerAddress, send_paths
from onconode.state import StateDB
from onconode.state.shared_storage import MARKER, StorageMismatch, check_shared_storage
from tests.state.nodes import SharedNode
from tests.support import wait_for


def test_the_first_start_marks_the_storage_and_later_starts_check_it(state_target: Path | str,
                                                                      tmp_path: Path) -> None:
    db = StateDB(state_target)
    try:
        store = tmp_path / "store"
        node_id = check_shared_storage(db, store)
        assert (store / MARKER).read_text() == f"{node_id}\n" and node_id == db.node_id()
        assert check_shared_storage(db, store) == node_id  # the same storage: fine, nothing rewritten

        with pytest.raises(StorageMismatch, match=r"has no \.onconode-storage, but this database's storage was "
                                                  r"set up before: mount the shared storage"):
            check_shared_storage(db, tmp_path / "empty-mount-point")
    finally:
        db.close()
    other = StateDB(tmp_path / "other.db")
    try:
        with pytest.raises(StorageMismatch, match="belongs to another OncoNode database"):
            check_shared_storage(other, store)
    finally:
        other.close()


def _refused(config: Path, *roles: str) -> str:
    """``onconode serve`` that must refuse: exit 2, no traceback; its one-line message."""
    flags = [arg for role in roles for arg in ("--role", role)]
    done = subprocess.run([sys.executable, "-m", "onconode", "--config", str(config), "serve", *flags],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr.splitlines()[-1]


def test_a_role_without_the_shared_storage_refuses_to_start_with_one_line(postgres_url: str,
                                                                           tmp_path: Path) -> None:
    site = SharedNode(tmp_path / "a", postgres_url, tmp_path / "shared")
    db = site.db()
    try:
        check_shared_storage(db, tmp_path / "shared")  # the site was set up with this storage
    finally:
        db.close()
    unmounted = SharedNode(tmp_path / "b", postgres_url, tmp_path / "b" / "not-mounted")
    line = _refused(unmounted.config_path, "analyse")
    assert line.startswith(f"onconode serve: storage root {tmp_path / 'b' / 'not-mounted'} has no .onconode-storage")
    assert not (tmp_path / "b" / "not-mounted" / MARKER).exists()


def test_a_role_on_another_databases_storage_refuses_to_start(tmp_path: Path) -> None:
    first = SharedNode(tmp_path / "a", tmp_path / "a.db", tmp_path / "shared")
    db = first.db()
    try:
        check_shared_storage(db, tmp_path / "shared")
    finally:
        db.close()
    second = SharedNode(tmp_path / "b", tmp_path / "b.db", tmp_path / "shared")
    line = _refused(second.config_path, "receive,api")
    assert line.startswith(f"onconode serve: storage root {tmp_path / 'shared'} belongs to another OncoNode database")


def test_an_unreachable_database_refuses_the_start_with_one_line(tmp_path: Path) -> None:
    from tests.support import free_port

    node = SharedNode(tmp_path, f"postgresql://onconode:secret-word@127.0.0.1:{free_port()}/onconode",
                      tmp_path / "store")
    line = _refused(node.config_path, "deliver")
    assert line.startswith("onconode serve: state: database: ") and "secret-word" not in line


def test_an_indexed_instance_missing_from_the_storage_is_stored_again_on_resend(postgres_url: str, tmp_path: Path,
                                                                                data: Path) -> None:
    series = data / "dicom" / "brain-tumor-progression-pgbm-001-t1post"
    files = sorted(series.glob("*.dcm"))[:3]
    node = SharedNode(tmp_path / "node", postgres_url, tmp_path / "shared", roles=["receive"])
    node.start()
    try:
        peer = PeerAddress("ONCONODE", "127.0.0.1", node.port)
        assert send_paths(files, peer).all_succeeded
        stored = node.stored_files()
        assert len(stored) == 3
        stored[0].unlink()  # the index says stored; the storage root does not hold it
        again = send_paths(files, peer)
        assert again.all_succeeded
        wait_for(lambda: stored[0].is_file(), 10, "the missing file to be stored again")
        assert stored[0].read_bytes()[128:132] == b"DICM"
        db = node.db()
        try:
            assert db.instance_totals()[0] == 3
        finally:
            db.close()
    finally:
        node.stop()
