"""What routes share: the objects on ``app.state`` (as FastAPI dependencies), the bearer-key
check, checked JSON bodies, paging parameters, server-sent events and fault injection."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import StreamingResponse

from ..request_check import check_body, parse_json, read_body
from ..wire import APIError, unsupported_parameter


def platform(request: Request):
    return request.app.state.platform


def store(request: Request):
    return request.app.state.store


def chat(request: Request):
    return request.app.state.chat


def completions(request: Request):
    return request.app.state.completions


def batches(request: Request):
    return request.app.state.batches


def responses(request: Request):
    return request.app.state.responses


def grading(request: Request):
    return request.app.state.grading


def stored(request: Request):
    return request.app.state.stored


def evals(request: Request):
    return request.app.state.evals


def authorize(request: Request) -> None:
    """Every /v1 route needs ``Authorization: Bearer <key>`` (the key in ``<home>/api_key``)."""
    header = request.headers.get("authorization", "")
    if not header:
        raise APIError(401, "You didn't provide an API key. Pass it as 'Authorization: Bearer <key>' "
                            "(ftkit.client() does this for you).", code="missing_api_key")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), request.app.state.key.encode()):
        raise APIError(401, "Incorrect API key provided. The local server's key is in its home directory "
                            "(api_key).", code="invalid_api_key")


def body(operation: str):
    """A dependency: the request's JSON body, bounded, parsed and checked against the spec's
    request schema for ``operation`` (see :mod:`ftkit.local.api.request_check`)."""

    async def checked(request: Request) -> dict:
        raw = await read_body(request)
        # parsing and schema checks are CPU work: off the event loop for large bodies
        if len(raw) > 64_000:
            return await asyncio.to_thread(lambda: check_body(operation, parse_json(raw)))
        return check_body(operation, parse_json(raw))

    return Depends(checked)


@dataclass
class Paging:
    after: str | None
    limit: int


def paging(default: int, maximum: int = 100):
    """A dependency: the ``after`` / ``limit`` query parameters every list takes."""

    def read(after: str | None = None, limit: int = default) -> Paging:
        if not 1 <= limit <= maximum:
            raise APIError(400, f"Invalid 'limit': expected an integer between 1 and {maximum}, got {limit}.",
                           param="limit", code="invalid_value")
        return Paging(after, limit)

    return Depends(read)


def metadata_filter():
    """A dependency: a list's ``metadata`` filter, as the spec writes it: ``metadata[k]=v`` (every
    pair must match; ``{}`` when none is given) or ``metadata=null`` (only objects without
    metadata: ``None``)."""

    def read(request: Request) -> dict[str, str] | None:
        pairs: dict[str, str] = {}
        without = False
        for key, value in request.query_params.multi_items():
            if key == "metadata":
                if value != "null":
                    raise APIError(400, "Invalid 'metadata': filter with metadata[key]=value, or metadata=null "
                                        "for objects without metadata.", param="metadata", code="invalid_value")
                without = True
            elif key.startswith("metadata["):
                name = key[len("metadata["):-1]
                if not key.endswith("]") or not name or len(name) > 64 or "[" in name or "]" in name:
                    raise APIError(400, f"Invalid metadata filter '{key[:80]}': expected metadata[key]=value with a "
                                        "key of 1 to 64 characters.", param="metadata", code="invalid_value")
                pairs[name] = value
        if without and pairs:
            raise APIError(400, "Invalid 'metadata': metadata=null (no metadata) contradicts metadata[key]=value.",
                           param="metadata", code="invalid_value")
        return None if without else pairs

    return Depends(read)


def order(default: str = "desc"):
    def read(order: str = Query(default, pattern="^(asc|desc)$")) -> str:
        return order

    return Depends(read)


async def upload(request: Request, file: UploadFile = File(...), purpose: str = Form(...)) -> tuple[UploadFile, str]:
    """The multipart fields of ``POST /v1/files``; fields the local server does not implement are refused."""
    for name in (await request.form()).keys():
        if name.startswith("expires_after"):
            raise unsupported_parameter("expires_after", "uploaded files are kept until deleted")
        if name not in ("file", "purpose"):
            raise APIError(400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
    return file, purpose


def events(stream: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(stream, media_type="text/event-stream")


def fault(route: str):
    """A dependency that fails the request while ``FTKIT_FAULTS`` has injected faults left."""

    def inject(request: Request) -> None:
        request.app.state.faults.inject(route)

    return Depends(inject)
