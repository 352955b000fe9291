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
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from onconode.api import schemas, security
from onconode.api.metrics import CONTENT_TYPE, NodeMetrics
from onconode.config import Settings
from onconode.models import ModelError, RegisteredModel, load_registry
from onconode.state import Delivery, DeliveryState, StateDB, StateError, Study, StudyState, open_state

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
UID_PATTERN = r"^[0-2](\.(0|[1-9][0-9]*))*$"  # PS3.5 9.1, at most 64 characters
OVERLAY_PATTERN = r"^[A-Za-z0-9._-]+\.png$"
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


# --- dependencies ---------------------------------------------------------------------------

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
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": schemas.ErrorOut}, 404: {"model": schemas.ErrorOut}, 422: {"model": schemas.ErrorOut}}


# --- the application ------------------------------------------------------------------------

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
    app.include_router(_probes())
    app.include_router(_routes(), dependencies=[Depends(require_token), Depends(security.refuse_cross_site_writes)],
                       responses=_ERRORS)
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


def _probes() -> Any:
    from fastapi import APIRouter

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

    return router


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


def _routes() -> Any:
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/studies", response_model=schemas.StudyPage, tags=["studies"])
    def list_studies(db: DB, state: Annotated[list[StudyState] | None, Query()] = None,
                     since: Annotated[datetime | None, Query(description="last instance at or after")] = None,
                     until: Annotated[datetime | None, Query(description="last instance before")] = None,
                     limit: Annotated[int, Query(ge=1, le=500)] = 50,
                     offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> schemas.StudyPage:
        """Studies, newest first; filter by state (repeatable) and by the time of the last instance."""
        rows, total = db.list_studies(state, _epoch("since", since), _epoch("until", until), limit, offset)
        results = db.latest_results(s.study_uid for s in rows)
        items = [_summary(s, results.get(s.study_uid)) for s in rows]
        return schemas.StudyPage(total=total, limit=limit, offset=offset, items=items)

    @router.get("/studies/{study_uid}", response_model=schemas.StudyDetail, tags=["studies"])
    def study_detail(study_uid: StudyUID, db: DB) -> schemas.StudyDetail:
        """One study: state history, series received and chosen (and why), result, timings, deliveries."""
        study = _study_or_404(db, study_uid)
        result = db.latest_result(study_uid)
        summary = _summary(study, result)
        detail = schemas.StudyDetail(
            **summary.model_dump(),
            transitions=[schemas.TransitionOut(at=t.at, from_state=t.from_state, to_state=t.to_state,
                                               reason=t.reason) for t in db.transitions(study_uid)],
            series=[schemas.SeriesOut(series_uid=s.series_uid, modality=s.modality, instances=s.instances)
                    for s in db.series_counts(study_uid)],
            deliveries=[_delivery(d) for d in db.deliveries(study_uid)])
        if result is not None:
            _add_result(detail, study_uid, result)
        return detail

    @router.get("/studies/{study_uid}/overlays/{name}", tags=["studies"], response_class=FileResponse,
                responses={200: {"content": {"image/png": {}}}})
    def overlay(study_uid: StudyUID, name: Annotated[str, PathParam(pattern=OVERLAY_PATTERN, max_length=200)],
                db: DB, settings: SettingsDep) -> FileResponse:
        """An overlay PNG (key slice with its Grad-CAM heat map) of the study's newest result."""
        _study_or_404(db, study_uid)
        result = db.latest_result(study_uid) or {}
        if name not in result.get("overlays", []):
            raise HTTPException(404, f"study {study_uid} has no overlay {name}")
        path = settings.storage.results / study_uid / name
        if not path.is_file():
            raise HTTPException(404, f"overlay {name} of study {study_uid} is missing on disk")
        return FileResponse(path, media_type="image/png")

    @router.post("/studies/{study_uid}/reprocess", response_model=schemas.StudySummary,
                 status_code=status.HTTP_202_ACCEPTED, tags=["studies"],
                 responses={409: {"model": schemas.ErrorOut}})
    def reprocess(study_uid: StudyUID, db: DB) -> schemas.StudySummary:
        """Queue the study for analysis again (from a final or reported state)."""
        study = _study_or_404(db, study_uid)
        if not db.request_reprocess(study_uid, "reprocess requested over the API"):
            raise HTTPException(409, f"study {study_uid} is {study.state.value}; it can be reprocessed once "
                                     "nothing is working on it")
        return _summary(_study_or_404(db, study_uid), db.latest_result(study_uid))

    @router.get("/deadletter", response_model=list[schemas.DeliveryOut], tags=["delivery"])
    def dead_letter(db: DB, limit: Annotated[int, Query(ge=1, le=500)] = 100,
                    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> list[schemas.DeliveryOut]:
        """Deliveries that exhausted their attempts, oldest first."""
        return [_delivery(d) for d in db.deliveries(state=DeliveryState.DEAD)[offset:offset + limit]]

    @router.post("/deadletter/{delivery_id}/replay", response_model=schemas.DeliveryOut,
                 status_code=status.HTTP_202_ACCEPTED, tags=["delivery"])
    def replay(delivery_id: Annotated[int, PathParam(ge=1)], db: DB) -> schemas.DeliveryOut:
        """Give a dead delivery a fresh set of attempts; the node sends it on its next pass."""
        dead = next((d for d in db.deliveries(state=DeliveryState.DEAD) if d.id == delivery_id), None)
        if dead is None:
            raise HTTPException(404, f"no dead letter with id {delivery_id}")
        db.replay_dead([delivery_id])
        now = next((d for d in db.deliveries(dead.study_uid) if d.id == delivery_id), dead)
        return _delivery(now)

    @router.get("/models", response_model=schemas.Models, tags=["models"])
    def models(runtime: RuntimeDep) -> schemas.Models:
        """The verified models this node runs."""
        out = []
        for model in sorted(runtime.models.values(), key=lambda m: m.manifest.name):
            m = model.manifest
            out.append(schemas.ModelOut(name=m.name, version=m.version, modality=m.modality, file=m.file,
                                        sha256=m.sha256, labels=[label.name for label in m.labels],
                                        positive_labels=list(m.decision.positive_labels),
                                        threshold=m.decision.threshold,
                                        finding=schemas.FindingOut(**m.finding.model_dump()),
                                        accepts=m.accepts.summary(m.modality)))
        return schemas.Models(models=out, note=runtime.models_note)

    @router.get("/metrics", tags=["metrics"], response_class=Response,
                responses={200: {"content": {"text/plain": {}}}})
    def metrics(runtime: RuntimeDep) -> Response:
        """Prometheus text format."""
        return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE)

    return router


def _epoch(name: str, moment: datetime | None) -> float | None:
    """Seconds since the epoch of a query date (naive: local time).

    Raises
    ------
    HTTPException
        422 for a date before 1970 or after 9999, which no instance can have been received at (and
        which the platform's time conversion cannot take).
    """
    if moment is None:
        return None
    try:
        if not 1970 <= moment.year <= 9998:
            raise ValueError(moment.year)
        return moment.timestamp()
    except (ValueError, OverflowError, OSError) as err:
        raise HTTPException(422, f"{name}: a date between 1970-01-01 and 9998-12-31") from err


def _study_or_404(db: StateDB, study_uid: str) -> Study:
    study = db.study(study_uid)
    if study is None:
        raise HTTPException(404, f"no study {study_uid}")
    return study


def _summary(study: Study, result: dict[str, Any] | None) -> schemas.StudySummary:
    result = result or {}
    conclusion = result.get("conclusion") or {}
    return schemas.StudySummary(
        study_uid=study.study_uid, state=study.state, reason=study.reason, instances=study.instances,
        first_received_at=study.first_received_at, last_received_at=study.last_received_at,
        state_changed_at=study.state_changed_at, calling_ae=study.calling_ae, model=result.get("model"),
        headline=conclusion.get("headline"), finding=(conclusion.get("finding") or {}).get("display"),
        positive=conclusion.get("positive"), positive_probability=conclusion.get("probability"),
        threshold=conclusion.get("threshold"))


def _add_result(detail: schemas.StudyDetail, study_uid: str, result: dict[str, Any]) -> None:
    """Fill the result fields from the worker's summary; fields the API does not publish are dropped."""
    try:
        detail.series_decisions = [schemas.SeriesDecisionOut.model_validate(d) for d in result.get("series", [])]
        keys = [schemas.KeySliceOut(sop_instance_uid=k["sop_instance_uid"], frame=k.get("frame"),
                                    index=k["index"], positive_probability=k["positive_probability"])
                for k in result.get("key_slices", [])]
        fields = {k: result[k] for k in schemas.ResultOut.model_fields if k in result and k != "key_slices"}
        detail.result = schemas.ResultOut(**fields, key_slices=keys)
        c = result.get("conclusion")
        if c:
            detail.conclusion = schemas.ConclusionOut(
                headline=c["headline"], verdict=c["verdict"], finding=schemas.FindingOut(**c["finding"]),
                probability=c["probability"], threshold=c["threshold"], positive=c["positive"], method=c["method"],
                model=c["algorithm"]["name"], model_version=c["algorithm"]["version"],
                device_uid=c["algorithm"]["device_uid"], slices_total=c["slices_total"],
                slices_analysed=len(c["slices"]), not_for_diagnosis=c["not_for_diagnosis"])
    except (ValidationError, KeyError, TypeError) as err:
        # An older or newer summary shape must not make the whole study unreadable.
        log.warning("event=api_result_unreadable study=%s reason=%r", study_uid, str(err)[:200])
    detail.timings_ms = {str(k): float(v) for k, v in (result.get("timings_ms") or {}).items()}
    detail.overlays = [f"studies/{study_uid}/overlays/{name}" for name in result.get("overlays", [])]


def _delivery(d: Delivery) -> schemas.DeliveryOut:
    return schemas.DeliveryOut(id=d.id, study_uid=d.study_uid, destination=d.destination, kind=d.kind,
                               object=Path(d.path).name, object_uid=d.object_uid, state=d.state,
                               attempts=d.attempts, next_try_at=d.next_try_at, last_error=d.last_error,
                               sent_at=d.sent_at)
