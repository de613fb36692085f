"""HTTP routes of the local OpenAI-compatible server (FastAPI). Thin: parse, call, serialise.

Every ``/v1`` route needs ``Authorization: Bearer <key>`` (the key in ``<home>/api_key``).
Errors use OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}``.

Fault injection, for testing clients' retry logic (off unless set): ``FTKIT_FAULTS="chat=429:3"``
makes the first 3 chat-completion requests fail with HTTP 429 (``rate_limit_exceeded``); any
status works (``chat=503:2``: server errors, ``chat=400:1``: a client error). /health shows how
many injected faults remain.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import chat
from .batches import BatchRunner, batch_object
from .control import api_key
from .engine import Engine, ModelNotFound
from .service import (
    APIError,
    Platform,
    after_cursor,
    checkpoint_object,
    event_object,
    file_object,
    job_object,
    model_object,
    page,
)
from .store import Store
from .worker import Worker


def create_app(home: str | Path, *, max_upload_mb: float = 512, start_background: bool = True,
               trainer_threads: int | None = None, log=print) -> FastAPI:
    home = Path(home)
    store = Store(home)
    key = api_key(home)
    platform = Platform(store, max_upload_bytes=int(max_upload_mb * 1e6))
    engine = Engine(store, log=log)
    worker = Worker(store, engine, log=log, trainer_threads=trainer_threads)
    batches = BatchRunner(store, engine, log=log)
    platform.worker = worker
    faults = _faults(os.environ.get("FTKIT_FAULTS", ""))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if start_background:
            engine.start()
            worker.start()
            batches.start()
        yield
        if start_background:
            worker.stop()
            batches.stop()
            engine.stop()

    app = FastAPI(title="ftkit local fine-tuning server", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, max_bytes=platform.max_upload_bytes + 1_000_000, too_large=platform.too_large)
    app.state.platform, app.state.engine, app.state.worker = platform, engine, worker

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(x) for x in first.get("loc", ())[1:]) or None
        return JSONResponse(APIError(400, f"Invalid request: {first.get('msg', 'bad request')}"
                                     + (f" ('{param}')" if param else ""), param=param).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            err = APIError(404, f"Unknown request URL: {request.method} {request.url.path}", code="unknown_url")
        elif exc.status_code == 405:
            err = APIError(405, f"Method {request.method} is not allowed for {request.url.path}", code="method_not_allowed")
        else:
            err = APIError(exc.status_code, str(exc.detail))
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):
        log(f"internal error on {request.method} {request.url.path}: {type(exc).__name__}: {exc}")
        return JSONResponse(APIError(500, f"The server had an error while processing your request: "
                                          f"{type(exc).__name__}", type="server_error").body(), status_code=500)

    @app.get("/health")
    async def health():
        # engine counters let tests and benchmarks see that concurrent requests were batched
        return {"status": "ok", "pid": os.getpid(),
                "engine": {"batches": engine.batches_run, "rows": engine.rows_run, "precision": engine.precision},
                **({"faults": {route: {"status": status, "remaining": left} for route, (status, left) in faults.items()}}
                   if faults else {})}

    def authorize(request: Request) -> None:
        header = request.headers.get("authorization", "")
        if not header:
            raise APIError(401, "You didn't provide an API key. Pass it as 'Authorization: Bearer <key>' "
                                "(ftkit.client() does this for you).", code="missing_api_key")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
            raise APIError(401, "Incorrect API key provided. The local server's key is in its home directory "
                                "(api_key).", code="invalid_api_key")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorize)])

    # -- files ----------------------------------------------------------------------------------

    @v1.post("/files")
    async def create_file(file: UploadFile = File(...), purpose: str = Form(...)):
        row = await asyncio.to_thread(platform.create_file, file.file, file.filename or "upload.jsonl", purpose)
        return file_object(row)

    @v1.get("/files")
    async def list_files(purpose: str | None = None, limit: int = 10000, order: str = "desc", after: str | None = None):
        rows = store.list_files(purpose)
        if order == "desc":
            rows.reverse()
        rows, more = after_cursor(rows, after, limit)
        return page([file_object(r) for r in rows], more, ids=True)

    @v1.get("/files/{file_id}")
    async def retrieve_file(file_id: str):
        return file_object(platform.get_file(file_id))

    @v1.delete("/files/{file_id}")
    async def delete_file(file_id: str):
        return platform.delete_file(file_id)

    @v1.get("/files/{file_id}/content")
    async def file_content(file_id: str):
        platform.get_file(file_id)
        data = await asyncio.to_thread(store.file_path(file_id).read_bytes)
        return Response(content=data, media_type="application/octet-stream")

    # -- fine-tuning jobs -----------------------------------------------------------------------

    @v1.post("/fine_tuning/jobs")
    async def create_job(request: Request):
        return job_object(platform.create_job(await _json(request)))

    @v1.get("/fine_tuning/jobs")
    async def list_jobs(request: Request, after: str | None = None, limit: int = 20):
        metadata = {k[len("metadata[") : -1]: v for k, v in request.query_params.items()
                    if k.startswith("metadata[") and k.endswith("]")}
        jobs, more = platform.list_jobs(after=after, limit=_limit(limit), metadata=metadata)
        return page([job_object(j) for j in jobs], more)

    @v1.get("/fine_tuning/jobs/{job_id}")
    async def retrieve_job(job_id: str):
        return job_object(platform.get_job(job_id))

    @v1.post("/fine_tuning/jobs/{job_id}/cancel")
    async def cancel_job(job_id: str):
        return job_object(platform.cancel_job(job_id))

    @v1.post("/fine_tuning/jobs/{job_id}/pause")
    async def pause_job(job_id: str):
        return job_object(platform.pause_job(job_id))

    @v1.post("/fine_tuning/jobs/{job_id}/resume")
    async def resume_job(job_id: str):
        return job_object(platform.resume_job(job_id))

    @v1.get("/fine_tuning/jobs/{job_id}/events")
    async def list_events(job_id: str, after: str | None = None, limit: int = 20):
        events, more = platform.list_events(job_id, after=after, limit=_limit(limit))
        return page([event_object(e) for e in events], more)

    @v1.get("/fine_tuning/jobs/{job_id}/checkpoints")
    async def list_checkpoints(job_id: str, after: str | None = None, limit: int = 10):
        rows, more = platform.list_checkpoints(job_id, after=after, limit=_limit(limit))
        return page([checkpoint_object(r) for r in rows], more, ids=True)

    # -- models ---------------------------------------------------------------------------------

    @v1.get("/models")
    async def list_models():
        return {"object": "list", "data": [model_object(m) for m in platform.list_models()]}

    @v1.get("/models/{model_id:path}")
    async def retrieve_model(model_id: str):
        return model_object(platform.get_model(model_id))

    @v1.delete("/models/{model_id:path}")
    async def delete_model(model_id: str):
        return platform.delete_model(model_id)

    # -- chat completions -----------------------------------------------------------------------

    @v1.post("/chat/completions")
    async def chat_completions(request: Request):
        _inject_fault(faults, "chat")
        body = await _json(request)
        req = chat.parse_request(body)
        platform.get_model(req.model)
        try:
            prompt = await asyncio.to_thread(engine.count_prompt, req.model, req.messages, req.tools, req.functions)
            context = await asyncio.to_thread(engine.context_length, req.model)
        except ModelNotFound:
            platform.get_model(req.model)  # raises the 404
            raise
        if prompt + req.max_tokens > context:
            raise APIError(400, f"This model's maximum context length is {context} tokens. However, you requested "
                                f"{prompt + req.max_tokens} tokens ({prompt} in the messages, {req.max_tokens} in "
                                "the completion).", param="messages", code="context_length_exceeded")
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(_stream(req, include_usage), media_type="text/event-stream")
        choices = await asyncio.wrap_future(engine.submit(req))
        return chat.response(req, choices)

    async def _stream(req, include_usage: bool):
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue = asyncio.Queue()
        with_tools = bool(req.tools or req.functions)
        if not with_tools:  # with tools, the whole text is needed to find tool calls
            req.on_delta = lambda index, text: loop.call_soon_threadsafe(deltas.put_nowait, (index, text))
        future = engine.submit(req)
        future.add_done_callback(lambda f: loop.call_soon_threadsafe(deltas.put_nowait, None))
        cid, created = chat.completion_id(), int(time.time())

        def sse(obj) -> str:
            return f"data: {json.dumps(obj)}\n\n"

        yield sse(chat.chunk(req, cid, created, [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                  "logprobs": None, "finish_reason": None} for i in range(req.n)]))
        while (item := await deltas.get()) is not None:
            index, text = item
            yield sse(chat.chunk(req, cid, created, [{"index": index, "delta": {"content": text},
                                                      "logprobs": None, "finish_reason": None}]))
        try:
            choices = future.result()
        except Exception as e:  # the stream has started: report in-band, as OpenAI does
            yield sse({"error": APIError(500, f"generation failed: {type(e).__name__}", type="server_error").body()["error"]})
            return
        full = chat.response(req, choices, cid)
        for i, choice in enumerate(full["choices"]):
            delta = {}
            if with_tools:
                message = choice["message"]
                delta = {"content": message["content"]} if message["content"] else {}
                if message.get("tool_calls"):
                    delta["tool_calls"] = [{"index": k, **call} for k, call in enumerate(message["tool_calls"])]
            yield sse(chat.chunk(req, cid, created, [{"index": i, "delta": delta, "logprobs": None,
                                                      "finish_reason": choice["finish_reason"]}]))
        if include_usage:
            yield sse(chat.chunk(req, cid, created, [], full["usage"]))
        yield "data: [DONE]\n\n"

    # -- batches --------------------------------------------------------------------------------

    @v1.post("/batches")
    async def create_batch(request: Request):
        return batch_object(batches.create(await _json(request)))

    @v1.get("/batches")
    async def list_batches(after: str | None = None, limit: int = 20):
        rows, more = batches.list(after=after, limit=_limit(limit))
        return page([batch_object(b) for b in rows], more, ids=True)

    @v1.get("/batches/{batch_id}")
    async def retrieve_batch(batch_id: str):
        return batch_object(batches.get(batch_id))

    @v1.post("/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str):
        return batch_object(batches.cancel(batch_id))

    app.include_router(v1)
    return app


def _faults(spec: str) -> dict[str, list[int]]:
    """``"chat=429:3"`` -> {"chat": [429, 3]} (route -> [HTTP status, failures left])."""
    faults = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        route, _, rest = part.partition("=")
        status, _, count = rest.partition(":")
        if route != "chat" or not status.isdigit() or not 400 <= int(status) <= 599 or not count.isdigit():
            raise ValueError(f"FTKIT_FAULTS: cannot read {part!r}; expected e.g. chat=429:3")
        faults[route] = [int(status), int(count)]
    return faults


def _inject_fault(faults: dict[str, list[int]], route: str) -> None:
    fault = faults.get(route)
    if not fault or fault[1] <= 0:
        return
    fault[1] -= 1  # routes run on the event loop, one at a time: no lock needed
    status = fault[0]
    if status == 429:
        raise APIError(429, "Rate limit reached (injected by FTKIT_FAULTS)", type="requests",
                       code="rate_limit_exceeded")
    if status >= 500:
        raise APIError(status, "The server had an error while processing your request (injected by FTKIT_FAULTS)",
                       type="server_error")
    raise APIError(status, "Injected client error (FTKIT_FAULTS)", code="injected_fault")


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over the upload cap while they stream in (413), whether or not the
    client sent a Content-Length -- nothing larger is ever spooled to disk.

    Once the cap is crossed the app's own reaction (a body-parsing error) is discarded and the
    413 in OpenAI's envelope is sent instead.
    """

    def __init__(self, app, max_bytes: int, too_large) -> None:
        self.app, self.max_bytes, self.too_large = app, max_bytes, too_large

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        err = self.too_large()
        refuse = JSONResponse(err.body(), status_code=err.status)
        declared = dict(scope.get("headers") or {}).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await refuse(scope, receive, send)
        seen, exceeded = 0, False

        async def counted():
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                exceeded = True
                raise _TooLarge
            return message

        async def guarded_send(message):
            if not exceeded:
                await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except _TooLarge:
            pass
        if exceeded:
            await refuse(scope, receive, send)


async def _json(request: Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise APIError(400, "We could not parse the JSON body of your request.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.", code="invalid_json")
    return body


def _limit(limit: int) -> int:
    if not 1 <= limit <= 100:
        raise APIError(400, "Invalid 'limit': expected an integer between 1 and 100", param="limit", code="invalid_value")
    return limit
