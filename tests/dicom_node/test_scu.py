"""``onconode send`` / ``onconode echo`` as a person uses them: addresses, errors, folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from onconode.cli import main
from onconode.dicom_node.scu import PeerAddress, find_dicom_files
from tests.support import NodeProcess, free_port


@pytest.mark.parametrize(("text", "expected"), [
    ("ORTHANC@127.0.0.1:4242", PeerAddress("ORTHANC", "127.0.0.1", 4242)),
    ("PACS@pacs.example.org:104", PeerAddress("PACS", "pacs.example.org", 104)),
    ("PACS@[::1]:11112", PeerAddress("PACS", "::1", 11112)),
])
def test_peer_addresses_parse(text: str, expected: PeerAddress) -> None:
    assert PeerAddress.parse(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1:4242", "PACS@host", "PACS@host:0", "PACS@host:99999",
                                  "WAY-TOO-LONG-AE-TITLE@h:1", "A\\B@h:1"])
def test_bad_peer_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="peer"):
        PeerAddress.parse(text)


def test_folders_are_walked_and_non_dicom_files_skipped(tmp_path: Path, data: Path) -> None:
    (tmp_path / "notes.txt").write_text("not DICOM")
    (tmp_path / ".incoming").mkdir()  # a storage root's temporaries are not instances to send
    (tmp_path / ".incoming" / ".0a1b.tmp").write_bytes(b"")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    found, skipped = find_dicom_files([data / "dicom" / "misc", tmp_path])
    assert len(found) == 4 and skipped == [tmp_path / "notes.txt"]


def test_cli_send_and_echo_report_plain_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["send", str(tmp_path), "--to", "nonsense"]) == 2
    assert "expected AE@HOST:PORT" in capsys.readouterr().err
    assert main(["echo", f"ONCONODE@127.0.0.1:{free_port()}"]) == 2
    assert "connection refused" in capsys.readouterr().err
    assert main(["send", str(tmp_path / "missing"), "--to", f"X@127.0.0.1:{free_port()}"]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_cli_send_a_folder_to_a_node(node: NodeProcess, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", str(data / "dicom" / "misc"), "--to", f"ONCONODE@127.0.0.1:{node.port}"]) == 0
    assert "sent 4, failed 0" in capsys.readouterr().out
    assert len(node.stored_files()) == 4
