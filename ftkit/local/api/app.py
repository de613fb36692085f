"""The local OpenAI-compatible server as a FastAPI app: wiring only.

:func:`create_app` builds the store, platform, engine, worker, chat / responses services and the
batch runner, puts them on ``app.state`` and includes one router per resource
(:mod:`ftkit.local.api.routes`). Every ``/v1`` route needs ``Authorization: Bearer <key>`` (the key in
``<home>/api_key``); every error leaves in OpenAI's envelope (:mod:`ftkit.local.api.middleware`);
every JSON body is checked before a handler reads it (:mod:`ftkit.local.api.request_check`).
"""

from __future__ import annotations

import os
import threading
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request

from ..control import api_key
from ..inference.engine import Engine
from ..jobs.worker import Worker
from ..services.batches import BatchRunner
from ..services.chat import ChatService
from ..services.completions import CompletionService
from ..services.evals import EvalService
from ..services.grading import GradingService
from ..services.platform import Platform
from ..services.responses import ResponsesService
from ..services.stored_completions import StoredCompletions
from ..store import Store
from . import request_check
from .middleware import BodyLimit, Faults, RequestId, install_error_handlers
from .routes import v1_router


def create_app(home: str | Path, *, max_upload_mb: float = 512, start_background: bool = True,
               trainer_threads: int | None = None, log=print, engine=None) -> FastAPI:
    """The app for the server home ``home``; ``engine`` replaces the real inference engine (tests)."""
    store = Store(Path(home))
    platform = Platform(store, max_upload_bytes=int(max_upload_mb * 1e6))
    engine = engine if engine is not None else Engine(store, log=log)
    worker = Worker(store, engine, log=log, trainer_threads=trainer_threads)
    platform.worker = worker
    chat = ChatService(engine, platform.get_model)
    batches = BatchRunner(store, chat, log=log)
    responses = ResponsesService(chat, store)
    grading = GradingService(chat, lambda: [m["id"] for m in platform.list_models()])
    evals = EvalService(store, chat, responses, grading, grading.list_models, log=log)
    background = (engine, worker, batches, evals) if start_background else ()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # the request schemas load in the background (jsonschema can take seconds to import)
        threading.Thread(target=request_check.warm_up, name="ftkit-schemas", daemon=True).start()
        for part in background:
            part.start()
        yield
        for part in reversed(background):
            part.stop()

    app = FastAPI(title="ftkit local fine-tuning server", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.store, app.state.platform, app.state.engine, app.state.worker = store, platform, engine, worker
    app.state.chat, app.state.batches, app.state.responses = chat, batches, responses
    app.state.grading, app.state.evals, app.state.stored = grading, evals, StoredCompletions(store)
    app.state.completions = CompletionService(chat)
    app.state.key, app.state.faults = api_key(Path(home)), Faults(os.environ.get("FTKIT_FAULTS", ""))
    install_error_handlers(app, log)
    app.add_middleware(BodyLimit, max_bytes=platform.max_upload_bytes + 1_000_000, too_large=platform.too_large)
    app.add_middleware(RequestId)  # added last = outermost: the 413s of BodyLimit carry it too

    @app.get("/health")
    async def health(request: Request):
        # engine counters let tests and benchmarks see that concurrent requests were batched
        faults = request.app.state.faults.health()
        return {"status": "ok", "pid": os.getpid(),
                "engine": {"batches": engine.batches_run, "rows": engine.rows_run,
                           "precision": engine.precision},
                **({"faults": faults} if faults else {})}

    app.include_router(v1_router())
    return app
