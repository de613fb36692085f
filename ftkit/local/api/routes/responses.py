"""``/v1/responses``: create (whole or streamed), retrieve, delete, list input items."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from ..wire import page_of
from . import deps

router = APIRouter(tags=["responses"])


@router.post("/responses")
async def create_response(body=deps.body("createResponse"), responses=Depends(deps.responses)):
    call = await asyncio.to_thread(responses.prepare, body)
    return deps.events(responses.stream(call)) if body.get("stream") else await responses.create(call)


@router.get("/responses/{response_id}")
async def retrieve_response(response_id: str, stream: bool = False, responses=Depends(deps.responses)):
    return responses.get(response_id, stream=stream)


@router.delete("/responses/{response_id}")
async def delete_response(response_id: str, responses=Depends(deps.responses)):
    return responses.delete(response_id)


@router.get("/responses/{response_id}/input_items")
async def list_input_items(response_id: str, paging=deps.paging(20), order=deps.order(),
                           responses=Depends(deps.responses)):
    return page_of(dict, responses.input_items(response_id, after=paging.after, limit=paging.limit, order=order))
