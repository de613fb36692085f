"""``/v1/chat/completions``: create (a whole answer, or server-sent events with ``stream``; kept
with ``store: true``), and the stored completions: list, retrieve, update metadata, delete,
messages (:mod:`ftkit.local.services.stored_completions`)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from ..wire import page_of
from . import deps

router = APIRouter(tags=["chat"])


@router.post("/chat/completions", dependencies=[deps.fault("chat")])
async def create_chat_completion(body=deps.body("createChatCompletion"), chat=Depends(deps.chat),
                                 stored=Depends(deps.stored)):
    keep = stored.keeper(body) if body.get("store") else None
    call = await asyncio.to_thread(chat.prepare, body)
    call.on_complete = keep
    return deps.events(chat.stream(call)) if call.stream else await chat.complete(call)


@router.get("/chat/completions")
async def list_chat_completions(model: str | None = None, metadata=deps.metadata_filter(), paging=deps.paging(20),
                                order=deps.order("asc"), stored=Depends(deps.stored)):
    return page_of(dict, stored.list(model=model, metadata=metadata, after=paging.after, limit=paging.limit,
                                     order=order))


@router.get("/chat/completions/{completion_id}")
async def retrieve_chat_completion(completion_id: str, stored=Depends(deps.stored)):
    return stored.get(completion_id)


@router.post("/chat/completions/{completion_id}")
async def update_chat_completion(completion_id: str, body=deps.body("updateChatCompletion"),
                                 stored=Depends(deps.stored)):
    return stored.update(completion_id, body.get("metadata"))


@router.delete("/chat/completions/{completion_id}")
async def delete_chat_completion(completion_id: str, stored=Depends(deps.stored)):
    return stored.delete(completion_id)


@router.get("/chat/completions/{completion_id}/messages")
async def list_chat_completion_messages(completion_id: str, paging=deps.paging(20), order=deps.order("asc"),
                                        stored=Depends(deps.stored)):
    return page_of(dict, stored.messages(completion_id, after=paging.after, limit=paging.limit, order=order))
