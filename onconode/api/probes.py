"""Liveness and readiness, for an orchestrator's probes: no token, no data from the database."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from onconode.api import schemas
from onconode.api.deps import RuntimeDep, SettingsDep

router = APIRouter(tags=["probes"])


@router.get("/health", response_model=schemas.Health)
def health() -> schemas.Health:
    """Liveness: the process answers HTTP."""
    return schemas.Health()


@router.get("/ready", response_model=schemas.Ready, responses={503: {"model": schemas.Ready}})
def ready(runtime: RuntimeDep, settings: SettingsDep) -> JSONResponse:
    """Readiness: models loaded, storage writable, DICOM listener accepting connections."""
    checks = [
        schemas.Check(name="models", ok=bool(runtime.models),
                      detail=", ".join(sorted(runtime.models)) or runtime.models_note or "no model"),
        _storage_check(settings.storage.root, settings.storage.min_free_mb),
        schemas.Check(name="dicom_listener", ok=runtime.scp_listening(),
                      detail=f"{settings.node.ae_title} on port {settings.node.port}"),
    ]
    body = schemas.Ready(ready=all(c.ok for c in checks), checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if body.ready else 503)


def _storage_check(root: Path, min_free_mb: int) -> schemas.Check:
    """Writable, and above ``storage.min_free_mb``: below it every C-STORE is refused (0xA700), so a
    node that cannot take instances is not ready."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".ready-", suffix=".tmp"):
            pass
    except OSError as err:
        return schemas.Check(name="storage", ok=False, detail=f"{root} not writable: {err.strerror}")
    free_mb = _free_mb(root)
    if free_mb < min_free_mb:
        return schemas.Check(name="storage", ok=False,
                             detail=f"{root}: {free_mb} MB free, below storage.min_free_mb ({min_free_mb})")
    return schemas.Check(name="storage", ok=True, detail=f"{root} writable, {free_mb} MB free")


def _free_mb(root: Path) -> int:
    st = os.statvfs(root)
    return int(st.f_bavail * st.f_frsize // (1024 * 1024))
