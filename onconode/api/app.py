"""The HTTP API: health, readiness, studies, reprocess, dead letter, models, metrics, status page.

Input: the node's ``Runtime`` (state database, metrics, models, listener) or, run on its own, the
settings, from which the lifespan opens the same resources. Output: JSON described by
``schemas.py`` (OpenAPI at ``/docs``), Prometheus text at ``/metrics`` and the static status page
at ``/status/``.

Every error is JSON with a ``detail`` and never a traceback: HTTP errors keep their status,
request validation answers 422 (a date or offset out of range included), a database failure 503
and anything else 500 (the traceback goes to the log once). With ``api.token`` set, every route
but ``/health`` and ``/ready`` (probes carry no credentials) needs ``Authorization: Bearer
<token>``. Every response carries the security headers, a foreign Host header is refused, and a
write needs JSON or a custom header (``security.py``).

The routes live by what they serve: ``probes.py`` (health, readiness), ``studies.py``,
``operations.py`` (dead letter, models, metrics); what they depend on in ``deps.py``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from onconode.api import operations, probes, security, studies
from onconode.api.deps import ERRORS, Runtime, require_token
from onconode.api.metrics import NodeMetrics
from onconode.config import Settings
from onconode.models import ModelError, RegisteredModel, load_registry
from onconode.state import StateError, open_state

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"

__all__ = ["Runtime", "create_app", "standalone_runtime"]


def _tcp_listening(host: str, port: int) -> Callable[[], bool]:
    def probe() -> bool:
        target = "127.0.0.1" if host in ("0.0.0.0", "") else host
        try:
            with socket.create_connection((target, port), timeout=1):
                return True
        except OSError:
            return False
    return probe


def standalone_runtime(settings: Settings) -> Runtime:
    """The API's resources when it runs without a node in the same process (tests, tools)."""
    db = open_state(settings.state)
    models: dict[str, RegisteredModel] = {}
    note = None
    folder = settings.analysis.models
    if not folder.is_dir():
        note = f"models folder {folder} does not exist: no model is installed"
    else:
        try:
            models = load_registry(folder)
        except ModelError as err:
            note = str(err)
        else:
            note = None if models else f"models folder {folder} holds no model manifest (*.yaml)"
    return Runtime(db, NodeMetrics(db), models, note, _tcp_listening(settings.node.host, settings.node.port))


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """The API of one node; without ``runtime`` the lifespan opens (and closes) its own resources."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            app.state.runtime = runtime
            yield
            return
        own = standalone_runtime(settings)
        app.state.runtime = own
        try:
            yield
        finally:
            own.db.close()

    app = FastAPI(title="OncoNode", version="0.1.0", lifespan=lifespan,
                  description="AI cancer classification as a DICOM node. Research use only, not for diagnosis.")
    app.state.settings = settings
    _add_error_handlers(app)
    security.install(app, settings.api)
    app.include_router(probes.router)
    guarded = [Depends(require_token), Depends(security.refuse_cross_site_writes)]
    app.include_router(studies.router, dependencies=guarded, responses=ERRORS)
    app.include_router(operations.router, dependencies=guarded, responses=ERRORS)
    app.mount("/status", StaticFiles(directory=STATIC, html=True), name="status")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/status/")

    return app


def _add_error_handlers(app: FastAPI) -> None:
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    @app.exception_handler(StateError)
    async def database_error(request: Request, exc: StateError) -> JSONResponse:
        log.error("event=api_error path=%s reason=%r", request.url.path, str(exc))
        return JSONResponse({"detail": "the state database is unavailable; try again"}, status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("event=api_error path=%s", request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error (see the node log)"}, status_code=500)
