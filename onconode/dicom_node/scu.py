"""C-STORE, C-ECHO and a study-count C-FIND as a client: ``onconode send`` and ``onconode echo``,
the dispatcher, and the assembler asking a caller how many instances a study holds.

Files are sent as stored: each file's own transfer syntax is proposed, and pynetdicom sends the
file's data set bytes unchanged (``runtime.configure`` sets its switch for that where the process
starts), so the receiver gets exactly what is on disk. Nagle's algorithm
is switched off on the socket: pynetdicom leaves it on, and against DCMTK peers that costs ~40 ms
per instance (PEERS.md, TCP_NODELAY).
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from onconode.dicom_node.sop_classes import VERIFICATION
from onconode.folders import files_under
from onconode.values import check_ae_title

_PEER = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>\[[0-9a-fA-F:]+\]|[^:@\s]+):(?P<port>\d{1,5})$")
_MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are odd numbers 1..255


class SendError(RuntimeError):
    """The peer could not be reached or refused the association."""


@dataclass(frozen=True)
class PeerAddress:
    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> PeerAddress:
        """Parse ``AE@HOST:PORT``.

        Raises
        ------
        ValueError
            When the text is not of that form or the AE title or port is invalid.
        """
        match = _PEER.match(text.strip())
        if not match:
            raise ValueError(f"peer {text!r}: expected AE@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242")
        reason = check_ae_title(match["ae"])
        if reason:
            raise ValueError(f"peer {text!r}: AE title {reason}")
        port = int(match["port"])
        if not 1 <= port <= 65535:
            raise ValueError(f"peer {text!r}: port must be 1-65535")
        return cls(match["ae"], match["host"].strip("[]"), port)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class DicomFile:
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str


@dataclass
class SendReport:
    sent: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (file, status or "no response")
    skipped: list[Path] = field(default_factory=list)  # not DICOM Part 10 files

    @property
    def all_succeeded(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        lines = [f"sent {self.sent}, failed {len(self.failed)}, skipped {len(self.skipped)} (not DICOM)"]
        lines += [f"  failed ({why}) {path}" for path, why in self.failed]
        return "\n".join(lines)


UNREADABLE = (InvalidDicomError, AttributeError, OSError, ValueError)


def read_dicom_file(path: Path) -> DicomFile:
    """What to propose for sending ``path``, from its File Meta Information.

    Raises
    ------
    InvalidDicomError, AttributeError, OSError, ValueError
        (``UNREADABLE``) when the file is not a readable Part 10 file.
    """
    meta = read_file_meta_info(path)
    return DicomFile(path, str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID),
                     str(meta.TransferSyntaxUID))


def find_dicom_files(paths: Iterable[Path]) -> tuple[list[DicomFile], list[Path]]:
    """Every Part 10 file under ``paths`` (``folders.files_under``), and the files that are not."""
    found: list[DicomFile] = []
    skipped: list[Path] = []
    try:
        for path in files_under(paths):
            try:
                found.append(read_dicom_file(path))
            except UNREADABLE:
                skipped.append(path)
    except FileNotFoundError as err:
        raise SendError(str(err)) from err
    return found, skipped


def contexts_for(files: Iterable[DicomFile]) -> list[PresentationContext]:
    """One presentation context per (SOP class, transfer syntax), so each file goes as stored."""
    return [build_context(sop, [ts]) for sop, ts in sorted({(f.sop_class_uid, f.transfer_syntax) for f in files})]


def store_failure(response: Dataset) -> str | None:
    """Why a C-STORE response means "not stored", or None: Success and Warning (B000-BFFF) are stored."""
    if "Status" not in response:
        return "no response"
    if response.Status == 0x0000 or 0xB000 <= response.Status <= 0xBFFF:
        return None
    return f"status 0x{response.Status:04X}"


def associate(ae: AE, peer: PeerAddress, tls: ssl.SSLContext | None) -> Association:
    tls_args = (tls, peer.host) if tls is not None else None
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=tls_args)
    if not assoc.is_established:
        why = "was rejected" if assoc.is_rejected else "failed (connection refused, aborted or timed out)"
        raise SendError(f"association with {peer} {why}")
    sock = assoc.dul.socket.socket if assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return assoc


def echo(peer: PeerAddress, calling_ae: str = "ONCONODE-SCU", tls: ssl.SSLContext | None = None) -> int:
    """C-ECHO ``peer``; returns the status.

    Raises
    ------
    SendError
        When the association fails or the peer does not answer.
    """
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(VERIFICATION)
    assoc = associate(ae, peer, tls)
    try:
        response = assoc.send_c_echo()
    finally:
        assoc.release()
    if "Status" not in response:
        raise SendError(f"no C-ECHO response from {peer}")
    return int(response.Status)


def send_paths(paths: Iterable[Path], peer: PeerAddress, calling_ae: str = "ONCONODE-SCU",
               tls: ssl.SSLContext | None = None) -> SendReport:
    """C-STORE every DICOM file under ``paths`` to ``peer`` in as few associations as contexts allow.

    Raises
    ------
    SendError
        When a path does not exist or an association fails (files sent before that stay sent).
    """
    files, skipped = find_dicom_files(paths)
    report = SendReport(skipped=skipped)
    for batch in _batches_by_context(files):
        report = _send_batch(batch, peer, calling_ae, tls, report)
    return report


def _batches_by_context(files: list[DicomFile]) -> Iterator[list[DicomFile]]:
    """Split the files so that no association needs more than 128 presentation contexts."""
    batch: list[DicomFile] = []
    contexts: set[tuple[str, str]] = set()
    for f in files:
        key = (f.sop_class_uid, f.transfer_syntax)
        if key not in contexts and len(contexts) == _MAX_CONTEXTS:
            yield batch
            batch, contexts = [], set()
        contexts.add(key)
        batch.append(f)
    if batch:
        yield batch


def _send_batch(batch: list[DicomFile], peer: PeerAddress, calling_ae: str, tls: ssl.SSLContext | None,
                report: SendReport) -> SendReport:
    ae = AE(ae_title=calling_ae)
    ae.requested_contexts = contexts_for(batch)
    assoc = associate(ae, peer, tls)
    try:
        for f in batch:
            failure = store_failure(assoc.send_c_store(f.path))
            if failure is None:
                report.sent += 1
            else:
                report.failed.append((f.path, failure))
            if not assoc.is_established:
                raise SendError(f"association with {peer} ended after {report.sent} instances")
    finally:
        if assoc.is_established:
            assoc.release()
    return report


def study_instance_count(peer: PeerAddress, study_uid: str, calling_ae: str = "ONCONODE-SCU",
                         timeout: float = 5.0, tls: ssl.SSLContext | None = None) -> int | None:
    """How many instances ``peer`` holds of the study: a Study Root C-FIND at STUDY level for
    NumberOfStudyRelatedInstances. None when the peer has no such study or does not say.

    Raises
    ------
    SendError
        When the association fails, the peer answers with a failure, or nothing comes in ``timeout``.
    """
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    query.NumberOfStudyRelatedInstances = None
    assoc = associate(ae, peer, tls)
    counts: list[int] = []
    try:
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            if "Status" not in status:
                raise SendError(f"no C-FIND response from {peer}")
            code = int(status.Status)
            if code in (0xFF00, 0xFF01):
                value = identifier.get("NumberOfStudyRelatedInstances") if identifier is not None else None
                if value not in (None, ""):
                    counts.append(int(value))
            elif code != 0x0000:
                raise SendError(f"C-FIND to {peer} failed with status 0x{code:04X}")
    except (TypeError, ValueError) as err:
        raise SendError(f"C-FIND to {peer}: unreadable NumberOfStudyRelatedInstances") from err
    finally:
        if assoc.is_established:
            assoc.release()
    return counts[0] if len(counts) == 1 else None
