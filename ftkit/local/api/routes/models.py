"""``/v1/models``: list, retrieve, delete (fine-tuned models and checkpoints)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..wire import model_object
from . import deps

router = APIRouter(tags=["models"])


@router.get("/models")
async def list_models(platform=Depends(deps.platform)):
    return {"object": "list", "data": [model_object(m) for m in platform.list_models()]}


@router.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, platform=Depends(deps.platform)):
    return model_object(platform.get_model(model_id))


@router.delete("/models/{model_id:path}")
async def delete_model(model_id: str, platform=Depends(deps.platform)):
    return platform.delete_model(model_id)
