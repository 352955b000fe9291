"""A pynetdicom Storage SCP in the test process that counts what it receives, per SOP Instance UID."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    Comprehensive3DSRStorage,
    KeyObjectSelectionDocumentStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
    Verification,
)

from tests.support import free_port


class CountingSCP:
    """Accepts what OncoNode sends (SC, SEG, KOS, Comprehensive 3D SR); ``on_store(ds)`` may act before
    the answer (e.g. kill)."""

    def __init__(self, ae_title: str = "PACS", on_store: Callable[[Dataset], int | None] | None = None) -> None:
        self.ae_title = ae_title
        self.port = free_port()
        self.received: Counter[str] = Counter()
        self.classes: dict[str, str] = {}
        self.on_store = on_store
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        for sop in (SecondaryCaptureImageStorage, SegmentationStorage, KeyObjectSelectionDocumentStorage,
                    Comprehensive3DSRStorage, Verification):
            ae.add_supported_context(sop)
        self._ae = ae
        self._server = None

    @property
    def address(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    def _handle(self, event: evt.Event) -> int:
        ds = event.dataset
        if self.on_store is not None:
            status = self.on_store(ds)
            if status is not None:
                return status
        with self._lock:
            self.received[str(ds.SOPInstanceUID)] += 1
            self.classes[str(ds.SOPInstanceUID)] = str(ds.SOPClassUID)
        return 0x0000

    def start(self) -> CountingSCP:
        self._server = self._ae.start_server(("127.0.0.1", self.port), block=False,
                                             evt_handlers=[(evt.EVT_C_STORE, self._handle)])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
