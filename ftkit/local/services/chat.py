"""Chat completions, served: one code path for the HTTP route (a whole answer or an SSE stream),
the Batch API and the Responses API.

A request body that passed :mod:`ftkit.local.api.request_check` becomes a :class:`ChatCall`:

1. its parameters are read into a :class:`~ftkit.local.inference.engine.GenerationRequest`:
   ``response_format`` and ``tool_choice`` / ``function_call`` become the engine's
   ``constraint`` spec (``json_object``, ``json_schema``, ``tool_call``, by the one rule of
   :func:`answer_constraint`), ``logprobs`` and
   ``top_logprobs`` ask the engine for token log probabilities;
2. the model is looked up once (:meth:`ftkit.local.services.platform.Platform.get_model`: the hosted 404);
3. the prompt is rendered and tokenised once (``engine.encode_prompt`` -> ``prompt_ids``), and
   the context-length check happens where the prompt ids and ``max_tokens`` meet;
4. the engine compiles the constraint first (``engine.check_constraint``): a schema feature it
   cannot enforce is a 400 naming it, before anything is generated.

The engine's :class:`~ftkit.local.inference.engine.Choice` list then becomes the hosted response or its
stream chunks (:func:`response`, :meth:`ChatService.stream`).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from ..api.request_check import param_name
from ..api.wire import APIError, unsupported_value
from ..inference.engine import Choice, GenerationRequest, TokenLogprob
from ..inference.render import MAX_PARALLEL_CALLS, ToolCallReader

SYSTEM_FINGERPRINT = "fp_ftkit_local"
# Sampling's limit: as the temperature or top_p approaches 0 only the most likely token remains.
# Below this the engine's division by the temperature (or a nucleus of nothing) would overflow.
GREEDY_BELOW = 1e-3
MAX_N = 16
FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass
class ChatCall:
    """A checked chat request, ready for the engine, and how to shape its answer."""

    request: GenerationRequest
    tool_mode: str = "none"  # "none": plain text; "auto": the model may call a tool; "forced": it must
    legacy_functions: bool = False  # ``functions`` / ``function_call``: answer with message.function_call
    parallel_tool_calls: bool = True
    stream: bool = False
    include_usage: bool = False
    on_complete: Callable[[dict], None] | None = None  # given the whole answer (``store: true`` keeps it)

    @property
    def with_tools(self) -> bool:
        return self.tool_mode != "none"

    def reader(self) -> ToolCallReader:
        """A reader of one answer's tool calls: one call for legacy functions or without
        ``parallel_tool_calls``, else at most the grammar's bound."""
        single = self.legacy_functions or not self.parallel_tool_calls
        return ToolCallReader(1 if single else MAX_PARALLEL_CALLS)


# -- reading a request ----------------------------------------------------------------------------


def _text_parts(content: Any, param: str) -> Any:
    """Message content with only parts the local models can read (text; refusal as its text)."""
    if not isinstance(content, list):
        return content
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            parts.append(part)
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal", "")})
        else:
            raise unsupported_value(f"{param}[{j}].type", kind, "'text' parts: the local models read only text")
    return parts


def read_messages(messages: list[dict]) -> list[dict]:
    """The messages with content parts reduced to text; what the local models cannot read is refused."""
    out = []
    for i, message in enumerate(messages):
        message = dict(message)
        if message.get("audio") is not None:
            raise APIError(400, f"Unsupported parameter: 'messages[{i}].audio': the local models have no audio.",
                           param=f"messages[{i}].audio", code="unsupported_parameter")
        message["content"] = _text_parts(message.get("content"), f"messages[{i}].content")
        for j, call in enumerate(message.get("tool_calls") or []):
            if call.get("type") != "function":
                raise unsupported_value(f"messages[{i}].tool_calls[{j}].type", call.get("type"), "'function'")
        out.append(message)
    return out


