"""Control and lists: :func:`cancel`, :func:`pause`, :func:`resume`, :func:`find_job`, :func:`recent_jobs`.

Taught in notebooks/04_job_lifecycle.ipynb.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import lifecycle
from .api import _api_call, _as_dict, _job_id, _local_time


def cancel(client, job):
    """Cancel a job (it stops at its next step; nothing is billed for steps not run). Returns the job.

    Taught in notebooks/04_job_lifecycle.ipynb."""
    j = _api_call("cannot cancel", client.fine_tuning.jobs.cancel, _job_id(job))
    print(f"{j.id}: {j.status}")
    return j


def pause(client, job):
    """Pause a running job; it keeps its progress until :func:`resume`. Returns the job.

    Taught in notebooks/04_job_lifecycle.ipynb."""
    j = _api_call("cannot pause", client.fine_tuning.jobs.pause, _job_id(job))
    print(f"{j.id}: {j.status}")
    return j


def resume(client, job):
    """Resume a paused job (it is queued, then continues where it stopped). Returns the job.

    Taught in notebooks/04_job_lifecycle.ipynb."""
    j = _api_call("cannot resume", client.fine_tuning.jobs.resume, _job_id(job))
    print(f"{j.id}: {j.status}")
    return j


def _job_row(job) -> dict:
    hp = _as_dict(getattr(job, "hyperparameters", None))
    method = _as_dict(getattr(job, "method", None))
    kind = method.get("type") or lifecycle.SUPERVISED
    method_hp = _as_dict(_as_dict(method.get(kind)).get("hyperparameters"))
    hp = {k: method_hp.get(k, hp.get(k)) for k in ("n_epochs", "batch_size", "learning_rate_multiplier")}
    took = (job.finished_at - job.created_at) if job.finished_at and job.created_at else None
    error = _as_dict(job.error)
    return {
        "id": job.id, "status": job.status, "method": kind, "model": job.model, "fine_tuned_model": job.fine_tuned_model,
        "created_at": _local_time(job.created_at), "finished_at": _local_time(job.finished_at),
        "minutes": None if took is None else round(took / 60, 1), "trained_tokens": job.trained_tokens,
        "suffix": getattr(job, "user_provided_suffix", None), **hp,
        "metadata": dict(job.metadata) if getattr(job, "metadata", None) else {},
        "error": error.get("message") or None,
    }


def find_job(client, metadata: dict[str, str], *, model: str | None = None):
    """The newest succeeded job with this ``metadata`` (and base ``model``, when given) whose
    fine-tuned model still exists; else a matching job still under way; else None.

    How the course's runs (``ftkit.course.triage_job``, ``ftkit.preference.tone_job``,
    ``ftkit.reinforcement.rft_job``) find a job they already ran. Taught in
    notebooks/06_preference_tuning.ipynb.
    """
    import openai

    running = None
    for job in client.fine_tuning.jobs.list(metadata=metadata, limit=100):
        if any((job.metadata or {}).get(k) != v for k, v in metadata.items()):
            continue
        if model is not None and job.model != model:
            continue
        if job.status == lifecycle.SUCCEEDED and job.fine_tuned_model:
            try:
                client.models.retrieve(job.fine_tuned_model)
            except openai.NotFoundError:
                continue  # its model was deleted: look further
            return job
        if running is None and job.status in (lifecycle.VALIDATING_FILES, lifecycle.QUEUED, lifecycle.RUNNING):
            running = job
    return running


def recent_jobs(client, limit: int = 10, *, metadata: Mapping[str, str] | None = None):
    """The newest ``limit`` fine-tuning jobs as a DataFrame (newest first): id, status, method
    (``supervised``, ``dpo`` ...), models, times, trained tokens, suffix, hyperparameters (the
    method's), metadata, error. ``metadata`` filters (the
    API's own filter).

    Taught in notebooks/04_job_lifecycle.ipynb.
    """
    import pandas as pd

    kwargs: dict[str, Any] = {"limit": min(100, max(1, limit))}
    if metadata:
        kwargs["metadata"] = dict(metadata)
    rows = []
    for job in client.fine_tuning.jobs.list(**kwargs):
        if metadata and any((job.metadata or {}).get(k) != v for k, v in metadata.items()):
            continue
        rows.append(_job_row(job))
        if len(rows) >= limit:
            break
    columns = ["id", "status", "method", "model", "fine_tuned_model", "created_at", "finished_at", "minutes",
               "trained_tokens", "suffix", "n_epochs", "batch_size", "learning_rate_multiplier", "metadata", "error"]
    return pd.DataFrame(rows, columns=columns)
