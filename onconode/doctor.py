"""``onconode doctor``: check a configuration before (or while) the node runs, in plain words.

Input: validated ``Settings`` (a configuration that does not validate is reported by the CLI
before this module runs). Output: a list of ``Finding`` (ok, warning or problem, one sentence each);
the CLI prints them and exits non-zero when any is a problem.

Checks: the models folder and the routing rules' models, the DICOM and HTTP ports (free to bind, or
answered by a running node), the storage, database, results and audit folders (writable, free space
above ``storage.min_free_mb``), the state database (reachable, its schema version) and the shared
storage marker (the storage root is this database's), the security settings, and each configured
destination (C-ECHO for DICOM peers, an HTTP request for a FHIR server). Nothing is changed: the
database is read, not migrated.
"""

from __future__ import annotations

import enum
import os
import socket
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onconode.config import Settings
from onconode.dicom_node.tls import TLSError, listener_context

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Level(enum.Enum):
    OK = "ok"
    WARNING = "warning"
    PROBLEM = "problem"


@dataclass(frozen=True)
class Finding:
    level: Level
    area: str
    message: str

    def line(self) -> str:
        mark = {Level.OK: "ok     ", Level.WARNING: "warning", Level.PROBLEM: "PROBLEM"}[self.level]
        return f"{mark}  {self.area:<12} {self.message}"


def examine(settings: Settings, reach_destinations: bool = True) -> list[Finding]:
    """Every finding about ``settings``, in the order a person would fix them."""
    findings = list(_models(settings))
    findings += _ports(settings)
    findings += _folders(settings)
    findings += _state(settings)
    findings += _security(settings)
    if reach_destinations:
        findings += _destinations(settings)
    return findings


def _models(settings: Settings) -> Iterator[Finding]:
    from onconode.models import ModelError, installed_models

    folder = settings.analysis.models
    try:
        registry, note = installed_models(folder)
    except ModelError as err:
        yield Finding(Level.PROBLEM, "models", f"{err}; the node will not start until this is fixed")
        return
    if note:
        yield Finding(Level.WARNING, "models", f"{note}; every study will end 'no applicable model'")
    for name, model in sorted(registry.items()):
        manifest = model.manifest
        yield Finding(Level.OK, "models", f"{name} {manifest.version} ({manifest.modality}) verified against its "
                                          f"manifest; accepts {manifest.accepts.summary(manifest.modality)}")
    if not settings.routing and registry:
        yield Finding(Level.OK, "routing", "no routing rules: every installed model is offered every study and "
                                           "reads the series its manifest accepts")
    for rule in settings.routing:
        if registry and rule.model not in registry:  # none installed at all: the warning above says it
            yield Finding(Level.PROBLEM, "routing", f"rule {rule.name} sends {rule.modality or 'any'} series to "
                                                    f"model {rule.model}, which is not installed in {folder}")


def _port_finding(area: str, host: str, port: int) -> Finding:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            probe = "127.0.0.1" if host in ("0.0.0.0", "") else host
            try:
                with socket.create_connection((probe, port), timeout=1):
                    return Finding(Level.WARNING, area, f"port {port} on {host} is already in use; if that is "
                                                        "this node running, all is well, otherwise stop the "
                                                        "other program or change the port")
            except OSError:
                return Finding(Level.PROBLEM, area, f"cannot listen on {host}:{port}: {err.strerror}")
    return Finding(Level.OK, area, f"{host}:{port} is free to listen on")


def _ports(settings: Settings) -> Iterator[Finding]:
    yield _port_finding("dicom port", settings.node.host, settings.node.port)
    if settings.api.enabled:
        if settings.api.port == settings.node.port and settings.api.host == settings.node.host:
            yield Finding(Level.PROBLEM, "api port", "api.port is the same as node.port")
        else:
            yield _port_finding("api port", settings.api.host, settings.api.port)


def _writable(area: str, folder: Path) -> Finding | None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-", suffix=".tmp"):
            pass
    except OSError as err:
        return Finding(Level.PROBLEM, area, f"cannot write to {folder}: {err.strerror}")
    return None


def _folders(settings: Settings) -> Iterator[Finding]:
    folders = [("storage", settings.storage.root), ("results", settings.storage.results)]
    if settings.state.url is None:
        folders.insert(1, ("database", settings.state.database.parent))
    if settings.audit.path is not None:
        folders.append(("audit", settings.audit.path.parent))
    for area, folder in folders:
        problem = _writable(area, folder)
        yield problem or Finding(Level.OK, area, f"{folder} is writable")
    try:
        st = os.statvfs(settings.storage.root)
    except OSError:
        return
    free_mb = st.f_bavail * st.f_frsize // (1024 * 1024)
    floor = settings.storage.min_free_mb
    if free_mb <= floor:
        yield Finding(Level.PROBLEM, "disk", f"{free_mb} MB free under {settings.storage.root}, not more than "
                                             f"storage.min_free_mb={floor}: every C-STORE will be refused")
    elif free_mb < 2 * floor + 1024:
        yield Finding(Level.WARNING, "disk", f"only {free_mb} MB free under {settings.storage.root} "
                                             f"(C-STORE stops at {floor} MB)")
    else:
        yield Finding(Level.OK, "disk", f"{free_mb} MB free under {settings.storage.root}")


