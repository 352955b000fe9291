"""A bare pynetdicom C-STORE SCP that writes each data set durably (temp, fdatasync, rename, folder
fsync) and does nothing else: the reference that separates pynetdicom's own cost from OncoNode's.

Usage: python bench/bare_pynetdicom_scp.py PORT FOLDER
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]


def main() -> None:
    port, folder = int(sys.argv[1]), Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)

    def on_store(event: Event) -> int:
        name = str(event.request.AffectedSOPInstanceUID)  # type: ignore[union-attr]
        temp = folder / f".{name}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        os.write(fd, event.encoded_dataset())
        os.fdatasync(fd)
        os.close(fd)
        os.replace(temp, folder / f"{name}.dcm")
        os.fsync(dir_fd)
        return 0x0000

    def on_open(event: Event) -> None:  # same socket tuning as OncoNode
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]

    ae = AE(ae_title="BARESCP")
    ae.maximum_pdu_size = 4 * 1024 * 1024
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(Verification)
    ae.start_server(("127.0.0.1", port), evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_CONN_OPEN, on_open),
                                                        (evt.EVT_C_ECHO, lambda e: 0x0000)])


if __name__ == "__main__":
    main()
