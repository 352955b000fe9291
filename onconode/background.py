"""Background loops (assembler, worker, dispatcher): one daemon thread each, stopped cleanly.

Each loop's ``step()`` does one unit of work and says whether there may be more right away; when
there is none the thread waits ``poll_seconds``. A database error (disk full, lock timeout) is
logged and retried on the next round instead of killing the thread: the work waits in its state.
"""

from __future__ import annotations

import logging
import threading

from onconode.state import StateError

log = logging.getLogger(__name__)


class PollingLoop:
    name = "loop"

    def __init__(self, poll_seconds: float) -> None:
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> bool:
        """Do one unit of work; return True to be called again at once."""
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"onconode-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.step()
            except StateError:
                log.exception("event=%s_error", self.name)
                busy = False
            if not busy:
                self._stop.wait(self.poll_seconds)