def _check_function_names(tools: list[dict] | None, functions: list[dict] | None) -> None:
    for i, tool in enumerate(tools or []):
        if tool.get("type") != "function":
            raise unsupported_value(f"tools[{i}].type", tool.get("type"), "'function' tools")
        if not FUNCTION_NAME.match(tool["function"]["name"]):
            raise APIError(400, f"Invalid 'tools[{i}].function.name': {tool['function']['name']!r} does not match "
                                "'^[a-zA-Z0-9_-]{1,64}$'.", param=f"tools[{i}].function.name", code="invalid_value")
    for i, function in enumerate(functions or []):
        if not FUNCTION_NAME.match(function["name"]):
            raise APIError(400, f"Invalid 'functions[{i}].name': {function['name']!r} does not match "
                                "'^[a-zA-Z0-9_-]{1,64}$'.", param=f"functions[{i}].name", code="invalid_value")


def tool_setup(tools: list[dict] | None, choice: Any, *, param: str = "tool_choice") -> tuple[str, str | None]:
    """(tool mode, forced function name) for chat-shaped ``tools`` and a ``tool_choice``.

    ``none`` -> the tools are not shown and no call is read; ``auto`` -> the model may call one;
    ``required`` -> it must call one of them; ``{"type": "function", ...}`` -> it must call that one.
    """
    names = [t["function"]["name"] for t in tools or []]
    if choice is None:
        return ("auto" if names else "none"), None
    if not names:
        if choice == "none":
            return "none", None
        raise APIError(400, f"Invalid value for '{param}': '{param}' is only allowed when 'tools' are specified.",
                       param=param, code="invalid_value")
    if choice in ("none", "auto"):
        return choice, None
    if choice == "required":
        return "forced", None
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name") if "function" in choice else choice.get("name")
        if name not in names:
            where = f"{param}.function.name" if "function" in choice else f"{param}.name"
            raise APIError(400, f"Invalid value for '{where}': no function named {name!r} in 'tools'.",
                           param=where, code="invalid_value")
        return "forced", name
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise unsupported_value(param, kind, "'none', 'auto', 'required' or {'type': 'function', ...}")


def _chat_tool_setup(body: dict, tools: list | None, functions: list | None) -> tuple[str, str | None]:
    """:func:`tool_setup` for a chat body: ``tools`` + ``tool_choice``, or the legacy ``functions``
    + ``function_call``."""
    _check_function_names(tools, functions)
    if tools:
        return tool_setup(tools, body.get("tool_choice"))
    if functions:
        choice = body.get("function_call")
        choice = {"type": "function", "name": choice["name"]} if isinstance(choice, dict) else choice
        return tool_setup([{"type": "function", "function": f} for f in functions], choice, param="function_call")
    tool_setup(None, body.get("function_call"), param="function_call")  # refuses a choice without functions
    return tool_setup(None, body.get("tool_choice"))


def json_constraint(response_format: dict | None, messages: list[dict], *, param: str,
                    messages_param: str = "messages") -> dict | None:
    """The engine constraint for a ``response_format`` (chat) / ``text.format`` (Responses)."""
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        # as on the hosted API: JSON mode without asking for JSON makes models write whitespace forever
        if not any("json" in json.dumps(m.get("content"), ensure_ascii=False).lower() for m in messages):
            raise APIError(400, f"'{messages_param}' must contain the word 'json' in some form, to use '{param}' of "
                                "type 'json_object'.", param=messages_param, code="invalid_value")
        return {"type": "json_object"}
    spec = response_format.get("json_schema", response_format)  # chat nests it, Responses does not
    name = spec.get("name", "")
    if not FUNCTION_NAME.match(name):
        where = f"{param}.json_schema.name" if "json_schema" in response_format else f"{param}.name"
        raise APIError(400, f"Invalid '{where}': {name!r} does not match '^[a-zA-Z0-9_-]{{1,64}}$'.",
                       param=where, code="invalid_value")
    return {"type": "json_schema", "schema": spec.get("schema") or {}, "strict": bool(spec.get("strict"))}


