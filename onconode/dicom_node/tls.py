"""TLS contexts for DICOM (PS3.15 B.1 "Basic TLS Secure Transport Connection Profile", BCP 195).

TLS 1.2 or later, peer certificates verified against the configured CA: a DICOM node that accepts
any certificate would give encryption without knowing who is sending patient data.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from onconode.config import TLSSettings


def server_context(cert: Path, key: Path, ca: Path | None, require_client_cert: bool) -> ssl.SSLContext:
    """The listener's context; with ``require_client_cert`` a caller without a CA-signed certificate fails."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca) if ca else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    return ctx


class TLSError(Exception):
    """The configured certificate, key or CA cannot be loaded; the message says which files."""


def listener_context(tls: TLSSettings) -> ssl.SSLContext | None:
    """The context the configuration asks of the listener, or None when TLS is off.

    Raises
    ------
    TLSError
        When a file is unreadable or not PEM of the right kind.
    """
    if not (tls.enabled and tls.cert and tls.key):
        return None
    try:
        return server_context(tls.cert, tls.key, tls.ca, tls.require_client_cert)
    except (ssl.SSLError, OSError) as err:
        raise TLSError(f"tls: cannot load cert {tls.cert}, key {tls.key} or ca {tls.ca}: {err}") from err


def client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """An SCU's context: verifies the peer against ``ca``, presents ``cert`` when given."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx
