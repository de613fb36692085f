"""``/v1/fine_tuning/alpha/graders``: run a grader on one sample, or check a grader."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from . import deps

router = APIRouter(tags=["graders"])


@router.post("/fine_tuning/alpha/graders/run")
async def run_grader(body=deps.body("runGrader"), grading=Depends(deps.grading)):
    return await asyncio.to_thread(grading.run, body)  # python graders and judges block


@router.post("/fine_tuning/alpha/graders/validate")
async def validate_grader(body=deps.body("validateGrader"), grading=Depends(deps.grading)):
    return await asyncio.to_thread(grading.validate, body)
