"""What every route depends on: the node's shared resources, the settings and the bearer token.

The routes get them through FastAPI's dependencies (``DB``, ``RuntimeDep``, ``SettingsDep``), so a
test can replace one (``app.dependency_overrides``) and no route reaches for a global.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from onconode.api import schemas
from onconode.api.metrics import NodeMetrics
from onconode.config import Settings
from onconode.models import RegisteredModel
from onconode.state import StateDB

UID_PATTERN = r"^[0-2](\.(0|[1-9][0-9]*))*$"  # PS3.5 9.1, at most 64 characters
MAX_OFFSET = 2**31 - 1  # far past any page; SQLite's OFFSET overflows at 2**63
StudyUID = Annotated[str, PathParam(pattern=UID_PATTERN, max_length=64, description="StudyInstanceUID")]


@dataclass
class Runtime:
    """What the running node shares with its API; ``scp_listening`` tells whether C-STORE is served."""

    db: StateDB
    metrics: NodeMetrics
    models: Mapping[str, RegisteredModel]
    models_note: str | None
    scp_listening: Callable[[], bool]


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_db(runtime: Annotated[Runtime, Depends(get_runtime)]) -> StateDB:
    return runtime.db


_bearer = HTTPBearer(auto_error=False)


def require_token(settings: Annotated[Settings, Depends(get_settings)],
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    token = settings.api.token
    if token is None:
        return
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})


SettingsDep = Annotated[Settings, Depends(get_settings)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
DB = Annotated[StateDB, Depends(get_db)]
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": schemas.ErrorOut}, 404: {"model": schemas.ErrorOut}, 422: {"model": schemas.ErrorOut}}
