"""The event-driven acceptor (``acceptor/fast.py``) codes C-STORE requests and responses exactly as
pynetdicom does, and serves C-STOREs on the thread that reads the association."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from io import BytesIO
from typing import Any, cast

import pytest
from pydicom import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.events import Event
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from onconode.dicom_node.acceptor import ConnectionRules, Limits, Refusal, make_server
from onconode.dicom_node.acceptor.codec import c_store_rq_command, c_store_rsp_command, p_data_tf
from onconode.dicom_node.acceptor.fast import EventDrivenAssociation, EventDrivenDUL
from onconode.dicom_node.allocator import retain_freed_buffers
from onconode.dicom_node.policy import Rejection


@pytest.mark.parametrize(("instance", "message_id", "status"), [
    ("1.2.3.4", 1, 0x0000), ("1.2.826.0.1.3680043.8.498.1", 65535, 0xA700), ("2.25.7", 7, 0xC210)])
def test_c_store_rsp_matches_pynetdicom(instance: str, message_id: int, status: int) -> None:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = instance
    primitive.Status = status
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    (pdata,) = list(message.encode_msg(1, 16384))
    ((_, pdv),) = pdata.presentation_data_value_list
    assert pdv == b"\x03" + c_store_rsp_command(CTImageStorage, instance, message_id, status)


def _request(move_originator: bool) -> C_STORE:
    request = C_STORE()
    request.MessageID = 7
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    request.Priority = 2
    if move_originator:
        request.MoveOriginatorApplicationEntityTitle = "MOVER"
        request.MoveOriginatorMessageID = 3
    request.DataSet = BytesIO(bytes(range(256)) * 300)  # 76.8 kB: several data set fragments
    return request


@pytest.mark.parametrize("move_originator", [False, True])
def test_c_store_rq_is_decoded_as_pynetdicom_decodes_it(move_originator: bool) -> None:
    message = C_STORE_RQ()
    message.primitive_to_message(_request(move_originator))
    pdatas = list(message.encode_msg(1, 16384))
    reference = DIMSEMessage()
    assert [reference.decode_msg(p) for p in pdatas][-1]
    expected = cast(C_STORE, reference.message_to_primitive())

    assert c_store_rq_command(pdatas[0].presentation_data_value_list[0][1]) is not None  # the fast path
    assoc = EventDrivenAssociation(AE(), MODE_ACCEPTOR)
    for pdata in pdatas:
        assoc.dimse.receive_primitive(pdata)
    context_id, received = assoc.dimse.msg_queue.get_nowait()
    assert assoc.dimse.msg_queue.empty() and context_id == 1
    for name in ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority",
                 "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID"):
        assert getattr(received, name) == getattr(expected, name), name
    assert isinstance(received, C_STORE)
    assert cast(BytesIO, received.DataSet).getvalue() == cast(BytesIO, expected.DataSet).getvalue()


def test_a_command_that_is_not_a_c_store_rq_is_left_to_pynetdicom() -> None:
    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = Verification
    message = C_ECHO_RQ()
    message.primitive_to_message(echo)
    (pdata,) = list(message.encode_msg(1, 16384))
    assert c_store_rq_command(pdata.presentation_data_value_list[0][1]) is None
    assoc = EventDrivenAssociation(AE(), MODE_ACCEPTOR)
    assoc.dimse.receive_primitive(pdata)
    _, received = assoc.dimse.msg_queue.get_nowait()
    assert isinstance(received, C_ECHO) and received.MessageID == 1


def test_p_data_tf_matches_pynetdicom() -> None:
    pdv = b"\x03" + c_store_rsp_command(CTImageStorage, "1.2.3.4", 9, 0x0000)
    primitive = P_DATA()
    primitive.presentation_data_value_list.append((5, pdv))
    assert p_data_tf(5, pdv) == P_DATA_TF(primitive).encode()


class _AdmitAll:
    """Connection hooks that admit every caller (``acceptor.ConnectionHooks``)."""

    def admission(self, host: str, port: int) -> Any:
        def admit(called_ae: str, calling_ae: str) -> Rejection | None:
            return None
        return admit

    def refused(self, host: str, port: int, refusal: Refusal) -> None:
        pass

    def ended_early(self, host: str, port: int, refusal: Refusal) -> None:
        pass

    def closed(self, host: str, port: int) -> None:
        pass


class _Acceptor:
    """An in-process fast acceptor made as the node makes its own (``acceptor.make_server``), with a
    test C-STORE handler in place of the node's."""

    def __init__(self, on_store: Any) -> None:
        self.threads: list[threading.Thread] = []
        self._on_store = on_store
        ae = AE(ae_title="ONCONODE")
        ae.add_supported_context(Verification)
        ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
        rules = ConnectionRules(Limits(1 << 20, 1 << 24), handshake_seconds=10, pdu_seconds=10)
        self.server = make_server(ae, rules, _AdmitAll(), [(evt.EVT_C_STORE, self._handle)], ("127.0.0.1", 0))
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handle(self, event: Event) -> int:
        self.threads.append(threading.current_thread())
        return int(self._on_store(event))


@pytest.fixture
def acceptor_factory() -> Iterator[Any]:
    made: list[_Acceptor] = []

    def make(on_store: Any) -> _Acceptor:
        made.append(_Acceptor(on_store))
        return made[-1]

    yield make
    for acceptor in made:
        acceptor.server.shutdown()


def _associate(port: int) -> Any:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.network_timeout = ae.dimse_timeout = 10
    return ae.associate("127.0.0.1", port, ae_title="ONCONODE")


def _instance() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.PatientID = "TEST"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_c_stores_are_served_on_the_dul_thread_and_answered_in_order(acceptor_factory: Any) -> None:
    acceptor = acceptor_factory(lambda event: 0xB000 if event.request.MessageID == 2 else 0x0000)
    assoc = _associate(acceptor.port)
    try:
        statuses = [int(assoc.send_c_store(_instance(), msg_id=i).Status) for i in (1, 2)]
        statuses.append(int(assoc.send_c_echo().Status))
        statuses.append(int(assoc.send_c_store(_instance(), msg_id=4).Status))
    finally:
        assoc.release()
    assert statuses == [0x0000, 0xB000, 0x0000, 0x0000]
    assert len(acceptor.threads) == 3 and all(isinstance(t, EventDrivenDUL) for t in acceptor.threads)


def test_an_abort_from_the_dul_thread_does_not_wait_for_itself(acceptor_factory: Any) -> None:
    # pynetdicom's blocking abort waits for the DUL thread to end: called on that thread (as
    # ``_serve_request`` does when a service class fails) it would hang the association forever.
    acceptor = acceptor_factory(lambda event: event.assoc._abort_blocking(True) or 0x0000)
    assoc = _associate(acceptor.port)
    assert not assoc.send_c_store(_instance())  # no response: the association was aborted
    deadline = time.monotonic() + 10  # a thread waiting on itself would never end
    (dul,) = acceptor.threads
    while (dul.is_alive() or not assoc.is_aborted) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted and not dul.is_alive()
    again = _associate(acceptor.port)
    try:
        assert int(again.send_c_echo().Status) == 0x0000
    finally:
        again.release()


def test_freed_receive_buffers_are_kept_by_glibc() -> None:
    # CI and the Docker image run on glibc, where mallopt must take the thresholds (allocator.py).
    assert retain_freed_buffers()
