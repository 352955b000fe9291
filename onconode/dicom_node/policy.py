"""Who may associate: called AE, calling AE and host, and how many associations at once.

Input: the called and calling AE titles of an A-ASSOCIATE-RQ (read from its fixed fields, before
anything else of it is decoded) and the peer's host. Output: ``None`` to go on negotiating, or a
``Rejection``: the A-ASSOCIATE-RJ parameters (PS3.8 9.3.4) and a reason that is safe to log.

The decision is taken before any presentation context is negotiated, so that a rejected peer
learns nothing about what we accept. The association limit counts associations, not connections:
a connection that has not sent its A-ASSOCIATE-RQ holds no slot (``AssociationSlots``), so silent
connections cannot lock senders out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from onconode.config import Caller


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ: result, source and diagnostic (PS3.8 9.3.4), and why, for the log."""

    result: int
    source: int
    diagnostic: int
    reason: str


# rejected-permanent, service-user, called AE title not recognized
CALLED_AE_NOT_OURS = Rejection(0x01, 0x01, 0x07, "called AE title not ours")
# rejected-permanent, service-user, calling AE title not recognized
CALLER_UNKNOWN = Rejection(0x01, 0x01, 0x03, "calling AE title and host not among the allowed callers")


def local_limit(limit: int) -> Rejection:
    """rejected-transient, service-provider (presentation), local limit exceeded."""
    return Rejection(0x02, 0x03, 0x02, f"more than {limit} associations")


@dataclass(frozen=True)
class CallerPolicy:
    """The configured callers and our AE title."""

    ae_title: str
    callers: tuple[Caller, ...]
    max_associations: int

    def refusal(self, called_ae: str, calling_ae: str, host: str) -> Rejection | None:
        """Why this caller may not associate, or ``None``; the limit is ``AssociationSlots``' job."""
        if called_ae.strip() != self.ae_title:
            return CALLED_AE_NOT_OURS
        if self.callers and not any(c.ae_title == calling_ae.strip() and c.host in (None, host)
                                    for c in self.callers):
            return CALLER_UNKNOWN
        return None


class SlotCounts(Protocol):
    """Per-process association counts: a list in one process, shared memory across receivers."""

    def __getitem__(self, index: int) -> int: ...

    def __setitem__(self, index: int, value: int) -> None: ...

    def __len__(self) -> int: ...


class AssociationSlots:
    """At most ``limit`` associations across every process that serves the node's port.

    Each process counts its own associations in its own entry of ``counts`` (shared memory when
    there are receiver processes, ``receivers.py``) and reads the others': an entry has one
    writer, so a receiver that dies takes no lock with it, and the node zeroes its entry before
    starting its replacement. Two processes taking the last slot at the same instant may both get
    it: the limit can be passed by at most one per other process, for that moment.
    """

    def __init__(self, limit: int, counts: SlotCounts, own: int = 0) -> None:
        self.limit = limit
        self._counts = counts
        self._own = own
        self._lock = threading.Lock()  # this process's entry, written by its connection threads

    def take(self) -> bool:
        """Hold one slot; ``False`` when all are held."""
        with self._lock:
            if sum(self._counts[i] for i in range(len(self._counts))) >= self.limit:
                return False
            self._counts[self._own] += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._counts[self._own] = max(0, self._counts[self._own] - 1)

    @property
    def held(self) -> int:
        """Slots held across all processes."""
        return sum(self._counts[i] for i in range(len(self._counts)))


Admission = Callable[[str, str], Rejection | None]
"""``admit(called_ae, calling_ae)`` for one connection: ``None`` admits it and holds a slot for it."""

