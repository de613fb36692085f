"""The Responses API (``/v1/responses``) on the chat service: the same model lookup, single
tokenisation, context check, constrained decoding and logprobs as chat completions.

``input`` (a string or items) and ``instructions`` become chat messages: message items, function
calls (``function_call``) and their results (``function_call_output``); ``previous_response_id``
puts the stored conversation before them. ``text.format`` is ``response_format``, function
``tools`` and ``tool_choice`` are chat's; the answer comes back as output items (an assistant
``message`` with ``output_text``, and ``function_call`` items), streamed as the spec's
``response.*`` events with ``sequence_number``. Responses are stored (``store``, default true)
so that ``GET`` / ``DELETE /v1/responses/{id}``, ``/input_items`` and ``previous_response_id`` work.
What the local server cannot do (built-in tools, reasoning, images, background runs, ...) is
refused with 400 (see :mod:`ftkit.local.api.parameters`).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ..api.wire import APIError, after_cursor, unsupported_value
from ..inference.engine import Choice, GenerationRequest, TokenLogprob
from ..inference.render import MAX_PARALLEL_CALLS, ToolCallReader
from ..store import Store, new_id, valid_id
from .chat import (
    FUNCTION_NAME,
    ChatService,
    answer_constraint,
    generate,
    json_constraint,
    token_logprob,
    tool_setup,
)

LOGPROBS_INCLUDE = "message.output_text.logprobs"


def _item_id(prefix: str) -> str:
    return f"{prefix}_" + secrets.token_hex(24)


@dataclass
class ResponseCall:
    """A checked Responses request, ready for the engine."""

    id: str
    body: dict
    request: GenerationRequest
    tool_mode: str
    tools: list[dict]  # as the Responses API shows them (FunctionTool)
    input_items: list[dict]  # this request's input, as stored items (with ids)
    context: list[dict]  # everything the model saw before answering: earlier turns + input_items
    created_at: int = field(default_factory=lambda: int(time.time()))

    @property
    def store(self) -> bool:
        return self.body.get("store") is not False

    @property
    def parallel_tool_calls(self) -> bool:
        return self.body.get("parallel_tool_calls") is not False

    def reader(self) -> ToolCallReader:
        """A reader of the answer's function calls (one call without ``parallel_tool_calls``)."""
        return ToolCallReader(MAX_PARALLEL_CALLS if self.parallel_tool_calls else 1)


# -- input -> stored items -> chat messages -------------------------------------------------------


def _part_text(part: dict) -> str:
    return part.get("text") if part.get("type") in ("input_text", "output_text") else part.get("refusal", "")


def read_input(value: str | list, param: str = "input") -> list[dict]:
    """``input`` as stored items (the shapes ``/input_items`` lists), refusing what the local
    models cannot read."""
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": value}]
    items = []
    for i, item in enumerate(value):
        kind = item.get("type", "message")
        where = f"{param}[{i}]"
        if kind == "message":
            role, content = item["role"], item["content"]
            assistant = role == "assistant"
            text_kind = "output_text" if assistant else "input_text"
            if isinstance(content, str):
                content = [{"type": text_kind, "text": content}]
            parts = []
            for j, part in enumerate(content):
                if part.get("type") not in ("input_text", "output_text", "refusal"):
                    raise unsupported_value(f"{where}.content[{j}].type", part.get("type"),
                                            "'input_text', 'output_text' or 'refusal': the local models read only text")
                if part["type"] == "refusal":
                    parts.append({"type": "refusal", "refusal": part["refusal"]})
                elif assistant:
                    parts.append({"type": "output_text", "text": _part_text(part), "annotations": [], "logprobs": []})
                else:
                    parts.append({"type": "input_text", "text": _part_text(part)})
            items.append({"id": item.get("id") or _item_id("msg"), "type": "message", "role": role,
                          "status": "completed", "content": parts})
        elif kind == "function_call":
            items.append({"id": item.get("id") or _item_id("fc"), "type": "function_call", "call_id": item["call_id"],
                          "name": item["name"], "arguments": item["arguments"], "status": "completed"})
        elif kind == "function_call_output":
            if not item.get("call_id"):
                raise APIError(400, f"Missing required parameter: '{where}.call_id'.", param=f"{where}.call_id",
                               code="missing_required_parameter")
            output = item["output"]
            if isinstance(output, list):
                for j, part in enumerate(output):
                    if part.get("type") != "input_text":
                        raise unsupported_value(f"{where}.output[{j}].type", part.get("type"), "'input_text'")
                output = "".join(part["text"] for part in output)
            items.append({"id": item.get("id") or _item_id("fco"), "type": "function_call_output",
                          "call_id": item["call_id"], "output": output, "status": "completed"})
        else:
            raise unsupported_value(f"{where}.type", kind, "'message', 'function_call' or 'function_call_output' "
                                    "items: the local server has no built-in tools, reasoning items or item "
                                    "references")
    return items


def to_messages(items: list[dict]) -> list[dict]:
    """Stored items -> chat messages (consecutive function calls form one assistant turn)."""
    messages: list[dict] = []
    for item in items:
        if item["type"] == "message":
            text = "".join(_part_text(p) for p in item["content"])
            messages.append({"role": item["role"], "content": text})
        elif item["type"] == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
    return messages


def _read_tools(tools: list[dict] | None) -> tuple[list[dict], list[dict]]:
    """(tools as the Responses API echoes them, the same as chat tools); only function tools."""
    shown, chat_tools = [], []
    for i, tool in enumerate(tools or []):
        if tool.get("type") != "function":
            raise unsupported_value(f"tools[{i}].type", tool.get("type"), "'function' tools: the local server has no "
                                    "built-in tools")
        if not FUNCTION_NAME.match(tool["name"]):
            raise APIError(400, f"Invalid 'tools[{i}].name': {tool['name']!r} does not match "
                                "'^[a-zA-Z0-9_-]{1,64}$'.", param=f"tools[{i}].name", code="invalid_value")
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
        shown.append({"type": "function", "name": tool["name"], "description": tool.get("description"),
                      "parameters": tool.get("parameters"), "strict": tool.get("strict")})
        chat_tools.append({"type": "function", "function": function})
    return shown, chat_tools


