"""``/v1/batches``: create, list, retrieve, cancel (the runner lives in ``ftkit.local.services.batches``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..wire import batch_object, page_of
from . import deps

router = APIRouter(tags=["batches"])


@router.post("/batches")
async def create_batch(body=deps.body("createBatch"), batches=Depends(deps.batches)):
    return batch_object(batches.create(body))


@router.get("/batches")
async def list_batches(paging=deps.paging(20), batches=Depends(deps.batches)):
    return page_of(batch_object, batches.list(after=paging.after, limit=paging.limit))


@router.get("/batches/{batch_id}")
async def retrieve_batch(batch_id: str, batches=Depends(deps.batches)):
    return batch_object(batches.get(batch_id))


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, batches=Depends(deps.batches)):
    return batch_object(batches.cancel(batch_id))
