"""What the local platform does, independent of HTTP: files, fine-tuning jobs, models.

Routes (``ftkit.local.api.routes``) call these methods and serialise the results with
:mod:`ftkit.local.api.wire`. Errors are :class:`APIError` with the status, type, param and code
OpenAI would return. Chat serving lives in :mod:`ftkit.local.services.chat`, the Responses API in
:mod:`ftkit.local.services.responses`, the Batch API in :mod:`ftkit.local.services.batches`.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
from pathlib import Path
from typing import BinaryIO

from ... import lifecycle as lc
from ... import methods
from ..api.wire import (  # noqa: F401 -- the wire shapes live in .wire; kept importable from here
    ORGANIZATION,
    APIError,
    after_cursor,
    checkpoint_object,
    event_object,
    file_object,
    job_object,
    model_not_found,
    model_object,
    not_found,
    page,
)
from ..inference.weights import DEFAULT_BASE_MODEL
from ..jobs import hyperparameters, jobstate
from ..store import Store, new_id, valid_id

FILE_PURPOSES = ("fine-tune", "batch", "evals")


class Platform:
    def __init__(self, store: Store, *, max_upload_bytes: int) -> None:
        self.store = store
        self.max_upload_bytes = max_upload_bytes
        self.worker = None  # set by the app
        if self.store.get_model(DEFAULT_BASE_MODEL) is None:
            self.store.add_model(DEFAULT_BASE_MODEL, kind="base", owned_by="system", source=DEFAULT_BASE_MODEL)

    # -- files ----------------------------------------------------------------------------------

    def create_file(self, stream: BinaryIO, filename: str, purpose: str) -> dict:
        if purpose not in FILE_PURPOSES:
            raise APIError(400, f"Invalid purpose {purpose!r}: the local backend accepts {', '.join(FILE_PURPOSES)}",
                           param="purpose", code="invalid_purpose")
        file_id = new_id("file")
        path = self.store.file_path(file_id)
        digest = hashlib.sha256()
        size = 0
        try:
            with open(path, "wb") as out:
                while block := stream.read(1 << 20):
                    size += len(block)
                    if size > self.max_upload_bytes:
                        raise self.too_large()
                    digest.update(block)
                    out.write(block)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        if size == 0:
            path.unlink(missing_ok=True)
            raise APIError(400, "The uploaded file is empty", param="file", code="empty_file")
        return self.store.add_file(file_id, filename=Path(filename or "upload").name, purpose=purpose, size=size,
                                   sha256=digest.hexdigest())

    def too_large(self) -> APIError:
        mb = self.max_upload_bytes / 1e6
        return APIError(413, f"File too large: the local backend accepts uploads up to {mb:g} MB",
                        param="file", code="file_too_large")

    def get_file(self, file_id: str) -> dict:
        row = self.store.get_file(file_id) if valid_id("file", file_id) else None
        if row is None:
            raise not_found("file", file_id, "file_id")
        return row

    def list_files(self, purpose: str | None, *, order: str, after: str | None, limit: int) -> tuple[list[dict], bool]:
        rows = self.store.list_files(purpose)  # oldest first
        return after_cursor(rows[::-1] if order == "desc" else rows, after, limit)

    def file_content(self, file_id: str) -> bytes:
        self.get_file(file_id)
        return self.store.file_path(file_id).read_bytes()

    def delete_file(self, file_id: str) -> dict:
        self.get_file(file_id)
        self.store.delete_file(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    # -- fine-tuning jobs -----------------------------------------------------------------------

    def create_job(self, body: dict) -> dict:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise APIError(400, "Missing required parameter: 'model'", param="model", code="missing_required_parameter")
        start = self.find_model(model)
        if start is None:
            known = ", ".join(m["id"] for m in self.store.list_models() if m["kind"] == "base")
            raise APIError(400, f"Model {model} is not available for fine-tuning (unknown model). Base models: {known}; "
                                "a fine-tuned model (ft:...) can be fine-tuned further.",
                           param="model", code="model_not_available")
        training = self._job_file(body.get("training_file"), "training_file", required=True)
        validation = self._job_file(body.get("validation_file"), "validation_file", required=False)
        method = self._method(body)
        suffix = body.get("suffix")
        if suffix is not None and (not isinstance(suffix, str) or len(suffix) > 64 or ":" in suffix):
            raise APIError(400, "suffix must be a string of at most 64 characters without ':'", param="suffix")
        seed = body.get("seed")
        if seed is None:
            seed = secrets.randbelow(2**31)
        elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
            raise APIError(400, "seed must be an integer between 0 and 2147483647", param="seed")
        metadata = body.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict) or len(metadata) > 16
            or any(not isinstance(k, str) or len(k) > 64 or not isinstance(v, str) or len(v) > 512
                   for k, v in metadata.items())
        ):
            raise APIError(400, "metadata must map at most 16 keys (<= 64 chars) to strings (<= 512 chars)",
                           param="metadata")
        integrations = self._integrations(body.get("integrations") or [])
        job = jobstate.create(self.store, {
            "id": new_id("ftjob"), "model": model, "training_file": training, "validation_file": validation,
            "suffix": suffix, "seed": seed, "method": method, "metadata": metadata, "integrations": integrations,
        })
        self._wake()
        return job

    def _integrations(self, integrations: list) -> list:
        """The job's ``integrations`` (their shape is checked against the spec already). W&B tags
        are 1 to 64 characters (wandb refuses others when the run starts: better said now)."""
        for i, integration in enumerate(integrations):
            for j, tag in enumerate((integration.get("wandb") or {}).get("tags") or []):
                if not 1 <= len(tag) <= 64:
                    raise APIError(400, f"W&B tags are 1 to 64 characters; this one has {len(tag)}",
                                   param=f"integrations[{i}].wandb.tags[{j}]", code="invalid_value")
        return integrations

    def _method(self, body: dict) -> dict:
        """The job's ``method`` with every hyperparameter checked (missing ones ``"auto"``).

        ``method`` is the current way to choose one; a top-level ``hyperparameters`` (deprecated
        by the hosted API) still means a supervised job."""
        method = body.get("method")
        legacy = body.get("hyperparameters")
        if method is None:
            method = {"type": lc.SUPERVISED, lc.SUPERVISED: {"hyperparameters": legacy or {}}}
        if not isinstance(method, dict) or method.get("type") not in methods.names():
            kind = method.get("type") if isinstance(method, dict) else method
            raise APIError(400, f"Invalid method type {kind!r}: expected one of {', '.join(methods.names())}",
                           param="method.type", code="invalid_value")
        kind = method["type"]
        settings = method.get(kind) or {}
        if not isinstance(settings, dict):
            raise APIError(400, f"method.{kind} must be an object", param=f"method.{kind}", code="invalid_value")
        requested = settings.get("hyperparameters") or {}
        if legacy is not None and body.get("method") is not None:
            if kind != lc.SUPERVISED:
                raise APIError(400, f"Top-level hyperparameters apply to supervised jobs only; give them in "
                                    f"method.{kind}.hyperparameters", param="hyperparameters", code="invalid_value")
            requested = {**legacy, **requested} if isinstance(legacy, dict) else legacy
        where = "hyperparameters" if body.get("method") is None else f"method.{kind}.hyperparameters"
        try:
            checked = hyperparameters.check(kind, requested)
        except hyperparameters.InvalidHyperparameter as e:
            raise APIError(400, f"Invalid hyperparameter: {e}", param=f"{where}.{e.name}".rstrip("."),
                           code="invalid_hyperparameter") from None
        out = {"type": kind, kind: {**settings, "hyperparameters": checked}}
        if methods.get(kind).needs_grader:
            out[kind]["grader"] = self._grader(settings.get("grader"), kind)
        return out

    def _grader(self, grader, kind: str = lc.REINFORCEMENT) -> dict:
        """A reinforcement job's grader, checked as the graders endpoint checks it (model graders
        may name any model this server serves)."""
        from ... import graders

        if grader is None:
            raise APIError(400, f"Missing required parameter: 'method.{kind}.grader'",
                           param=f"method.{kind}.grader", code="missing_required_parameter")
        try:
            return graders.validate_grader(grader, models=[m["id"] for m in self.list_models()])
        except graders.GraderError as e:
            raise APIError(400, f"Invalid grader: {e.message}", param=f"method.{kind}.{e.param or 'grader'}",
                           code=e.code or "invalid_grader") from None

    def _job_file(self, file_id, param: str, *, required: bool) -> str | None:
        if file_id is None:
            if required:
                raise APIError(400, f"Missing required parameter: '{param}'", param=param, code="missing_required_parameter")
            return None
        row = self.store.get_file(file_id) if isinstance(file_id, str) and valid_id("file", file_id) else None
        if row is None:
            raise APIError(400, f"invalid {param}: no such file {file_id}", param=param, code=f"invalid_{param}")
        if row["purpose"] != "fine-tune":
            raise APIError(400, f"File {file_id} has purpose '{row['purpose']}'; fine-tuning needs purpose 'fine-tune'",
                           param=param, code=f"invalid_{param}")
        return file_id

    def get_job(self, job_id: str) -> dict:
        row = self.store.get_job(job_id) if valid_id("ftjob", job_id) else None
        if row is None:
            raise not_found("fine-tuning job", job_id, "fine_tuning_job_id")
        return row

    def list_jobs(self, *, after: str | None, limit: int, metadata: dict[str, str] | None) -> tuple[list[dict], bool]:
        """Newest first; ``metadata``: the pairs a job's metadata must have, or ``None`` for jobs without metadata."""
        jobs = self.store.list_jobs()  # newest first
        if metadata is None:
            jobs = [j for j in jobs if not j["metadata"]]
        elif metadata:
            jobs = [j for j in jobs if all((j["metadata"] or {}).get(k) == v for k, v in metadata.items())]
        return after_cursor(jobs, after, limit)

    def cancel_job(self, job_id: str) -> dict:
        job = self.get_job(job_id)
        if not jobstate.cancel(self.store, job_id):
            raise APIError(400, f"Job {job_id} has already {job['status']}; it cannot be cancelled",
                           param="fine_tuning_job_id", code="job_not_cancellable")
        self._wake()
        return self.get_job(job_id)

    def pause_job(self, job_id: str) -> dict:
        job = self.get_job(job_id)
        if not jobstate.pause(self.store, job_id):
            raise APIError(400, f"Job {job_id} is {job['status']}; only running or queued jobs can be paused",
                           param="fine_tuning_job_id", code="job_not_pausable")
        self._wake()
        return self.get_job(job_id)

    def resume_job(self, job_id: str) -> dict:
        job = self.get_job(job_id)
        if jobstate.resume(self.store, job_id) is None:
            raise APIError(400, f"Job {job_id} is {job['status']}; only paused jobs can be resumed",
                           param="fine_tuning_job_id", code="job_not_resumable")
        self._wake()
        return self.get_job(job_id)

    def list_events(self, job_id: str, *, after: str | None, limit: int) -> tuple[list[dict], bool]:
        self.get_job(job_id)
        return self.store.list_events(job_id, after=after, limit=limit)

    def list_checkpoints(self, job_id: str, *, after: str | None, limit: int) -> tuple[list[dict], bool]:
        self.get_job(job_id)
        return after_cursor(self.store.list_checkpoints(job_id), after, limit)

    def _wake(self) -> None:
        if self.worker is not None:
            self.worker.wake()

    # -- models ---------------------------------------------------------------------------------

    def list_models(self) -> list[dict]:
        return [m for m in self.store.list_models() if m["kind"] in ("base", "fine-tuned")]

    def find_model(self, model_id: str) -> dict | None:
        """The one model lookup (chat, responses, batches, jobs): the row, or None."""
        return self.store.get_model(model_id) if isinstance(model_id, str) else None

    def get_model(self, model_id: str) -> dict:
        """:meth:`find_model`, or the hosted API's 404 for a model it does not serve."""
        row = self.find_model(model_id)
        if row is None:
            raise model_not_found(model_id)
        return row

    def delete_model(self, model_id: str) -> dict:
        row = self.get_model(model_id)
        if row["kind"] == "base":
            raise APIError(403, f"Base model {model_id} cannot be deleted; only fine-tuned models can",
                           param="model", code="model_not_deletable")
        self.store.delete_model(model_id)
        if row["kind"] == "fine-tuned" and row.get("adapter_path"):
            shutil.rmtree(row["adapter_path"], ignore_errors=True)
        return {"id": model_id, "object": "model", "deleted": True}

    def register_base_model(self, name: str, source: str) -> dict:
        """Add a base model from a Hugging Face directory or a GGUF file (used by the CLI)."""
        path = Path(source).expanduser().resolve()
        if not (path.is_file() and path.suffix == ".gguf") and not (path / "config.json").is_file():
            raise APIError(400, f"{source} is neither a .gguf file nor a Hugging Face model directory")
        return self.store.add_model(name, kind="base", owned_by="system", source=str(path))
