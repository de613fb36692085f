"""``/v1/files``: upload, list, retrieve, download, delete."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from ..wire import file_object, page_of
from . import deps

router = APIRouter(tags=["files"])


@router.post("/files")
async def create_file(upload=Depends(deps.upload), platform=Depends(deps.platform)):
    file, purpose = upload
    return file_object(await asyncio.to_thread(platform.create_file, file.file, file.filename or "upload.jsonl", purpose))


@router.get("/files")
async def list_files(purpose: str | None = None, paging=deps.paging(10_000, maximum=10_000), order=deps.order(),
                     platform=Depends(deps.platform)):
    return page_of(file_object, platform.list_files(purpose, order=order, after=paging.after, limit=paging.limit))


@router.get("/files/{file_id}")
async def retrieve_file(file_id: str, platform=Depends(deps.platform)):
    return file_object(platform.get_file(file_id))


@router.delete("/files/{file_id}")
async def delete_file(file_id: str, platform=Depends(deps.platform)):
    return platform.delete_file(file_id)


@router.get("/files/{file_id}/content")
async def file_content(file_id: str, platform=Depends(deps.platform)):
    return Response(content=await asyncio.to_thread(platform.file_content, file_id), media_type="application/octet-stream")