def answer_constraint(tool_mode: str, forced: str | None, tools: list[dict], answer: dict | None, *,
                      parallel: bool) -> dict | None:
    """The engine's constraint for an answer: the one rule joining tool choice and a JSON answer
    format, for chat completions, the Responses API and the Batch API.

    * tool mode ``none``: the JSON answer format (or None: free text);
    * ``forced`` (``required`` or one function): tool calls, whatever the answer format says, as
      on the hosted API;
    * ``auto`` without a JSON format: None (free text; a ``<tool_call>`` block in it is a call);
    * ``auto`` with one: tool calls *or* the JSON answer, one grammar with both branches.

    ``tools`` are chat-shaped; ``parallel``: ``parallel_tool_calls`` (several calls, unless one
    function is forced)."""
    if tool_mode == "forced":
        return {"type": "tool_call", "tools": tools, "name": forced, "parallel": forced is None and parallel}
    if tool_mode == "auto" and answer is not None:
        return {"type": "tool_call", "tools": tools, "name": None, "parallel": parallel, "answer": answer}
    return answer


def _constraint_param(base: str, error: ValueError) -> str:
    """The param an engine's refusal names: its full ``param`` when it gives one (the engine is told
    where the schema sits), else ``base`` + the path inside the schema it reports."""
    full = getattr(error, "param", None)
    if isinstance(full, str) and full:
        return full
    path = getattr(error, "param_path", None)
    if isinstance(path, (list, tuple)):
        path = param_name(list(path))
    return f"{base}.{path}" if path else base


