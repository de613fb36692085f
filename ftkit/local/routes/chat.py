"""``POST /v1/chat/completions``: a whole answer, or server-sent events with ``stream``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from . import deps

router = APIRouter(tags=["chat"])


@router.post("/chat/completions", dependencies=[deps.fault("chat")])
async def create_chat_completion(body=deps.body("createChatCompletion"), chat=Depends(deps.chat)):
    call = await asyncio.to_thread(chat.prepare, body)
    return deps.events(chat.stream(call)) if call.stream else await chat.complete(call)
