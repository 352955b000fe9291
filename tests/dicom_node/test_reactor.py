"""The event-driven acceptor's hand-encoded C-STORE-RSP equals what pynetdicom encodes."""

from __future__ import annotations

import pytest
from pydicom.uid import CTImageStorage
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE

from onconode.dicom_node.reactor import c_store_rsp_command


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
    ((context_id, pdv),) = pdata.presentation_data_value_list
    assert pdv == b"\x03" + c_store_rsp_command(CTImageStorage, instance, message_id, status)