class ChatService:
    """Serves chat completions with an engine (``submit``, ``encode_prompt``, ``context_length``,
    ``check_constraint``) and the platform's model lookup."""

    def __init__(self, engine, lookup_model: Callable[[str], dict]) -> None:
        self.engine = engine
        self.lookup_model = lookup_model

    # -- preparing ------------------------------------------------------------------------------

    def prepare(self, body: dict) -> ChatCall:
        """A :class:`ChatCall` from a checked chat completion body (blocking: tokenises)."""
        messages = read_messages(body["messages"])
        tools, functions = body.get("tools") or None, body.get("functions") or None
        tool_mode, forced = _chat_tool_setup(body, tools, functions)
        all_tools = (tools or []) + [{"type": "function", "function": f} for f in functions or []]

        constraint = answer_constraint(tool_mode, forced, all_tools,
                                       json_constraint(body.get("response_format"), messages, param="response_format"),
                                       parallel=body.get("parallel_tool_calls") is not False)

        n = body.get("n") or 1
        if n > MAX_N:
            raise APIError(400, f"Invalid 'n': the local server generates at most {MAX_N} choices.", param="n",
                           code="invalid_value")
        top_logprobs = body.get("top_logprobs")
        if top_logprobs is not None and not body.get("logprobs"):
            raise APIError(400, "Invalid value for 'top_logprobs': 'logprobs' must be set to true to use "
                                "'top_logprobs'.", param="top_logprobs", code="invalid_value")
        stream = bool(body.get("stream"))
        if body.get("stream_options") is not None and not stream:
            raise APIError(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                           param="stream_options", code="invalid_value")
        stop = body.get("stop")
        request = GenerationRequest(
            model=body["model"], messages=messages,
            temperature=_or(body.get("temperature"), 1.0), top_p=_or(body.get("top_p"), 1.0),
            stop=[stop] if isinstance(stop, str) else list(stop or []), seed=body.get("seed"), n=n,
            tools=None if tool_mode == "none" else (tools or None),
            functions=None if tool_mode == "none" else (functions or None),
            constraint=constraint, logprobs=bool(body.get("logprobs")), top_logprobs=top_logprobs or 0,
            prompt_cache_key=body.get("prompt_cache_key"),
            presence_penalty=float(body.get("presence_penalty") or 0.0),
            frequency_penalty=float(body.get("frequency_penalty") or 0.0),
            logit_bias=self._logit_bias(body),
        )
        max_param = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        self.ready(request, body.get(max_param), max_param=max_param)
        return ChatCall(request, tool_mode=tool_mode, legacy_functions=bool(functions and not tools),
                        parallel_tool_calls=body.get("parallel_tool_calls") is not False, stream=stream,
                        include_usage=bool((body.get("stream_options") or {}).get("include_usage")))

    def _logit_bias(self, body: dict) -> dict[int, float]:
        """``logit_bias`` as {token id: bias}: keys are token ids of the model's vocabulary (as
        strings, JSON's only keys), values from -100 to 100, as the API reference says."""
        bias = body.get("logit_bias") or {}
        if not bias:
            return {}
        self.lookup_model(body["model"])  # an unknown model is a 404 before its vocabulary is asked for
        vocab = self.engine.vocab_size(body["model"])
        out: dict[int, float] = {}
        for key, value in bias.items():
            if not key.strip().isdigit() or int(key) >= vocab:
                raise APIError(400, f"Invalid key in 'logit_bias': {key}. Expected a token id from 0 to {vocab - 1}.",
                               param="logit_bias", code="invalid_value")
            if not -100 <= value <= 100:
                raise APIError(400, f"Invalid value in 'logit_bias' for token {key}: {value}. Expected a value "
                                    "from -100 to 100.", param="logit_bias", code="invalid_value")
            out[int(key)] = float(value)
        return out

    def ready(self, request: GenerationRequest, max_tokens: int | None, *, max_param: str,
              messages_param: str = "messages", schema_param: str = "response_format.json_schema.schema",
              tools_param: str = "tools") -> None:
        """Model lookup, the one tokenisation, the context check and the constraint check."""
        self.lookup_model(request.model)
        if request.temperature < GREEDY_BELOW or request.top_p < GREEDY_BELOW:
            request.temperature = 0.0
        if max_tokens is not None and max_tokens < 1:
            raise APIError(400, f"Invalid '{max_param}': expected a value >= 1, but got {max_tokens} instead.",
                           param=max_param, code="invalid_value")
        request.prompt_ids = self.engine.encode_prompt(request.model, request.messages, request.tools,
                                                       request.functions)
        request.prompt_tokens = prompt = len(request.prompt_ids)
        context = self.engine.context_length(request.model)
        # as hosted: without max_tokens an answer may run up to the context's end (an end-of-sequence
        # token, a grammar's completion or a stop sequence ends it sooner), so a constrained answer
        # finishes rather than being cut at an arbitrary default
        wanted = max_tokens if max_tokens is not None else context - prompt
        if wanted < 1 or prompt + wanted > context:
            raise APIError(400, f"This model's maximum context length is {context} tokens. However, you requested "
                                f"{prompt + max(wanted, 1)} tokens ({prompt} in the messages, {max(wanted, 1)} in "
                                "the completion). Please reduce the length of the messages or completion.",
                           param=messages_param, code="context_length_exceeded")
        request.max_tokens = wanted
        if request.constraint is not None:
            # where the schema sits in this request, so a refusal names the exact field
            kind = request.constraint["type"]
            if kind != "json_object":
                request.constraint.setdefault("param", tools_param if kind == "tool_call" else schema_param)
            answer = request.constraint.get("answer")
            if answer is not None and answer["type"] != "json_object":
                answer.setdefault("param", schema_param)
            try:
                self.engine.check_constraint(request.model, request.constraint)
            except ValueError as e:
                param = _constraint_param(tools_param if kind == "tool_call" else schema_param, e)
                if kind == "tool_call" and not (answer is not None and param.startswith(schema_param)):
                    code = "invalid_function_parameters"
                else:
                    code = "invalid_json_schema"
                raise APIError(400, f"Invalid schema for '{param}': {e}", param=param, code=code) from None

    # -- answering ------------------------------------------------------------------------------

    def submit(self, call: ChatCall) -> Future:
        """Queue the call on the engine; the future's result is the engine's list of choices."""
        return self.engine.submit(call.request)

    async def complete(self, call: ChatCall) -> dict:
        full = response(call, await asyncio.wrap_future(self.submit(call)))
        if call.on_complete:
            call.on_complete(full)
        return full

    async def stream(self, call: ChatCall) -> AsyncIterator[str]:
        """The answer as server-sent events: chunks as the hosted API sends them, then ``[DONE]``.

        Text is sent as it is decoded; with tools, each call is sent as soon as its name is
        known (``id``, ``type``, ``function.name`` and empty ``arguments``), then its arguments
        fragment by fragment, as the hosted API streams them (:class:`~.render.ToolCallReader`)."""
        request = call.request
        cid, created = completion_id(), int(time.time())
        usage_field = {"usage": None} if call.include_usage else {}

        def sse(choices: list[dict], **extra) -> str:
            return f"data: {json.dumps(chunk(request, cid, created, choices, **usage_field, **extra))}\n\n"

        yield sse([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                    "finish_reason": None} for i in range(request.n)])
        pending: dict[int, str] = {}
        readers = {i: call.reader() for i in range(request.n)} if call.with_tools else {}
        try:
            async for kind, index, value in generate(self.engine, request, deltas=True):
                if kind == "text" and call.with_tools:
                    for delta in _tool_deltas(call, readers[index].feed(value)):
                        yield sse([_delta_choice(index, delta)])
                elif kind == "text" and not request.logprobs:
                    yield sse([_delta_choice(index, {"content": value})])
                elif kind == "text":  # held until its tokens' logprobs arrive
                    pending[index] = pending.get(index, "") + value
                elif kind == "logprobs" and not call.with_tools:  # with tools: all in the last chunk
                    yield sse([_delta_choice(index, {"content": pending.pop(index, "")}, value)])
                elif kind == "done":
                    choices = value
        except Exception as e:  # the stream has started: report in-band, as OpenAI does
            error = APIError(500, f"generation failed: {type(e).__name__}", type="server_error")
            yield f"data: {json.dumps(error.body())}\n\n"
            return
        for index, reader in readers.items():
            for delta in _tool_deltas(call, reader.finish(cut=choices[index].finish_reason == "length")):
                yield sse([_delta_choice(index, delta)])
        full = response(call, choices, cid, readers)
        if call.on_complete:
            call.on_complete(full)
        for i, choice in enumerate(full["choices"]):
            delta, logprobs = {}, None
            if i in pending:
                delta["content"] = pending.pop(i)
            if call.with_tools:
                logprobs = choice["logprobs"]
            elif request.logprobs and "content" in delta:
                logprobs = {"content": [], "refusal": None}
            yield sse([{"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": choice["finish_reason"]}])
        if call.include_usage:
            yield f"data: {json.dumps(chunk(request, cid, created, [], usage=full['usage']))}\n\n"
        yield "data: [DONE]\n\n"


