"""The studies: list, detail (history, series decisions, result, deliveries), overlays, reprocess.

Everything comes from the state database; a study's result is shown as the worker recorded it, and
a summary of an older or newer shape never makes the study unreadable.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import ValidationError

from onconode.api import schemas
from onconode.api.deps import DB, MAX_OFFSET, SettingsDep, StudyUID
from onconode.conclusion import from_dict
from onconode.state import Delivery, StateDB, Study, StudyState

log = logging.getLogger(__name__)

OVERLAY_PATTERN = r"^[A-Za-z0-9._-]+\.png$"

router = APIRouter(tags=["studies"])


@router.get("/studies", response_model=schemas.StudyPage)
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


@router.get("/studies/{study_uid}", response_model=schemas.StudyDetail)
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
        deliveries=[delivery_out(d) for d in db.deliveries(study_uid)])
    if result is not None:
        _add_result(detail, study_uid, result)
    return detail


@router.get("/studies/{study_uid}/overlays/{name}", response_class=FileResponse,
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
             status_code=status.HTTP_202_ACCEPTED,
             responses={409: {"model": schemas.ErrorOut}})
def reprocess(study_uid: StudyUID, db: DB) -> schemas.StudySummary:
    """Queue the study for analysis again (from a final or reported state)."""
    study = _study_or_404(db, study_uid)
    if not db.request_reprocess(study_uid, "reprocess requested over the API"):
        raise HTTPException(409, f"study {study_uid} is {study.state.value}; it can be reprocessed once "
                                 "nothing is working on it")
    return _summary(_study_or_404(db, study_uid), db.latest_result(study_uid))


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
                probability=c["probability"], value_name=from_dict(c).value_name, threshold=c["threshold"],
                positive=c["positive"], method=c["method"],
                model=c["algorithm"]["name"], model_version=c["algorithm"]["version"],
                device_uid=c["algorithm"]["device_uid"], slices_total=c["slices_total"],
                slices_analysed=len(c["slices"]), not_for_diagnosis=c["not_for_diagnosis"])
    except (ValidationError, KeyError, TypeError) as err:
        # An older or newer summary shape must not make the whole study unreadable.
        log.warning("event=api_result_unreadable study=%s reason=%r", study_uid, str(err)[:200])
    detail.timings_ms = {str(k): float(v) for k, v in (result.get("timings_ms") or {}).items()}
    detail.overlays = [f"studies/{study_uid}/overlays/{name}" for name in result.get("overlays", [])]


def delivery_out(d: Delivery) -> schemas.DeliveryOut:
    return schemas.DeliveryOut(id=d.id, study_uid=d.study_uid, destination=d.destination, kind=d.kind,
                               object=Path(d.path).name, object_uid=d.object_uid, state=d.state,
                               attempts=d.attempts, next_try_at=d.next_try_at, last_error=d.last_error,
                               sent_at=d.sent_at)
