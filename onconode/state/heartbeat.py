"""A lease kept alive while its holder works: ``renew()`` every ``interval`` seconds on a thread.

The work itself (an analysis, a batch of sends) may take longer than the lease; the heartbeat keeps
the lease while the process is alive, so that only a process that died (or stalled past the lease)
loses its work to another. ``renew`` returning False means the lease is gone: the heartbeat stops
and ``lost`` says so; the holder's own last write (which checks the lease) then records nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

from onconode.events import Event, log_event
from onconode.state.records import StateError

log = logging.getLogger(__name__)


class Heartbeat:
    """``with Heartbeat(renew, interval, what=...):`` renews until the block ends."""

    def __init__(self, renew: Callable[[], bool], interval: float, what: str) -> None:
        self._renew = renew
        self._interval = interval
        self._what = what
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="onconode-heartbeat", daemon=True)
        self.lost = False

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                held = self._renew()
            except StateError as err:  # the database is away: try again next beat, the lease may hold
                log_event(log, Event.LEASE, logging.WARNING, action="renew_failed", what=self._what,
                          reason=str(err).splitlines()[0])
                continue
            if not held:
                if self._stop.is_set():  # the holder finished (and released it) while this beat ran
                    return
                self.lost = True
                log_event(log, Event.LEASE, logging.WARNING, action="lost", what=self._what)
                return