class ResponsesService:
    def __init__(self, chat: ChatService, store: Store) -> None:
        self.chat = chat
        self.store = store

    # -- stored responses -----------------------------------------------------------------------

    def _record(self, response_id: str, param: str = "response_id") -> dict:
        record = self.store.get_response(response_id) if valid_id("resp", response_id or "") else None
        if record is None:
            raise APIError(404, f"Response with id '{response_id}' not found.", param=param, code="not_found")
        return record

    def get(self, response_id: str, *, stream: bool = False) -> dict:
        if stream:  # replaying a stored response as events is not implemented
            raise unsupported_value("stream", True, "false: stored responses come back whole")
        return self._record(response_id)["response"]

    def delete(self, response_id: str) -> dict:
        self._record(response_id)
        self.store.delete_response(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    def input_items(self, response_id: str, *, after: str | None, limit: int, order: str) -> tuple[list[dict], bool]:
        items = self._record(response_id)["input_items"]
        return after_cursor(items[::-1] if order == "desc" else items, after, limit)

    # -- creating -------------------------------------------------------------------------------

    def prepare(self, body: dict) -> ResponseCall:
        """A :class:`ResponseCall` from a checked ``createResponse`` body (blocking: tokenises)."""
        if not body.get("model"):
            raise APIError(400, "Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
        if body.get("input") is None:
            raise APIError(400, "Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
        history: list[dict] = []
        if body.get("previous_response_id") is not None:
            previous = self._record(body["previous_response_id"], "previous_response_id")
            history = previous["context"] + previous["response"]["output"]
        input_items = read_input(body["input"])
        context = history + input_items
        messages = to_messages(context)
        if body.get("instructions"):
            messages.insert(0, {"role": "system", "content": body["instructions"]})
        if not messages:
            raise APIError(400, "Invalid 'input': there is nothing to answer (no input items, instructions or "
                                "previous response).", param="input", code="invalid_value")

        shown_tools, chat_tools = _read_tools(body.get("tools"))
        tool_mode, forced = tool_setup(chat_tools, body.get("tool_choice"))
        text = body.get("text") or {}
        if text.get("verbosity") not in (None, "medium"):
            raise unsupported_value("text.verbosity", text["verbosity"], "'medium'")
        constraint = answer_constraint(tool_mode, forced, chat_tools,
                                       json_constraint(text.get("format"), messages, param="text.format",
                                                       messages_param="input"),
                                       parallel=body.get("parallel_tool_calls") is not False)
        for i, name in enumerate(body.get("include") or []):
            if name != LOGPROBS_INCLUDE:
                raise unsupported_value(f"include[{i}]", name, f"'{LOGPROBS_INCLUDE}'")
        request = GenerationRequest(
            model=body["model"], messages=messages,
            temperature=_or(body.get("temperature"), 1.0), top_p=_or(body.get("top_p"), 1.0),
            tools=chat_tools if tool_mode != "none" else None, constraint=constraint,
            logprobs=LOGPROBS_INCLUDE in (body.get("include") or []), top_logprobs=body.get("top_logprobs") or 0,
            prompt_cache_key=body.get("prompt_cache_key"),
        )
        self.chat.ready(request, body.get("max_output_tokens"), max_param="max_output_tokens", messages_param="input",
                        schema_param="text.format.schema")
        return ResponseCall(new_id("resp", "_", 48), body, request, tool_mode, shown_tools, input_items, context)

    async def create(self, call: ResponseCall) -> dict:
        choices = await asyncio.wrap_future(self.chat.submit(call))
        return self._finish(call, choices)

    def _finish(self, call: ResponseCall, choices: list[Choice], output: list[dict] | None = None) -> dict:
        choice = choices[0]
        output = output if output is not None else _output(call, choice)
        response = response_object(call, output, choice)
        if call.store:
            self.store.save_response(call.id, {"response": response, "input_items": call.input_items,
                                               "context": call.context})
        return response

    async def stream(self, call: ResponseCall) -> AsyncIterator[str]:
        """Server-sent events in the spec's shape (``response.created`` ... ``response.completed``):
        text as it is decoded, and each function call as soon as its name is known, its arguments
        as ``response.function_call_arguments.delta`` events, then ``.done``."""
        events = _Events()
        yield events.send("response.created", response=response_object(call, [], None))
        yield events.send("response.in_progress", response=response_object(call, [], None))
        out = _OutputItems(call, events)
        reader = call.reader() if call.tool_mode != "none" else None
        pending = ""
        try:
            async for kind, _, value in generate(self.chat.engine, call.request, deltas=True):
                if kind == "done":
                    choices = value
                elif kind == "text" and reader is not None:
                    for sent in out.read(reader.feed(value)):
                        yield sent
                elif kind == "text" and not call.request.logprobs:
                    for sent in out.text(value):
                        yield sent
                elif kind == "text":  # held until its tokens' logprobs arrive: one delta with both
                    pending += value
                elif reader is None:  # logprobs
                    for sent in out.text(pending, [_stream_logprob(t) for t in value]):
                        yield sent
                    pending = ""
        except Exception as e:  # the stream has started: report in-band, as the API does
            yield events.send("error", code="server_error", message=f"generation failed: {type(e).__name__}",
                              param=None)
            return
        cut = choices[0].finish_reason == "length"
        for sent in out.read(reader.finish(cut)) if reader is not None else out.text(pending):
            yield sent
        for sent in out.close(choices[0]):
            yield sent
        final = self._finish(call, choices, out.items)
        yield events.send("response.completed" if final["status"] == "completed" else "response.incomplete",
                          response=final)


def _or(value, default):
    return default if value is None else value


class _Events:
    """Numbers the events of one stream (``sequence_number``) and writes them as SSE."""

    def __init__(self) -> None:
        self.sequence = 0

    def send(self, kind: str, **fields) -> str:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(event)}\n\n"


def _stream_logprob(token: TokenLogprob) -> dict:
    """A token in a ``response.output_text.delta`` event (ResponseLogProb: no bytes)."""
    return {"token": token.token, "logprob": token.logprob,
            "top_logprobs": [{"token": text, "logprob": logprob} for text, _, logprob in token.top_logprobs]}


class _OutputItems:
    """Builds a response's output items from its answer, in order: a ``message`` for text, a
    ``function_call`` per call (:class:`~.render.ToolCallReader`'s events), and, when ``events``
    numbers a stream, the events that announce them as they grow. A whole response and its stream
    are built by the same steps, so they always agree."""

    def __init__(self, call: ResponseCall, events: _Events | None = None) -> None:
        self.call = call
        self.events = events
        self.items: list[dict] = []
        self.message: dict | None = None  # the message item being written

    def _send(self, kind: str, **fields) -> list[str]:
        return [self.events.send(kind, **fields)] if self.events is not None else []

    def text(self, text: str, logprobs: list | None = None) -> list[str]:
        sent = []
        if self.message is None:
            self.message = {"id": _item_id("msg"), "type": "message", "status": "in_progress", "role": "assistant",
                            "content": [{"type": "output_text", "text": "", "annotations": [], "logprobs": []}]}
            self.items.append(self.message)
            index = len(self.items) - 1
            sent += self._send("response.output_item.added", output_index=index,
                               item={**self.message, "content": []})
            sent += self._send("response.content_part.added", item_id=self.message["id"], output_index=index,
                               content_index=0, part=dict(self.message["content"][0]))
        self.message["content"][0]["text"] += text
        if text or logprobs:
            sent += self._send("response.output_text.delta", item_id=self.message["id"],
                               output_index=self.items.index(self.message), content_index=0, delta=text,
                               logprobs=logprobs or [])
        return sent

    def _close_message(self, status: str, logprobs: list) -> list[str]:
        message, self.message = self.message, None
        if message is None:
            return []
        message["status"] = status
        part = message["content"][0]
        part["logprobs"] = logprobs
        index = self.items.index(message)
        return [*self._send("response.output_text.done", item_id=message["id"], output_index=index, content_index=0,
                            text=part["text"], logprobs=logprobs),
                *self._send("response.content_part.done", item_id=message["id"], output_index=index, content_index=0,
                            part=part),
                *self._send("response.output_item.done", output_index=index, item=message)]

    def read(self, reader_events: list[tuple]) -> list[str]:
        """The items (and events) for a :class:`~.render.ToolCallReader`'s events."""
        sent = []
        for event in reader_events:
            if event[0] == "text":
                sent += self.text(event[1])
            elif event[0] == "call":
                _, _, call_id, name = event
                sent += self._close_message("completed", [])
                self.items.append({"id": _item_id("fc"), "type": "function_call", "call_id": call_id, "name": name,
                                   "arguments": "", "status": "in_progress"})
                sent += self._send("response.output_item.added", output_index=len(self.items) - 1,
                                   item=dict(self.items[-1]))
            elif event[0] == "arguments":
                item = self.items[-1]
                item["arguments"] += event[2]
                sent += self._send("response.function_call_arguments.delta", item_id=item["id"],
                                   output_index=len(self.items) - 1, delta=event[2])
            else:  # done
                item = self.items[-1]
                item["status"] = "completed" if event[2] else "incomplete"
                sent += self._send("response.function_call_arguments.done", item_id=item["id"],
                                   output_index=len(self.items) - 1, name=item["name"], arguments=item["arguments"])
                sent += self._send("response.output_item.done", output_index=len(self.items) - 1, item=item)
        return sent

    def close(self, choice: Choice) -> list[str]:
        """The end of the answer: the message (an empty one if there is nothing else) is done."""
        sent = self.text("") if not self.items else []
        tokens = choice.logprobs if self.call.request.logprobs else None
        status = "incomplete" if choice.finish_reason == "length" else "completed"
        return sent + self._close_message(status, [token_logprob(t) for t in tokens or []])


def _output(call: ResponseCall, choice: Choice) -> list[dict]:
    """The output items for the engine's whole answer: text as a message, then any function calls."""
    out = _OutputItems(call)
    if call.tool_mode == "none":
        out.text(choice.text)
    else:
        reader = call.reader()
        out.read(reader.feed(choice.text) + reader.finish(choice.finish_reason == "length"))
    out.close(choice)
    return out.items


def response_object(call: ResponseCall, output: list[dict], choice: Choice | None) -> dict:
    """The ``response`` object; ``choice`` None while it is still being generated."""
    body, request = call.body, call.request
    if choice is None:
        status, details, usage = "in_progress", None, None
    elif choice.finish_reason == "length":  # cut off, also inside (or after) a function call
        status, details = "incomplete", {"reason": "max_output_tokens"}
    else:
        status, details = "completed", None
    if choice is not None:
        usage = {"input_tokens": request.prompt_tokens,
                 "input_tokens_details": {"cached_tokens": request.cached_tokens, "cache_write_tokens": 0},
                 "output_tokens": choice.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": request.prompt_tokens + choice.completion_tokens}
    text = body.get("text") or {}
    return {
        "id": call.id, "object": "response", "created_at": call.created_at, "status": status,
        "completed_at": int(time.time()) if status == "completed" else None, "background": False,
        "error": None, "incomplete_details": details, "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"), "max_tool_calls": body.get("max_tool_calls"),
        "model": request.model, "output": output, "parallel_tool_calls": call.parallel_tool_calls,
        "previous_response_id": body.get("previous_response_id"), "reasoning": None,
        "safety_identifier": body.get("safety_identifier"), "prompt_cache_key": body.get("prompt_cache_key"),
        "service_tier": "default", "store": call.store, "temperature": _or(body.get("temperature"), 1.0),
        "text": {"format": text.get("format") or {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice") or "auto", "tools": call.tools,
        "top_logprobs": body.get("top_logprobs") or 0, "top_p": _or(body.get("top_p"), 1.0), "truncation": "disabled",
        "metadata": body.get("metadata") or {}, **({"usage": usage} if usage is not None else {}),
        **({"user": body["user"]} if body.get("user") is not None else {}),
    }
