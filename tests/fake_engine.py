"""A small stand-in for ``ftkit.local.inference.engine.Engine`` that drives the chat service in fast tests.

It implements the engine's interface (``submit``, ``encode_prompt``, ``context_length``,
``check_constraint``, the streaming callbacks and logprobs) without a model: a "token" is a word
(with its trailing space), free text is a fixed sentence, and a constrained answer is the
simplest value valid for the constraint -- what the real constrained engine guarantees, made
cheaply. It records what it was asked, so tests can check what the service sent.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import Future

from ftkit.local.inference.engine import Choice, GenerationRequest, TokenLogprob
from ftkit.local.inference.render import template_messages

WORD = re.compile(r"\S+\s*|\s+")
DEFAULT_TEXT = "Hello from the fake engine, one word at a time."


class Unsupported(ValueError):
    """Like ``ftkit.local.inference.grammar.UnsupportedSchema``: a message and the path inside the schema."""

    def __init__(self, message: str, param_path) -> None:
        super().__init__(message)
        self.param_path = param_path


def example(schema: dict):
    """The simplest value valid for a (simple) JSON schema."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    if "anyOf" in schema:
        return example(schema["anyOf"][0])
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        props = schema.get("properties", {})
        return {name: example(props[name]) for name in schema.get("required", list(props))}
    if kind == "array":
        return [example(schema.get("items", {"type": "string"}))] * schema.get("minItems", 1)
    return {"string": "text", "integer": 1, "number": 1.5, "boolean": True, "null": None}[kind]


def _unsupported(schema, path=()):
    if isinstance(schema, dict):
        if "format" in schema and isinstance(schema["format"], str):
            return [*path, "format"]
        for key, value in schema.items():
            found = _unsupported(value, (*path, key))
            if found:
                return found
    return None


class FakeEngine:
    def __init__(self, *, context: int = 4096, text: str = DEFAULT_TEXT) -> None:
        self.context = context
        self.text = text
        self.requests: list[GenerationRequest] = []
        self.checked: list[dict] = []
        self.batches_run = self.rows_run = 0
        self.precision = "fake"
        self.fail_next = False

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def encode_prompt(self, model_id, messages, tools=None, functions=None) -> list[int]:
        text = json.dumps(template_messages(messages, tools, functions))
        return [len(word) for word in WORD.findall(text)]

    def encode_text(self, model_id, text: str) -> list[int]:
        """A legacy completion's prompt: one "token" per word (its length), the document start (0) when empty."""
        return [len(word) for word in WORD.findall(text)] or [0]

    def decode_tokens(self, model_id, ids: list[int]) -> str:
        return "".join(f"<{i}>" for i in ids)

    def context_length(self, model_id) -> int:
        return self.context

    def vocab_size(self, model_id) -> int:
        return 49152  # SmolLM2's

    def check_constraint(self, model_id, spec: dict) -> None:
        self.checked.append(spec)
        path = _unsupported(spec.get("schema")) if spec["type"] == "json_schema" else None
        if path:
            raise Unsupported(f"'{path[-1]}' is not supported", list(path))

    def _answer(self, request: GenerationRequest) -> str:
        spec = request.constraint
        if spec is None:
            return self.text
        if spec["type"] != "tool_call":
            return self._answer_for(spec)
        answer = spec.get("answer")
        if answer is not None and request.messages[-1].get("role") == "tool":
            # tool_choice "auto" with a JSON answer: a tool's result has come back, so answer (what an
            # agent loop expects; a real model may choose either branch, the grammar allows both)
            return self._answer_for(answer)
        tools = [t["function"] for t in spec["tools"]]
        tool = next(t for t in tools if t["name"] == spec["name"]) if spec["name"] else tools[0]
        arguments = example(tool.get("parameters") or {"type": "object", "properties": {}})
        return "<tool_call>" + json.dumps({"name": tool["name"], "arguments": arguments}) + "</tool_call>"

    @staticmethod
    def _answer_for(spec: dict) -> str:
        if spec["type"] == "json_object":
            return '{"answer": "fake"}'
        return json.dumps(example(spec["schema"]))

    def submit(self, request: GenerationRequest) -> Future:
        self.requests.append(request)
        self.batches_run += 1
        self.rows_run += request.n
        threading.Thread(target=self._run, args=(request,), daemon=True).start()
        return request.future

    def _run(self, request: GenerationRequest) -> None:
        if self.fail_next:
            self.fail_next = False
            request.future.set_exception(RuntimeError("the fake engine was told to fail"))
            return
        assert request.prompt_ids is not None, "the chat service tokenises the prompt once, before submitting"
        request.prompt_tokens = len(request.prompt_ids)
        choices = []
        for index in range(request.n):
            words = WORD.findall(self._answer(request))
            finish = "stop"
            if len(words) > request.max_tokens:
                words, finish = words[: request.max_tokens], "length"
            text, tokens = "", []
            for k, word in enumerate(words):
                cut = next((word.find(s) for s in request.stop if s and s in word), -1)
                piece = word if cut < 0 else word[:cut]
                text += piece
                token = TokenLogprob(word, list(word.encode()), -0.25 * (k % 4),
                                     [(word, list(word.encode()), -0.25 * (k % 4)), ("other", list(b"other"), -3.0)]
                                     [: request.top_logprobs])
                tokens.append(token)
                if request.on_delta and piece:
                    request.on_delta(index, piece)
                if request.on_logprobs and request.logprobs:
                    request.on_logprobs(index, [token])
                if cut >= 0:
                    finish = "stop"
                    break
            choices.append(Choice(text, finish, len(tokens), tokens if request.logprobs else None))
        request.future.set_result(choices)
