"""Examples and configurations: test sets as example dicts, the prompt and reference of each, the
Structured Outputs schema of a labelled answer, and :class:`Config` (a model and how it is prompted).

Taught in notebooks/05_evaluation.ipynb.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


def load_examples(source, *, ids: Sequence | None = None) -> list[dict]:
    """Chat examples as a list of dicts, each with an ``id``.

    ``source`` is a JSONL path or an iterable of example dicts. Ids come from ``ids`` (same
    order), else from each example's own ``id`` key, else its position. Taught in
    notebooks/05_evaluation.ipynb.
    """
    from ..data import read_jsonl

    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        source = read_jsonl(Path(source))
    examples = [dict(ex) for ex in source]
    if ids is not None:
        ids = list(ids)
        if len(ids) != len(examples):
            raise ValueError(f"{len(ids)} ids for {len(examples)} examples")
        for ex, i in zip(examples, ids):
            ex["id"] = i
    for n, ex in enumerate(examples):
        ex.setdefault("id", n)
    seen = set()
    for ex in examples:
        if ex["id"] in seen:
            raise ValueError(f"duplicate example id {ex['id']!r}")
        seen.add(ex["id"])
    return examples


def _last_assistant(messages: list[dict]) -> int | None:
    return max((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"),
               default=None)


def reference_of(example: dict) -> str | None:
    """The expected answer: the content of the example's last assistant message (or None)."""
    messages = example.get("messages") or []
    last = _last_assistant(messages)
    return None if last is None else messages[last].get("content")


def prompt_messages(example: dict, *, system: str | None = None, few_shot: Sequence[dict] = ()) -> list[dict]:
    """The messages sent for ``example``: those before its last assistant message, with the
    system message replaced by ``system`` (``""`` removes it; ``None`` keeps the example's own) and
    the ``few_shot`` messages inserted after it -- the same prompt :func:`ftkit.cost.request_tokens`
    counts. Taught in notebooks/05_evaluation.ipynb."""
    messages = list(example.get("messages") or [])
    if not messages:
        raise ValueError(f"example {example.get('id')!r} has no messages")
    last = _last_assistant(messages)
    prompt = messages if last is None else messages[:last]
    if system is not None:
        prompt = [m for m in prompt if m.get("role") not in ("system", "developer")]
        head = [{"role": "system", "content": system}] if system else []
        return [*head, *few_shot, *prompt]
    if few_shot:
        at = 1 if prompt and prompt[0].get("role") in ("system", "developer") else 0
        return [*prompt[:at], *few_shot, *prompt[at:]]
    return prompt


_SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # the API's rule for json_schema.name


def label_schema(labels: dict[str, Sequence[str]], *, name: str = "answer") -> dict:
    """The ``response_format`` of Structured Outputs for an answer that is one JSON object with
    exactly the fields of ``labels`` (in that order), each one of its allowed values::

        {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": {
            "type": "object", "properties": {"category": {"type": "string", "enum": [...]}, ...},
            "required": [...every field...], "additionalProperties": False}}}

    With ``strict`` the server constrains decoding to the schema (OpenAI's Structured Outputs;
    ftkit's local engine compiles it into a grammar), so every answer is valid JSON with allowed
    labels by construction -- whether the labels are *right* is still the model's job.
    Taught in notebooks/05_evaluation.ipynb.
    """
    if not isinstance(name, str) or not _SCHEMA_NAME.match(name):
        raise ValueError(f"name must be 1-64 letters, digits, '_' or '-', got {name!r}")
    if not labels:
        raise ValueError("labels must name at least one field")
    properties = {}
    for field_name, values in labels.items():
        values = list(values)
        if not values or not all(isinstance(v, str) for v in values):
            raise ValueError(f"labels[{field_name!r}] must be a non-empty list of strings")
        properties[field_name] = {"type": "string", "enum": values}
    schema = {"type": "object", "properties": properties, "required": list(labels), "additionalProperties": False}
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


@dataclass(frozen=True)
class Config:
    """One way of answering: a model and how it is prompted.

    ``system``: replaces each example's system message (``None`` keeps it, ``""`` drops it).
    ``few_shot``: worked examples (user/assistant messages) inserted after the system message.
    ``response_format``: sent as the request's ``response_format`` (e.g. :func:`label_schema`
    for Structured Outputs); None sends none.
    ``extra``: more request parameters (``seed``, ``stop``, ``top_p`` ...).
    ``price_model``: the catalog model whose prices apply (default: the model itself, a fine-tuned
    name resolved through its base); ``fine_tuned``: price as a fine-tuned model (default: the
    model name starts with ``ft:``).

    Taught in notebooks/05_evaluation.ipynb.
    """

    name: str
    model: str
    system: str | None = None
    few_shot: tuple[dict, ...] = ()
    max_tokens: int = 40
    temperature: float = 0.0
    extra: dict = field(default_factory=dict)
    price_model: str | None = None
    fine_tuned: bool | None = None
    response_format: dict | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "few_shot", tuple(self.few_shot))
        if not self.name:
            raise ValueError("a Config needs a name")
        if self.response_format is not None and not (
                isinstance(self.response_format, dict) and isinstance(self.response_format.get("type"), str)):
            raise ValueError(f"{self.name}: response_format must be a dict with a 'type', "
                             f"got {self.response_format!r}")

    @property
    def is_fine_tuned(self) -> bool:
        return self.model.startswith("ft:") if self.fine_tuned is None else self.fine_tuned

    def messages(self, example: dict) -> list[dict]:
        return prompt_messages(example, system=self.system, few_shot=self.few_shot)

    def request(self, example: dict, **overrides) -> dict:
        """The chat-completion request body for ``example``."""
        body = {"model": self.model, "messages": self.messages(example), "max_tokens": self.max_tokens,
                "temperature": self.temperature}
        if self.response_format is not None:
            body["response_format"] = self.response_format
        body.update(self.extra)
        body.update(overrides)
        return body
