"""``/v1/evals``: evals (create, list, retrieve, update, delete), their runs (create, list,
retrieve, cancel, delete) and the runs' output items (:mod:`ftkit.local.services.evals`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from ..wire import page_of
from . import deps

router = APIRouter(tags=["evals"])


@router.post("/evals", status_code=201)
async def create_eval(body=deps.body("createEval"), evals=Depends(deps.evals)):
    return evals.create(body)


@router.get("/evals")
async def list_evals(paging=deps.paging(20), order=deps.order("asc"),
                     order_by: str = Query("created_at", pattern="^(created_at|updated_at)$"),
                     evals=Depends(deps.evals)):
    return page_of(dict, evals.list(after=paging.after, limit=paging.limit, order=order, order_by=order_by))


@router.get("/evals/{eval_id}")
async def retrieve_eval(eval_id: str, evals=Depends(deps.evals)):
    return evals.get(eval_id)


@router.post("/evals/{eval_id}")
async def update_eval(eval_id: str, body=deps.body("updateEval"), evals=Depends(deps.evals)):
    return evals.update(eval_id, body)


@router.delete("/evals/{eval_id}")
async def delete_eval(eval_id: str, evals=Depends(deps.evals)):
    return evals.delete(eval_id)


@router.post("/evals/{eval_id}/runs", status_code=201)
async def create_eval_run(eval_id: str, body=deps.body("createEvalRun"), evals=Depends(deps.evals)):
    return evals.create_run(eval_id, body)


@router.get("/evals/{eval_id}/runs")
async def list_eval_runs(eval_id: str, paging=deps.paging(20), order=deps.order("asc"),
                         status: str | None = Query(None, pattern="^(queued|in_progress|completed|canceled|failed)$"),
                         evals=Depends(deps.evals)):
    return page_of(dict, evals.list_runs(eval_id, after=paging.after, limit=paging.limit, order=order, status=status))


@router.get("/evals/{eval_id}/runs/{run_id}")
async def retrieve_eval_run(eval_id: str, run_id: str, evals=Depends(deps.evals)):
    return evals.get_run(eval_id, run_id)


@router.post("/evals/{eval_id}/runs/{run_id}")
async def cancel_eval_run(eval_id: str, run_id: str, evals=Depends(deps.evals)):
    return evals.cancel_run(eval_id, run_id)


@router.delete("/evals/{eval_id}/runs/{run_id}")
async def delete_eval_run(eval_id: str, run_id: str, evals=Depends(deps.evals)):
    return evals.delete_run(eval_id, run_id)


@router.get("/evals/{eval_id}/runs/{run_id}/output_items")
async def list_output_items(eval_id: str, run_id: str, paging=deps.paging(20), order=deps.order("asc"),
                            status: str | None = Query(None, pattern="^(pass|fail)$"), evals=Depends(deps.evals)):
    return page_of(dict, evals.output_items(eval_id, run_id, after=paging.after, limit=paging.limit, order=order,
                                            status=status))


@router.get("/evals/{eval_id}/runs/{run_id}/output_items/{output_item_id}")
async def retrieve_output_item(eval_id: str, run_id: str, output_item_id: str, evals=Depends(deps.evals)):
    return evals.output_item(eval_id, run_id, output_item_id)