def _state(settings: Settings) -> Iterator[Finding]:
    from onconode.state import StateError
    from onconode.state.probe import probe_state
    from onconode.state.schema import SCHEMA_VERSION
    from onconode.state.shared_storage import StorageMismatch, marker_problem, read_marker

    try:
        probe = probe_state(settings.state)
    except StateError as err:
        yield Finding(Level.PROBLEM, "state", f"cannot open the state database: {str(err).splitlines()[0]}")
        return
    if probe.version == 0:
        yield Finding(Level.OK, "state", f"{probe.where} is empty: the schema (version {SCHEMA_VERSION}) is "
                                         "created at the first start")
    elif probe.version < SCHEMA_VERSION:
        yield Finding(Level.WARNING, "state", f"{probe.where} has schema version {probe.version}: the next start "
                                              f"migrates it to {SCHEMA_VERSION} (back it up first)")
    elif probe.version > SCHEMA_VERSION:
        yield Finding(Level.PROBLEM, "state", f"{probe.where} has schema version {probe.version}, newer than this "
                                              f"OncoNode's {SCHEMA_VERSION}: run the newer OncoNode")
    else:
        yield Finding(Level.OK, "state", f"{probe.where} answers, schema version {probe.version}")
    root = settings.storage.root
    try:
        found = read_marker(root)
    except StorageMismatch as err:
        yield Finding(Level.PROBLEM, "shared", str(err))
        return
    problem = marker_problem(root, found, probe.node_id, probe.storage_set_up)
    if problem is not None:
        yield Finding(Level.PROBLEM, "shared", f"{problem}; the node will not start")
    elif found is None:
        yield Finding(Level.OK, "shared", f"storage root {root} gets its marker at the first start")
    else:
        yield Finding(Level.OK, "shared", f"storage root {root} is this database's (marker {found[:12]})")


def _security(settings: Settings) -> Iterator[Finding]:
    if not settings.callers:
        yield Finding(Level.WARNING, "callers", "callers is empty: any DICOM peer may send (demo only)")
    try:
        if listener_context(settings.tls) is not None:
            yield Finding(Level.OK, "tls", f"certificate {settings.tls.cert} and CA {settings.tls.ca} load")
    except TLSError as err:
        yield Finding(Level.PROBLEM, "tls", str(err))
    if settings.node.host not in LOOPBACK and not settings.tls.enabled:
        yield Finding(Level.WARNING, "tls", f"DICOM listens on {settings.node.host} without TLS; use it only on a "
                                            "trusted network")
    if settings.api.enabled and settings.api.host not in LOOPBACK and settings.api.token is None:
        yield Finding(Level.PROBLEM, "api", f"the API listens on {settings.api.host} without api.token: anyone "
                                            "on the network can read study states and trigger reprocessing")
    if settings.audit.path is None:
        yield Finding(Level.WARNING, "audit", "audit.path is null: no audit trail is written")


def _destinations(settings: Settings) -> Iterator[Finding]:
    destinations: Any = getattr(settings, "destinations", None)
    if destinations is None:
        yield Finding(Level.OK, "destinations", "none configured: results stay in the node")
        return
    peers = list(getattr(destinations, "dicom", None) or [])
    for peer in peers:
        yield _echo(peer.ae_title, peer.host, peer.port)
    if not peers:  # results go back to the calling AE when it is a caller with a host and a port
        for caller in settings.callers:
            port = getattr(caller, "port", None)
            if caller.host and port:
                yield _echo(caller.ae_title, caller.host, port)
    fhir = getattr(destinations, "fhir", None)
    base_url = getattr(fhir, "base_url", None) if fhir is not None else None
    if base_url:
        yield _http_reachable(str(base_url))


def _echo(ae_title: str, host: str, port: int) -> Finding:
    from onconode.dicom_node.scu import PeerAddress, SendError, echo

    where = f"{ae_title}@{host}:{port}"
    try:
        status = echo(PeerAddress(ae_title, host, port))
    except SendError as err:
        return Finding(Level.PROBLEM, "destinations", f"DICOM destination {where} does not answer: {err}")
    if status != 0:
        return Finding(Level.PROBLEM, "destinations", f"DICOM destination {where} answers C-ECHO with status "
                                                      f"0x{status:04X}")
    return Finding(Level.OK, "destinations", f"DICOM destination {where} answers C-ECHO")


def _http_reachable(base_url: str) -> Finding:
    url = base_url.rstrip("/") + "/metadata"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # the configured FHIR base URL
            code = response.status
    except urllib.error.HTTPError as err:
        code = err.code
    except (urllib.error.URLError, OSError) as err:
        return Finding(Level.PROBLEM, "destinations", f"FHIR server {base_url} cannot be reached: {err}")
    if code >= 500:
        return Finding(Level.PROBLEM, "destinations", f"FHIR server {base_url} answers HTTP {code}")
    return Finding(Level.OK, "destinations", f"FHIR server {base_url} answers (HTTP {code} for /metadata)")
