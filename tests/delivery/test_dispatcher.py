"""The dispatcher against real peers on loopback: a DICOM AE that is down and comes back, a FHIR
endpoint that answers 500 then 201, the dead letter and its replay."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pydicom

from onconode.config import Caller, DeliverySettings, FhirDestination
from onconode.delivery.dispatcher import Dispatcher, backoff
from onconode.delivery.senders import DicomSender, FhirSender, without_peer_text
from onconode.state import DeliveryState, StateDB, StudyState
from tests.delivery.scp import CountingSCP
from tests.support import free_port, require

FAST = DeliverySettings(max_attempts=4, backoff_seconds=0.2, max_backoff_seconds=1, poll_seconds=0.05)


def dispatcher(db: StateDB, settings: DeliverySettings = FAST, fhir: FhirDestination | None = None) -> Dispatcher:
    return Dispatcher(db, {"dicom": DicomSender("ONCONODE"), "fhir": FhirSender(fhir or FhirDestination())},
                      settings)


def run_until(d: Dispatcher, done: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d.run_once()
        if done():
            return
        time.sleep(0.05)
    raise AssertionError("dispatcher did not finish in time")


def state(db: StateDB, study_uid: str) -> StudyState:
    study = db.study(study_uid)
    assert study is not None
    return study.state


def test_backoff_doubles_up_to_the_ceiling() -> None:
    assert [backoff(n, 2, 10) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]


def test_destination_down_then_up_is_delivered_once(ct_files, ct_result, prepare, tmp_path: Path) -> None:
    storescp = require("storescp")
    port = free_port()
    db, prepared = prepare(ct_files, ct_result, {"dicom": [{"ae_title": "STORESCP", "host": "127.0.0.1",
                                                            "port": port}]})
    d = dispatcher(db)
    d.run_once()  # nobody listens yet
    pending = db.deliveries(ct_result.study_uid, DeliveryState.PENDING)
    assert len(pending) == len(prepared.dicom) and all(p.attempts == 1 for p in pending)
    assert "association" in (pending[0].last_error or "")
    assert state(db, ct_result.study_uid) == StudyState.DELIVERING
    received = tmp_path / "received"
    received.mkdir()
    proc = subprocess.Popen([storescp, "-aet", "STORESCP", "-od", str(received), str(port)],
                            env={"TCP_NODELAY": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Generous: a C-STORE answer lost by pynetdicom under load costs one DIMSE timeout (senders.py).
        run_until(d, lambda: state(db, ct_result.study_uid) == StudyState.DELIVERED, timeout=90)
    finally:
        proc.terminate()
        proc.wait()
    files = sorted(received.iterdir())
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    assert len(uids) == len(set(uids)) == len(prepared.dicom)
    assert prepared.sr_uid in uids
    sent = db.deliveries(ct_result.study_uid, DeliveryState.SENT)
    assert len(sent) == len(uids) and all(s.attempts >= 2 for s in sent)


class FlakyFhir(BaseHTTPRequestHandler):
    """Answers the first POST with 500, the next ones with 201 and a transaction-response."""

    posts: ClassVar[list[bytes]] = []
    auth: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        FlakyFhir.posts.append(body)
        FlakyFhir.auth.append(self.headers.get("Authorization"))
        if len(FlakyFhir.posts) == 1:
            self._answer(500, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code":
                                                                             "exception", "diagnostics": "boom"}]})
            return
        entries = [{"response": {"status": "201 Created"}} for _ in json.loads(body)["entry"]]
        self._answer(201, {"resourceType": "Bundle", "type": "transaction-response", "entry": entries})

    def _answer(self, code: int, payload: dict) -> None:  # type: ignore[type-arg]
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def test_fhir_500_then_201_is_delivered_once_with_the_bearer_token(ct_files, ct_result, prepare) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyFhir)
    FlakyFhir.posts, FlakyFhir.auth = [], []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/fhir"
    fhir = FhirDestination(base_url=base, token="s3cret", patient_system="urn:oid:2.16.840.1.113883.3.9999")  # type: ignore[arg-type]
    try:
        db, _ = prepare(ct_files, ct_result, {"fhir": {"base_url": base, "patient_system": "urn:oid:2.16.840.1.113883.3.9999"}})
        d = dispatcher(db, fhir=fhir)
        d.run_once()
        (pending,) = db.deliveries(ct_result.study_uid, DeliveryState.PENDING)
        assert pending.last_error == "HTTP 500 | peer said: boom"  # kept for the operator in the row
        assert without_peer_text(pending.last_error) == "HTTP 500"  # what the log line carries
        run_until(d, lambda: state(db, ct_result.study_uid) == StudyState.DELIVERED)
        for _ in range(3):
            d.run_once()
    finally:
        server.shutdown()
    assert len(FlakyFhir.posts) == 2 and FlakyFhir.posts[0] == FlakyFhir.posts[1]
    assert FlakyFhir.auth == ["Bearer s3cret"] * 2
    assert json.loads(FlakyFhir.posts[1])["type"] == "transaction"


def test_retry_limit_moves_to_dead_letter_then_replay_delivers(ct_files, ct_result, prepare, tmp_path: Path) -> None:
    scp = CountingSCP("PACS")
    db, prepared = prepare(ct_files, ct_result, {"dicom": [{"ae_title": "PACS", "host": "127.0.0.1",
                                                            "port": scp.port}]})
    d = dispatcher(db)
    run_until(d, lambda: state(db, ct_result.study_uid) == StudyState.FAILED)
    study = db.study(ct_result.study_uid)
    assert study is not None and "dead letter" in (study.reason or "")
    dead = db.deliveries(ct_result.study_uid, DeliveryState.DEAD)
    assert len(dead) == len(prepared.dicom) and all(x.attempts == FAST.max_attempts for x in dead)
    config = tmp_path / "onconode.yaml"
    config.write_text(f"state: {{database: {tmp_path / 'onconode.db'}}}\n")
    listed = subprocess.run([sys.executable, "-m", "onconode", "--config", str(config), "deadletter", "list"],
                            capture_output=True, text=True, check=True)
    assert listed.stdout.count(ct_result.study_uid) == len(dead)
    replay = subprocess.run([sys.executable, "-m", "onconode", "--config", str(config), "deadletter", "replay"],
                            capture_output=True, text=True, check=True)
    assert "1 studies" in replay.stdout
    assert state(db, ct_result.study_uid) == StudyState.DELIVERING
    scp.start()
    try:
        run_until(d, lambda: state(db, ct_result.study_uid) == StudyState.DELIVERED)
    finally:
        scp.stop()
    assert sum(scp.received.values()) == len(dead) and set(scp.received.values()) == {1}


def test_default_destination_is_the_sender_when_it_is_a_known_caller_with_a_port(ct_files, ct_result,
                                                                                   prepare) -> None:
    scp = CountingSCP("ORTHANC").start()
    try:
        db, prepared = prepare(ct_files, ct_result, {}, callers=[Caller(ae_title="ORTHANC", host="127.0.0.1",
                                                                        port=scp.port)])
        run_until(dispatcher(db), lambda: state(db, ct_result.study_uid) == StudyState.DELIVERED)
    finally:
        scp.stop()
    assert len(scp.received) == len(prepared.dicom)


def test_no_destination_at_all_ends_delivered_with_the_reason(ct_files, ct_result, prepare) -> None:
    db, _ = prepare(ct_files, ct_result, {}, callers=[Caller(ae_title="ORTHANC")])  # no port: not a destination
    run_until(dispatcher(db), lambda: state(db, ct_result.study_uid) == StudyState.DELIVERED)
    study = db.study(ct_result.study_uid)
    assert study is not None and study.reason == "no destination configured"


class QuotingFhir(FlakyFhir):
    """Refuses every bundle with an OperationOutcome that quotes the patient, as some servers do."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(422, {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "processing", "diagnostics": "Patient DOE^JANE (MRN 4711) is merged"}]})


def test_a_peer_quoting_the_patient_stays_in_the_delivery_row_only(ct_files, ct_result, prepare) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), QuotingFhir)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/fhir"
    system = "urn:oid:2.16.840.1.113883.3.9999"
    told: list[str | None] = []
    try:
        db, _ = prepare(ct_files, ct_result, {"fhir": {"base_url": base, "patient_system": system}})
        d = dispatcher(db, DeliverySettings(max_attempts=1, poll_seconds=0.05),
                       FhirDestination(base_url=base, patient_system=system))  # type: ignore[arg-type]
        d.add_outcome_listener(lambda delivery, outcome, error: told.append(error))
        run_until(d, lambda: state(db, ct_result.study_uid) == StudyState.FAILED)
    finally:
        server.shutdown()
    (dead,) = db.deliveries(ct_result.study_uid, DeliveryState.DEAD)
    assert "DOE^JANE" in (dead.last_error or "")  # the operator sees what the peer said, in the row
    study = db.study(ct_result.study_uid)
    assert study is not None and "DOE" not in (study.reason or "") and "4711" not in (study.reason or "")
    assert told and all("DOE" not in (e or "") for e in told)  # what the audit trail and metrics get
    assert all("DOE" not in (t.reason or "") for t in db.transitions(ct_result.study_uid))
