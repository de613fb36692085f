"""Stored chat completions: ``store: true`` on ``POST /v1/chat/completions`` keeps the answer and
the messages that asked for it, with the request's ``metadata``; ``GET /v1/chat/completions``
lists them (by ``model`` and ``metadata``, paged), and each can be retrieved, have its metadata
replaced, be deleted, and list its messages -- as the hosted API did for its evals and distillation
flows (``ftkit.distill`` builds a training file from them). Kept in the store
(:meth:`ftkit.local.store.Store.save_chat_completion`), so they survive a restart.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from ..api.wire import APIError, after_cursor, deleted_object
from ..store import Store

MAX_METADATA_KEYS, MAX_KEY, MAX_VALUE = 16, 64, 512


def check_metadata(metadata, param: str = "metadata") -> dict | None:
    """The spec's ``Metadata`` limits: at most 16 string pairs, keys <= 64 and values <= 512 characters."""
    if metadata is None:
        return None
    if (not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_KEYS
            or not all(isinstance(k, str) and isinstance(v, str) and len(k) <= MAX_KEY and len(v) <= MAX_VALUE
                       for k, v in metadata.items())):
        raise APIError(400, f"Invalid '{param}': metadata maps at most {MAX_METADATA_KEYS} keys (<= {MAX_KEY} "
                            f"characters) to strings (<= {MAX_VALUE} characters).", param=param, code="invalid_value")
    return dict(metadata)


def matches(metadata: dict | None, wanted: dict[str, str] | None) -> bool:
    """A list's metadata filter: every pair of ``wanted`` present (``None``: no metadata at all)."""
    if wanted is None:
        return not metadata
    return all((metadata or {}).get(k) == v for k, v in wanted.items())


class StoredCompletions:
    def __init__(self, store: Store) -> None:
        self.store = store

    def keeper(self, body: dict) -> Callable[[dict], None]:
        """What keeps the answer to ``body`` (a ``store: true`` request): its metadata is checked
        now, before anything is generated; the answer is kept when it is complete."""
        metadata = check_metadata(body.get("metadata"))
        request = {k: v for k, v in body.items() if k not in ("stream", "stream_options", "store", "metadata")}

        def keep(completion: dict) -> None:
            self.store.save_chat_completion({"completion": {**completion, "metadata": metadata}, "request": request})

        return keep

    def _record(self, completion_id: str) -> dict:
        record = self.store.get_chat_completion(completion_id) if isinstance(completion_id, str) else None
        if record is None:
            raise APIError(404, f"Chat completion with id '{completion_id}' not found (only completions created "
                                "with store=true are kept).", param="completion_id", code="not_found")
        return record

    def get(self, completion_id: str) -> dict:
        return self._record(completion_id)["completion"]

    def request(self, completion_id: str) -> dict:
        """The request body a stored completion answered (messages, tools, sampling parameters)."""
        return copy.deepcopy(self._record(completion_id)["request"])

    def list(self, *, model: str | None, metadata: dict[str, str] | None, after: str | None, limit: int,
             order: str = "asc") -> tuple[list[dict], bool]:
        rows = [r["completion"] for r in self.store.list_chat_completions(model)
                if matches(r["completion"].get("metadata"), metadata)]
        return after_cursor(rows[::-1] if order == "desc" else rows, after, limit)

    def records(self, *, model: str | None = None, metadata: dict[str, str] | None = None,
                created_after: int | None = None, created_before: int | None = None) -> list[dict]:
        """Whole records (``completion`` and ``request``), oldest first: an eval run's source."""
        return [r for r in self.store.list_chat_completions(model)
                if matches(r["completion"].get("metadata"), metadata or {})
                and (created_after is None or r["completion"]["created"] >= created_after)
                and (created_before is None or r["completion"]["created"] <= created_before)]

    def update(self, completion_id: str, metadata) -> dict:
        """Replace the metadata (the hosted API replaces it whole; null clears it)."""
        record = self._record(completion_id)
        record["completion"]["metadata"] = check_metadata(metadata)
        self.store.save_chat_completion(record)
        return record["completion"]

    def delete(self, completion_id: str) -> dict:
        self._record(completion_id)
        self.store.delete_chat_completion(completion_id)
        return deleted_object(completion_id, "chat.completion.deleted")

    def messages(self, completion_id: str, *, after: str | None, limit: int, order: str = "asc") -> tuple[list[dict], bool]:
        """The messages the completion answered, each with an id (``<completion id>-<index>``)."""
        request = self._record(completion_id)["request"]
        rows = [message_object(f"{completion_id}-{i}", m) for i, m in enumerate(request.get("messages") or [])]
        return after_cursor(rows[::-1] if order == "desc" else rows, after, limit)


def message_object(message_id: str, message: dict) -> dict:
    """A stored input message as ``/messages`` lists it: text content as a string, text parts also
    as ``content_parts``."""
    content = message.get("content")
    parts = None
    if isinstance(content, list):
        parts = [p for p in content if isinstance(p, dict) and p.get("type") == "text"]
        content = "".join(p.get("text", "") for p in parts)
    out = {"id": message_id, "role": message.get("role"), "content": content, "refusal": message.get("refusal"),
           "name": message.get("name"), "content_parts": parts}
    for key in ("tool_calls", "tool_call_id", "function_call"):
        if message.get(key) is not None:
            out[key] = message[key]
    return out
