"""``/v1/completions``: the legacy text completion (a whole answer, or server-sent events with
``stream``), served by :mod:`ftkit.local.services.completions`."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from . import deps

router = APIRouter(tags=["completions"])


@router.post("/completions")
async def create_completion(body=deps.body("createCompletion"), completions=Depends(deps.completions)):
    call = await asyncio.to_thread(completions.prepare, body)
    return deps.events(completions.stream(call)) if call.stream else await completions.complete(call)
