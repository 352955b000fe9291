"""What the node needs of its DICOM listener, whichever kind serves the port.

``scp.StorageSCP`` serves every association in the node's process; ``receivers.ReceiverPool``
accepts on the port and hands each connection to one of ``node.receiver_processes`` processes,
each running a ``StorageSCP``. Both are a ``Listener``.
"""

from __future__ import annotations

from typing import Protocol

from onconode.dicom_node.associations import AssociationListener


class Listener(Protocol):
    """A DICOM listener: started once, stopped once; tells association summaries to listeners."""

    @property
    def listening(self) -> bool:
        """Whether associations are being accepted now (the API's readiness)."""

    @property
    def port(self) -> int:
        """The TCP port it listens on (after ``start``)."""

    def start(self) -> None:
        """Listen; returns once connections are accepted."""

    def stop(self) -> None:
        """Stop listening and end the associations it serves."""

    def add_association_listener(self, listener: AssociationListener) -> None:
        """Call ``listener(summary)`` after each connection ends."""
