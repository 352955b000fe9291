"""The event-driven acceptor codes C-STORE requests and responses exactly as pynetdicom does."""

from __future__ import annotations

from io import BytesIO
from typing import cast

import pytest
from pydicom.uid import CTImageStorage
from pynetdicom import AE
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from onconode.dicom_node.reactor import EventDrivenAssociation, c_store_rq_command, c_store_rsp_command


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