def _tool_deltas(call: ChatCall, events: list[tuple]) -> list[dict]:
    """Chunk deltas for a :class:`~.render.ToolCallReader`'s events (legacy ``functions``:
    ``function_call`` deltas)."""
    deltas = []
    for event in events:
        if event[0] == "text":
            deltas.append({"content": event[1]})
        elif event[0] == "call":
            _, index, call_id, name = event
            if call.legacy_functions:
                deltas.append({"function_call": {"name": name, "arguments": ""}})
            else:
                deltas.append({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                               "function": {"name": name, "arguments": ""}}]})
        elif event[0] == "arguments":
            _, index, fragment = event
            if call.legacy_functions:
                deltas.append({"function_call": {"arguments": fragment}})
            else:
                deltas.append({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
    return deltas


def _or(value, default):
    return default if value is None else value


async def generate(engine, request: GenerationRequest, *, deltas: bool) -> AsyncIterator[tuple[str, int, Any]]:
    """Submit ``request`` and yield ``("text", index, text)`` and ``("logprobs", index, tokens)`` as
    the engine decodes (when ``deltas``), then ``("done", -1, choices)``; raises what the engine raised."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    if deltas:
        request.on_delta = lambda index, text: loop.call_soon_threadsafe(queue.put_nowait, ("text", index, text))
        if request.logprobs:
            request.on_logprobs = lambda index, tokens: loop.call_soon_threadsafe(
                queue.put_nowait, ("logprobs", index, tokens))
    future = engine.submit(request)
    future.add_done_callback(lambda f: loop.call_soon_threadsafe(queue.put_nowait, None))
    while (item := await queue.get()) is not None:
        yield item
    yield "done", -1, future.result()


# -- the hosted shapes ----------------------------------------------------------------------------


def completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def token_logprob(token: TokenLogprob) -> dict:
    """One token's log probability in the hosted shape (chat ``logprobs.content[]`` and Responses)."""
    return {"token": token.token, "logprob": token.logprob, "bytes": token.bytes,
            "top_logprobs": [{"token": text, "logprob": logprob, "bytes": raw}
                             for text, raw, logprob in token.top_logprobs]}


def _logprobs(tokens: list[TokenLogprob] | None) -> dict:
    return {"content": [token_logprob(t) for t in tokens or []], "refusal": None}


def _delta_choice(index: int, delta: dict, tokens: list[TokenLogprob] | None = None) -> dict:
    return {"index": index, "delta": delta, "logprobs": None if tokens is None else _logprobs(tokens),
            "finish_reason": None}


def _message(call: ChatCall, choice: Choice, reader: ToolCallReader | None = None) -> tuple[dict, str]:
    """(message, finish_reason) for a choice; with tools, read by ``reader`` (the stream's, which
    has read the text already) or a new one. An answer cut off by ``max_tokens`` says "length",
    whatever it holds (a call cut off keeps the arguments written so far, as a stream has sent
    them); the markup of calls never reaches ``content``."""
    message: dict[str, Any] = {"role": "assistant", "content": choice.text, "refusal": None, "annotations": []}
    if not call.with_tools:
        return message, choice.finish_reason
    if reader is None:
        reader = call.reader()
        reader.feed(choice.text)
        reader.finish(cut=choice.finish_reason == "length")
    message["content"] = reader.content or None
    calls = reader.tool_calls()
    if not calls:
        return message, choice.finish_reason
    if call.legacy_functions:
        message["function_call"] = calls[0]["function"]
    else:
        message["tool_calls"] = calls
    if choice.finish_reason == "length":
        return message, "length"
    return message, "function_call" if call.legacy_functions else "tool_calls"


def usage(request: GenerationRequest, choices: list[Choice]) -> dict:
    completion = sum(c.completion_tokens for c in choices)
    return {
        "prompt_tokens": request.prompt_tokens, "completion_tokens": completion,
        "total_tokens": request.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": request.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


def response(call: ChatCall, choices: list[Choice], cid: str | None = None,
             readers: dict[int, ToolCallReader] | None = None) -> dict:
    """The ``chat.completion`` object for the engine's choices (``readers``: a stream's, per choice)."""
    out = []
    for i, choice in enumerate(choices):
        message, finish = _message(call, choice, (readers or {}).get(i))
        logprobs = _logprobs(choice.logprobs) if call.request.logprobs else None
        out.append({"index": i, "message": message, "logprobs": logprobs, "finish_reason": finish})
    return {
        "id": cid or completion_id(), "object": "chat.completion", "created": int(time.time()),
        "model": call.request.model, "choices": out, "usage": usage(call.request, choices),
        "service_tier": "default", "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def chunk(request: GenerationRequest, cid: str, created: int, choices: list[dict], **extra) -> dict:
    """One ``chat.completion.chunk`` (``extra``: ``usage``)."""
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": request.model,
            "choices": choices, "service_tier": "default", "system_fingerprint": SYSTEM_FINGERPRINT, **extra}
