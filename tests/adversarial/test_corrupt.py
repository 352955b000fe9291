"""Corrupt instances are never acknowledged Success: each fault gets its own failure status, nothing
is stored, the log names the fault and no value of the data set, and the node serves on. On both
acceptor paths, with and without receiver processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.presentation import build_context

from onconode.dicom_node.status import StoreStatus
from tests.adversarial.conftest import MAX_DATASET
from tests.adversarial.payloads import SECRET_ID, SECRET_NAME, cases, deflate_bomb, part10
from tests.support import NodeProcess, echo_status

EXPECTED = {
    "Pixel Data announcing 2.4 GB with 100 bytes sent": StoreStatus.CANNOT_DECODE,
    "native Pixel Data shorter than Rows x Columns x Bits": StoreStatus.PIXEL_DATA_LENGTH,
    "native Pixel Data longer than Rows x Columns x Bits": StoreStatus.PIXEL_DATA_LENGTH,
    "raw pixels on a JPEG Lossless context": StoreStatus.TRANSFER_SYNTAX_MISMATCH,
    "explicit VR bytes on an implicit VR context": StoreStatus.TRANSFER_SYNTAX_MISMATCH,
    "implicit VR bytes on an explicit VR context": StoreStatus.TRANSFER_SYNTAX_MISMATCH,
    "data set cut in the middle of an element": StoreStatus.CANNOT_DECODE,
    "encapsulated Pixel Data on a native context": StoreStatus.TRANSFER_SYNTAX_MISMATCH,
    "a JPEG context whose fragment is not JPEG": StoreStatus.TRANSFER_SYNTAX_MISMATCH,
}


def send_file(port: int, path: Path, sop_class: str, transfer_syntax: str) -> int | None:
    """C-STORE the data set of ``path`` unchanged on a context of ``transfer_syntax``; the status."""
    ae = AE(ae_title="BADSCU")
    ae.requested_contexts = [build_context(sop_class, [transfer_syntax])]
    assoc = ae.associate("127.0.0.1", port, ae_title="ONCONODE")
    assert assoc.is_established
    try:
        response = assoc.send_c_store(path)
    finally:
        if assoc.is_established:
            assoc.release()
    return int(response.Status) if "Status" in response else None


@pytest.fixture(scope="module")
def corrupt(data: Path) -> dict[str, tuple[str, str, str, bytes]]:
    return cases(data)


@pytest.mark.parametrize("case", list(EXPECTED))
def test_a_corrupt_instance_gets_its_failure_status_and_is_not_stored(
        hostile: NodeProcess, corrupt: dict[str, tuple[str, str, str, bytes]], case: str, tmp_path: Path) -> None:
    sop_class, sop_instance, syntax, data_set = corrupt[case]
    path = tmp_path / "corrupt.dcm"
    path.write_bytes(part10(sop_class, sop_instance, syntax, data_set))
    log_before = len(hostile.log())

    status = send_file(hostile.port, path, sop_class, syntax)

    expected = EXPECTED[case]
    assert status == expected, f"0x{status or 0:04X}"
    assert not list(hostile.store.rglob(f"{sop_instance}.dcm")) and hostile.leftovers() == []
    log = hostile.wait_for_log(f"status=0x{expected:04X}")[log_before:]
    assert "Secretname" not in log and SECRET_ID not in log and SECRET_NAME not in log
    assert echo_status(hostile.port) == 0


def test_a_deflated_data_set_inflating_past_the_limit_is_refused(hostile: NodeProcess, tmp_path: Path) -> None:
    sop_class, sop_instance, file_bytes = deflate_bomb(2 * MAX_DATASET)
    assert len(file_bytes) < MAX_DATASET // 50  # small on the wire
    path = tmp_path / "bomb.dcm"
    path.write_bytes(file_bytes)
    status = send_file(hostile.port, path, sop_class, "1.2.840.10008.1.2.1.99")
    assert status == StoreStatus.TOO_LARGE_INFLATED
    assert not list(hostile.store.rglob(f"{sop_instance}.dcm"))
    assert echo_status(hostile.port) == 0
