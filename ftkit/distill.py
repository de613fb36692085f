"""Distillation from stored completions: a teacher's answers, kept with ``store: true`` and
``metadata``, become a chat-format training file for a student.

The hosted API's distillation flow, through the public API only (so it runs on the local server
and on OpenAI alike): page through ``client.chat.completions.list(model=..., metadata=...)``, read
each completion's input with ``client.chat.completions.messages.list(...)``, append the stored
answer, write one ``{"messages": [...]}`` line per completion, then check the file with
:func:`ftkit.validation.validate`.

Taught in notebooks/08_own_your_model.ipynb (section 8: distilling a student).
"""

from __future__ import annotations

import os
from pathlib import Path

from .data import write_jsonl
from .validation import ValidationReport, validate

_KEPT = ("role", "content", "name", "tool_calls", "tool_call_id")


def _message(message) -> dict:
    data = message.model_dump() if hasattr(message, "model_dump") else dict(message)
    return {k: v for k, v in data.items() if k in _KEPT and v is not None}


def stored_examples(client, model: str, metadata: dict[str, str] | None = None, *, page_size: int = 100) -> list[dict]:
    """One chat example per stored completion of ``model`` whose metadata has every pair of
    ``metadata``: its input messages, then its (first) stored answer."""
    examples = []
    for completion in client.chat.completions.list(model=model, metadata=metadata or None, limit=page_size):
        messages = [_message(m) for m in client.chat.completions.messages.list(completion.id, limit=page_size)]
        answer = completion.choices[0].message
        messages.append(_message(answer) | {"role": "assistant"})
        examples.append({"messages": messages})
    return examples


def distill_file(client, model: str, metadata: dict[str, str] | None, path: str | os.PathLike, *,
                 page_size: int = 100) -> tuple[Path, ValidationReport]:
    """Write the training file of ``model``'s stored completions matching ``metadata`` to ``path``
    and validate it: ``(path, report)``."""
    path = Path(path)
    write_jsonl(stored_examples(client, model, metadata, page_size=page_size), path)
    return path, validate(path)
