"""``/v1/fine_tuning/jobs``: create, list, retrieve, cancel, pause, resume, events, checkpoints."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..wire import checkpoint_object, event_object, job_object, page_of
from . import deps

router = APIRouter(tags=["fine-tuning"])


@router.post("/fine_tuning/jobs")
async def create_job(body=deps.body("createFineTuningJob"), platform=Depends(deps.platform)):
    return job_object(platform.create_job(body))


@router.get("/fine_tuning/jobs")
async def list_jobs(paging=deps.paging(20), metadata=deps.metadata_filter(), platform=Depends(deps.platform)):
    return page_of(job_object, platform.list_jobs(after=paging.after, limit=paging.limit, metadata=metadata))


@router.get("/fine_tuning/jobs/{job_id}")
async def retrieve_job(job_id: str, platform=Depends(deps.platform)):
    return job_object(platform.get_job(job_id))


@router.post("/fine_tuning/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, platform=Depends(deps.platform)):
    return job_object(platform.cancel_job(job_id))


@router.post("/fine_tuning/jobs/{job_id}/pause")
async def pause_job(job_id: str, platform=Depends(deps.platform)):
    return job_object(platform.pause_job(job_id))


@router.post("/fine_tuning/jobs/{job_id}/resume")
async def resume_job(job_id: str, platform=Depends(deps.platform)):
    return job_object(platform.resume_job(job_id))


@router.get("/fine_tuning/jobs/{job_id}/events")
async def list_events(job_id: str, paging=deps.paging(20), platform=Depends(deps.platform)):
    return page_of(event_object, platform.list_events(job_id, after=paging.after, limit=paging.limit))


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
async def list_checkpoints(job_id: str, paging=deps.paging(10), platform=Depends(deps.platform)):
    return page_of(checkpoint_object, platform.list_checkpoints(job_id, after=paging.after, limit=paging.limit))
