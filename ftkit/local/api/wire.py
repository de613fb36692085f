"""The OpenAI wire shapes of the local server, in one place: the error envelope, paging, and the
serialisers that turn store rows into the objects the API returns.

Errors are :class:`APIError` (status, ``type``, ``param``, ``code`` as the hosted API sends them);
every list is one page in one style (:func:`page`, :func:`page_of`): cursor ``after``, ``limit``,
``has_more``, ``first_id`` / ``last_id``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ORGANIZATION = "org-local"


@dataclass
class APIError(Exception):
    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def not_found(kind: str, value: str, param: str | None = None) -> APIError:
    return APIError(404, f"No such {kind}: {value}", param=param, code=f"{kind.replace(' ', '_')}_not_found")


def model_not_found(model_id: str) -> APIError:
    """The hosted API's answer for a model id it does not serve (chat, responses, batches, jobs)."""
    return APIError(404, f"The model '{model_id}' does not exist or you do not have access to it.",
                    param="model", code="model_not_found")


def unsupported_parameter(param: str, why: str = "") -> APIError:
    """A parameter the local server does not implement (any value but null is refused)."""
    return APIError(400, f"Unsupported parameter: '{param}' is not supported by the local server"
                         + (f" ({why})." if why else "."), param=param, code="unsupported_parameter")


def unsupported_value(param: str, value: Any, supported: str) -> APIError:
    """A value the local server does not implement for a parameter it otherwise supports."""
    return APIError(400, f"Unsupported value: '{param}' does not support {short(value)} on the local server. "
                         f"Supported: {supported}.", param=param, code="unsupported_value")


def short(value: Any, limit: int = 60) -> str:
    """A value for an error message: JSON-like, cut to ``limit`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- paging ---------------------------------------------------------------------------------------


def after_cursor(rows: list[dict], after: str | None, limit: int) -> tuple[list[dict], bool]:
    """The page of ``rows`` that follows the row with id ``after`` (cursor pagination), and
    whether more rows follow it. An unknown cursor gives an empty page, as on the hosted API."""
    if after:
        ids = [r["id"] for r in rows]
        rows = rows[ids.index(after) + 1 :] if after in ids else []
    return rows[:limit], len(rows) > limit


def page(data: list[dict], has_more: bool) -> dict[str, Any]:
    """One page of a list, the same shape for every list the server returns.

    ``first_id`` / ``last_id`` are null on an empty page, as the hosted API sends them (the spec
    types them as strings on some lists).
    """
    return {"object": "list", "data": data, "has_more": has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


def page_of(serialise, rows_and_more: tuple[list[dict], bool]) -> dict[str, Any]:
    """A service's ``(rows, has_more)`` as one serialised page (every list route returns this)."""
    rows, has_more = rows_and_more
    return page([serialise(r) for r in rows], has_more)


# -- serialisers: rows -> the OpenAI objects ------------------------------------------------------


def file_object(row: dict) -> dict:
    return {"id": row["id"], "object": "file", "bytes": row["bytes"], "created_at": row["created_at"],
            "filename": row["filename"], "purpose": row["purpose"], "status": "processed"}


def job_object(row: dict) -> dict:
    """The hosted job object. ``hyperparameters`` (deprecated by the hosted API, kept for old
    clients) carries the method's batch size, learning-rate multiplier and epochs, whatever the
    method; ``method`` has them all (``beta`` for DPO ...), resolved once training started."""
    method = row["method"]
    hp = (method.get(method.get("type", "supervised")) or {}).get("hyperparameters", {})
    return {
        "object": "fine_tuning.job", "id": row["id"], "model": row["model"], "created_at": row["created_at"],
        "finished_at": row["finished_at"], "fine_tuned_model": row["fine_tuned_model"],
        "organization_id": ORGANIZATION, "result_files": row["result_files"] or [], "status": row["status"],
        "validation_file": row["validation_file"], "training_file": row["training_file"],
        "hyperparameters": {"n_epochs": hp.get("n_epochs", "auto"), "batch_size": hp.get("batch_size", "auto"),
                            "learning_rate_multiplier": hp.get("learning_rate_multiplier", "auto")},
        "trained_tokens": row["trained_tokens"], "error": row["error"], "user_provided_suffix": row["suffix"],
        "seed": row["seed"], "estimated_finish": row["estimated_finish"], "integrations": row["integrations"] or [],
        "metadata": row["metadata"], "method": row["method"],
    }


def event_object(row: dict) -> dict:
    return {"object": "fine_tuning.job.event", "id": row["id"], "created_at": row["created_at"],
            "level": row["level"], "message": row["message"], "data": row["data"] or {}, "type": row["type"]}


def checkpoint_object(row: dict) -> dict:
    return {"object": "fine_tuning.job.checkpoint", "id": row["id"], "created_at": row["created_at"],
            "fine_tuned_model_checkpoint": row["model_id"], "fine_tuning_job_id": row["job_id"],
            "metrics": row["metrics"], "step_number": row["step"]}


def model_object(row: dict) -> dict:
    return {"id": row["id"], "object": "model", "created": row["created_at"], "owned_by": row["owned_by"]}


def batch_object(batch: dict) -> dict:
    """The Batch object as the API returns it: optional fields that are not set are left out."""
    return {k: v for k, v in batch.items() if v is not None}


def deleted_object(object_id: str, kind: str) -> dict:
    return {"id": object_id, "object": kind, "deleted": True}
