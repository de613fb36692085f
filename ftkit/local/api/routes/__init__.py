"""The HTTP routes of the local server: one router per resource, each route parse -> call ->
serialise. Shared objects come from ``app.state`` through the dependencies in :mod:`.deps`."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from . import (
    batches,
    chat,
    completions,
    deps,
    evals,
    files,
    fine_tuning,
    graders,
    models,
    responses,
)


def v1_router() -> APIRouter:
    """Every ``/v1`` route, behind the bearer-key check."""
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(deps.authorize)])
    for module in (files, fine_tuning, graders, models, chat, completions, batches, responses, evals):
        v1.include_router(module.router)
    return v1
