"""Operations: the dead letter and its replay, the installed models, Prometheus metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from fastapi import Path as PathParam
from fastapi.responses import Response

from onconode.api import schemas
from onconode.api.deps import DB, MAX_OFFSET, RuntimeDep
from onconode.api.metrics import CONTENT_TYPE
from onconode.api.studies import delivery_out
from onconode.state import DeliveryState

router = APIRouter()


@router.get("/deadletter", response_model=list[schemas.DeliveryOut], tags=["delivery"])
def dead_letter(db: DB, limit: Annotated[int, Query(ge=1, le=500)] = 100,
                offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> list[schemas.DeliveryOut]:
    """Deliveries that exhausted their attempts, oldest first."""
    return [delivery_out(d) for d in db.deliveries(state=DeliveryState.DEAD)[offset:offset + limit]]


@router.post("/deadletter/{delivery_id}/replay", response_model=schemas.DeliveryOut,
             status_code=status.HTTP_202_ACCEPTED, tags=["delivery"])
def replay(delivery_id: Annotated[int, PathParam(ge=1)], db: DB) -> schemas.DeliveryOut:
    """Give a dead delivery a fresh set of attempts; the node sends it on its next pass."""
    dead = next((d for d in db.deliveries(state=DeliveryState.DEAD) if d.id == delivery_id), None)
    if dead is None:
        raise HTTPException(404, f"no dead letter with id {delivery_id}")
    db.replay_dead([delivery_id])
    now = next((d for d in db.deliveries(dead.study_uid) if d.id == delivery_id), dead)
    return delivery_out(now)


@router.get("/models", response_model=schemas.Models, tags=["models"])
def models(runtime: RuntimeDep) -> schemas.Models:
    """The verified models this node runs."""
    out = []
    for model in sorted(runtime.models.values(), key=lambda m: m.manifest.name):
        m = model.manifest
        out.append(schemas.ModelOut(name=m.name, version=m.version, modality=m.modality, file=m.file,
                                    sha256=m.sha256, labels=[label.name for label in m.labels],
                                    positive_labels=list(m.decision.positive_labels),
                                    threshold=m.decision.threshold, verdict=m.decision.verdict,
                                    finding=schemas.FindingOut(**m.finding.model_dump()),
                                    accepts=m.accepts.summary(m.modality)))
    return schemas.Models(models=out, note=runtime.models_note)


@router.get("/metrics", tags=["metrics"], response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus text format."""
    return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE)
