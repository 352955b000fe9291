"""One sender per destination kind: DICOM C-STORE and FHIR transaction POST.

Input: a destination key (as recorded in the delivery rows) and that destination's due
``Delivery`` rows, in send order.
Output: ``(delivery, outcome)`` pairs, yielded one by one as each object's answer arrives, so the
dispatcher records each success before the next object goes out (a kill between two objects
never re-sends the first).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pynetdicom import AE

from onconode.config import FhirDestination
from onconode.dicom_node.scu import (
    UNREADABLE,
    PeerAddress,
    SendError,
    associate,
    contexts_for,
    read_dicom_file,
    store_failure,
)
from onconode.state import Delivery

log = logging.getLogger(__name__)

Kind = Literal["dicom", "fhir"]
DIMSE_TIMEOUT_SECONDS = 15


@dataclass(frozen=True)
class Outcome:
    """``error`` is None on success; ``permanent`` errors go to the dead letter at once (a retry
    cannot help: the peer refused the content, not the moment)."""

    error: str | None = None
    permanent: bool = False


SENT = Outcome()


class Sender(Protocol):
    kind: Kind

    def send(self, destination: str, deliveries: Sequence[Delivery]) -> Iterator[tuple[Delivery, Outcome]]:
        ...


class DicomSender:
    """C-STORE to ``AE@HOST:PORT``, all of one destination's objects in one association."""

    kind: Kind = "dicom"

    def __init__(self, calling_ae: str) -> None:
        self.calling_ae = calling_ae

    def send(self, destination: str, deliveries: Sequence[Delivery]) -> Iterator[tuple[Delivery, Outcome]]:
        try:
            peer = PeerAddress.parse(destination)
        except ValueError as err:
            for d in deliveries:
                yield d, Outcome(f"bad destination: {err}", permanent=True)
            return
        files = {}
        for d in deliveries:
            try:
                files[d.id] = read_dicom_file(d.path)
            except UNREADABLE as err:
                yield d, Outcome(f"outbox file unreadable: {err}", permanent=True)
        ready = [d for d in deliveries if d.id in files]
        if not ready:
            return
        ae = AE(ae_title=self.calling_ae)
        # Under CPU starvation pynetdicom (3.0) can hand a C-STORE response to its reactor as an
        # "unexpected C-STORE service message" and then wait the whole DIMSE timeout; a shorter
        # timeout turns that lost answer into a quick retry (the same SOP Instance UID again, which
        # a PACS stores once).
        ae.dimse_timeout = DIMSE_TIMEOUT_SECONDS
        ae.requested_contexts = contexts_for(files.values())
        try:
            assoc = associate(ae, peer, None)
        except SendError as err:
            for d in ready:
                yield d, Outcome(str(err))
            return
        try:
            for d in ready:
                if not assoc.is_established:
                    yield d, Outcome(f"association with {peer} ended")
                    continue
                failure = store_failure(assoc.send_c_store(d.path))
                # 0xA7xx out of resources and 0xC0xx "cannot understand" may pass; retry both.
                yield d, SENT if failure is None else Outcome(f"C-STORE {failure}")
        finally:
            if assoc.is_established:
                assoc.release()


class FhirSender:
    """POST the transaction Bundle to the base URL; success only when every entry succeeded."""

    kind: Kind = "fhir"

    def __init__(self, settings: FhirDestination) -> None:
        self.settings = settings

    def send(self, destination: str, deliveries: Sequence[Delivery]) -> Iterator[tuple[Delivery, Outcome]]:
        for d in deliveries:
            yield d, self._post(destination, d)

    def _post(self, base_url: str, delivery: Delivery) -> Outcome:
        try:
            body = delivery.path.read_bytes()
        except OSError as err:
            return Outcome(f"outbox file unreadable: {err}", permanent=True)
        headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
        if self.settings.token is not None and base_url == self.settings.key:
            headers["Authorization"] = f"Bearer {self.settings.token.get_secret_value()}"
        request = urllib.request.Request(base_url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_seconds) as response:
                answer = response.read()
        except urllib.error.HTTPError as err:
            # 4xx other than timeout/too many requests: the server refuses this bundle; retrying
            # the same bytes cannot succeed.
            permanent = 400 <= err.code < 500 and err.code not in (408, 425, 429)
            return Outcome(f"HTTP {err.code}{PEER_TEXT}{_detail(err.read())}", permanent=permanent)
        except (urllib.error.URLError, OSError) as err:
            return Outcome(f"FHIR server unreachable: {getattr(err, 'reason', err)}")
        try:
            entries = json.loads(answer).get("entry", [])
        except (ValueError, AttributeError):
            return Outcome("FHIR answer is not a JSON Bundle")
        failed = [e.get("response", {}).get("status", "?") for e in entries
                  if not str(e.get("response", {}).get("status", "")).startswith("2")]
        return Outcome(f"entries failed: {failed}") if failed else SENT


# What a peer says about a refused object may quote its content (a patient identifier in an
# OperationOutcome): it is kept in the delivery row for the operator, and cut from log lines.
PEER_TEXT = " | peer said: "


def without_peer_text(error: str) -> str:
    return error.split(PEER_TEXT, 1)[0]


def _detail(body: bytes) -> str:
    """The first diagnostics of an OperationOutcome, else the start of the body."""
    try:
        issues = json.loads(body).get("issue", [])
        return "; ".join(str(i.get("diagnostics") or i.get("details", {}).get("text", "")) for i in issues)[:300]
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")
