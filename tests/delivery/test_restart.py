"""A real ``onconode serve`` killed (SIGKILL) while the PACS stores the last object of a report: after
a restart that object is sent, and none of those before it twice (success is recorded per object,
before the next send)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pydicom
from pydicom import Dataset

from onconode.state import DeliveryState, StudyState
from tests.delivery.scp import CountingSCP
from tests.support import NodeProcess


def test_node_killed_before_the_last_object_sends_it_after_restart_and_none_twice(
        ct_files, ct_result, prepare, tmp_path: Path) -> None:
    folder = tmp_path / "node"
    folder.mkdir()
    node = NodeProcess(folder, delivery={"poll_seconds": 0.1, "backoff_seconds": 0.2,
                                         "outbox": str(tmp_path / "outbox")})
    killed: list[int] = []
    last: list[str] = []  # the SOP Instance UID of the report's last object, once prepared

    def kill_on_the_last(ds: Dataset) -> int | None:
        # Only the node sends here, so node.proc is set by the time a store arrives.
        if last and ds.SOPInstanceUID == last[0] and not killed and node.proc is not None:
            killed.append(node.proc.pid)
            os.kill(node.proc.pid, signal.SIGKILL)  # the node dies while waiting for this answer
            time.sleep(0.5)
            return 0xA700  # never read by the dead node; not counted as received
        return None

    scp = CountingSCP("PACS", on_store=kill_on_the_last).start()
    try:
        db, prepared = prepare(ct_files, ct_result,
                               {"dicom": [{"ae_title": "PACS", "host": "127.0.0.1", "port": scp.port}]},
                               db_path=folder / "onconode.db")
        db.close()
        assert prepared.dicom[0].name == "sr.dcm"  # the report first, what a reader waits for
        last.append(str(pydicom.dcmread(prepared.dicom[-1], stop_before_pixels=True).SOPInstanceUID))
        with contextlib.suppress(RuntimeError):  # the kill may come before the node reports ready
            node.start()
        assert node.proc is not None
        node.proc.wait(timeout=60)  # killed by the SCP on the last object
        assert node.proc.returncode == -signal.SIGKILL
        assert sum(scp.received.values()) == len(prepared.dicom) - 1 and last[0] not in scp.received
        assert scp.received[prepared.sr_uid] == 1
        after_kill = node.db()
        try:
            states = {d.object_uid: d.state for d in after_kill.deliveries(ct_result.study_uid)}
        finally:
            after_kill.close()
        assert states[last[0]] == DeliveryState.PENDING
        assert list(states.values()).count(DeliveryState.SENT) == len(prepared.dicom) - 1

        node.start()
        try:
            node.wait_for_state(ct_result.study_uid, StudyState.DELIVERED, timeout=30)
        finally:
            node.stop()
    finally:
        node.stop()  # also after a failure above: no node outlives its test
        scp.stop()
    assert scp.received[last[0]] == 1
    assert set(scp.received.values()) == {1} and len(scp.received) == len(prepared.dicom)
