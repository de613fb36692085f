"""Legacy text completions (``POST /v1/completions``), served: text in, text out, with the engine
and sampling of chat completions (:mod:`ftkit.local.services.chat`), but no chat template.

A request body that passed :mod:`ftkit.local.api.request_check` becomes a :class:`CompletionCall`:

1. ``prompt`` (a string, a list of strings, a token array or a list of token arrays; missing or
   null is the spec's default ``<|endoftext|>``) becomes one prompt per entry, tokenised once with
   the model's tokenizer (``engine.encode_text``: a document, not a chat);
2. each prompt is one :class:`~ftkit.local.inference.engine.GenerationRequest` with ``n`` (or ``best_of``)
   choices and the chat path's sampling: ``temperature``, ``top_p``, ``stop``, ``seed``,
   ``presence_penalty`` / ``frequency_penalty`` and ``logit_bias`` (applied in the engine by
   ``engine.adjust_logits``); ``max_tokens`` defaults to the spec's 16;
3. the choices are numbered prompt by prompt (prompt ``p``'s choice ``i`` is ``p * n + i``, as on
   the hosted API); ``echo`` puts the prompt before the answer; ``logprobs: N`` returns this
   endpoint's shape (``tokens``, ``token_logprobs``, ``top_logprobs`` as ``{token: logprob}`` with up
   to ``N`` alternatives plus the chosen token, ``text_offset`` in characters from the prompt's start).

``best_of`` > ``n`` generates ``best_of`` candidates per prompt and returns the ``n`` with the
highest mean token log probability (the model's own, as ``logprobs`` reports it); ``usage`` counts
every candidate's tokens, as the hosted API bills them. Not implemented, and refused with a 400
naming the parameter (see :mod:`ftkit.local.api.parameters`): ``suffix`` (insertion), and ``echo``
together with ``logprobs`` (the engine scores generated tokens, not the prompt's; the hosted API
refuses the pair for gpt-3.5-turbo-instruct too, fastai/lm-hackers#7). ``text_offset`` counts from
the start of the prompt, echoed or not, as the hosted API's stream shows (simonw/llm#284: a
16-character prompt's first answer token is at offset 16); every choice's last chunk carries its
``finish_reason`` (and, with ``logprobs``, empty lists).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..api.wire import APIError
from ..inference.engine import Choice, GenerationRequest, TokenLogprob
from .chat import GREEDY_BELOW, MAX_N, SYSTEM_FINGERPRINT, ChatService

DEFAULT_MAX_TOKENS = 16  # the spec's default for this endpoint (chat's is "as many as fit")
DEFAULT_PROMPT = "<|endoftext|>"  # the spec's default prompt: a document start


@dataclass
class CompletionCall:
    """A checked completion request: one engine request per prompt, and how to shape the answer."""

    model: str
    requests: list[GenerationRequest]  # one per prompt, each with ``best_of`` (or ``n``) choices
    prompts: list[str]  # each prompt's text (for ``echo``)
    n: int = 1
    echo: bool = False
    logprobs: int | None = None  # None: no logprobs; else the number of alternatives per token
    stream: bool = False
    include_usage: bool = False
    generate: bool = True  # False when max_tokens is 0: the answer is empty (or the prompt, with echo)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def best_of(self) -> int:
        return self.requests[0].n if self.requests else self.n


def completion_id() -> str:
    return "cmpl-" + secrets.token_hex(12)


class CompletionService:
    """Serves legacy completions with the chat service's engine, model lookup and ``logit_bias``
    reading (one reading of each parameter for both endpoints)."""

    def __init__(self, chat: ChatService) -> None:
        self.chat = chat
        self.engine = chat.engine

    # -- preparing ------------------------------------------------------------------------------

    def prepare(self, body: dict) -> CompletionCall:
        """A :class:`CompletionCall` from a checked body (blocking: tokenises)."""
        model = body["model"]
        n = body.get("n") or 1
        best_of = body.get("best_of")
        best_of = n if best_of is None else best_of
        stream = bool(body.get("stream"))
        if best_of < n:
            raise APIError(400, f"Invalid 'best_of': it must be at least 'n' ({n}), got {best_of}.", param="best_of",
                           code="invalid_value")
        if best_of > n and stream:
            raise APIError(400, "Invalid 'best_of': 'best_of' greater than 'n' cannot be streamed (the best "
                                "choices are known only at the end).", param="best_of", code="invalid_value")
        if best_of > MAX_N:
            param = "best_of" if body.get("best_of") is not None else "n"
            raise APIError(400, f"Invalid '{param}': the local server generates at most {MAX_N} choices per prompt.",
                           param=param, code="invalid_value")
        logprobs = body.get("logprobs")
        if body.get("echo") and logprobs is not None:
            # the hosted API's words for gpt-3.5-turbo-instruct (fastai/lm-hackers#7), and the local reason
            raise APIError(400, "Setting 'echo' and 'logprobs' at the same time is not supported for this model "
                                "(the local engine scores the tokens it generates, not the prompt's).", param="echo",
                           code="unsupported_value")
        if body.get("stream_options") is not None and not stream:
            raise APIError(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                           param="stream_options", code="invalid_value")
        max_tokens = body.get("max_tokens")
        self.chat.lookup_model(model)  # the hosted 404 for an unknown model, before any tokenising
        prompt_ids, prompts = self._prompts(model, body.get("prompt"),
                                             bool(body.get("echo")) or logprobs is not None)
        context = self.engine.context_length(model)
        longest = max(len(ids) for ids in prompt_ids)
        wanted = max_tokens if max_tokens is not None else min(DEFAULT_MAX_TOKENS, context - longest)
        if longest + max(wanted, 1) > context:
            raise APIError(400, f"This model's maximum context length is {context} tokens, however you requested "
                                f"{longest + max(wanted, 1)} tokens ({longest} in your prompt; {max(wanted, 1)} for the "
                                "completion). Please reduce your prompt; or completion length.", param="prompt",
                           code="context_length_exceeded")
        temperature, top_p = _or(body.get("temperature"), 1.0), _or(body.get("top_p"), 1.0)
        if temperature < GREEDY_BELOW or top_p < GREEDY_BELOW:
            temperature = 0.0
        stop = body.get("stop")
        bias = self.chat._logit_bias(body)  # the one reading of logit_bias, shared with chat
        requests = [GenerationRequest(
            model=model, messages=[], max_tokens=wanted, temperature=temperature, top_p=top_p,
            stop=[stop] if isinstance(stop, str) else list(stop or []), seed=body.get("seed"), n=best_of,
            logprobs=logprobs is not None or best_of > n, top_logprobs=logprobs or 0, prompt_ids=ids,
            prompt_tokens=len(ids), presence_penalty=float(body.get("presence_penalty") or 0.0),
            frequency_penalty=float(body.get("frequency_penalty") or 0.0), logit_bias=bias,
        ) for ids in prompt_ids]
        return CompletionCall(model, requests, prompts, n=n, echo=bool(body.get("echo")), logprobs=logprobs,
                              stream=stream, include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
                              generate=wanted > 0)

    def _prompts(self, model: str, prompt: Any, need_text: bool) -> tuple[list[list[int]], list[str]]:
        """(token ids, text) of every prompt: strings are tokenised, token arrays checked against the
        model's vocabulary (and decoded only when ``echo`` or ``text_offset`` needs their text)."""
        if prompt is None:
            prompt = DEFAULT_PROMPT
        single = isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], int))
        if single:
            prompt = [prompt]
        if not prompt:
            raise APIError(400, "Invalid 'prompt': expected a string, a list of strings or token arrays, but got an "
                                "empty list.", param="prompt", code="invalid_value")
        ids, texts = [], []
        vocab = None
        for i, one in enumerate(prompt):
            if isinstance(one, str):
                ids.append(self.engine.encode_text(model, one))
                texts.append(one)
                continue
            vocab = vocab or self.engine.vocab_size(model)
            bad = next((t for t in one if not 0 <= t < vocab), None)
            if bad is not None:
                where = "prompt" if single else f"prompt[{i}]"
                raise APIError(400, f"Invalid '{where}': token id {bad} is outside the model's vocabulary "
                                    f"(0 to {vocab - 1}).", param=where, code="invalid_value")
            ids.append(list(one))
            texts.append(self.engine.decode_tokens(model, list(one)) if need_text else "")
        return ids, texts

    # -- answering ------------------------------------------------------------------------------

    async def _results(self, call: CompletionCall) -> list[list[Choice]]:
        if not call.generate:
            return [[Choice("", "length", 0, [] if r.logprobs else None) for _ in range(r.n)] for r in call.requests]
        futures = [self.engine.submit(r) for r in call.requests]
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))

    async def complete(self, call: CompletionCall) -> dict:
        results = await self._results(call)
        choices = []
        for p, generated in enumerate(results):
            for i, choice in enumerate(_best(generated, call.n)):
                prefix = call.prompts[p] if call.echo else ""
                logprobs = _logprobs(choice.logprobs, len(call.prompts[p]), b"") if call.logprobs is not None else None
                choices.append({"text": prefix + choice.text, "index": p * call.n + i, "logprobs": logprobs,
                                "finish_reason": choice.finish_reason})
        return {"id": completion_id(), "object": "text_completion", "created": call.created, "model": call.model,
                "choices": choices, "usage": usage(call.requests, results), "system_fingerprint": SYSTEM_FINGERPRINT}

    async def stream(self, call: CompletionCall) -> AsyncIterator[str]:
        """The answer as server-sent events: ``text_completion`` chunks (text deltas; with ``logprobs``,
        each delta with its tokens), each choice's last chunk with its ``finish_reason``, the usage
        chunk when ``stream_options.include_usage`` asks for it, then ``[DONE]``."""
        cid = completion_id()

        def sse(choices: list[dict], **extra) -> str:
            return f"data: {json.dumps(self._chunk(call, cid, choices, **extra))}\n\n"

        n = call.n
        sent_bytes: dict[int, bytes] = {}  # bytes of each choice's tokens sent so far
        pending: dict[int, str] = {}
        if call.echo:
            for p, prompt in enumerate(call.prompts):
                for i in range(n):
                    yield sse([_choice(p * n + i, prompt)])
        results: list[list[Choice]] = []
        try:
            async for kind, index, value in self._events(call):
                if kind == "text" and call.logprobs is None:
                    yield sse([_choice(index, value)])
                elif kind == "text":  # held until its tokens' logprobs arrive
                    pending[index] = pending.get(index, "") + value
                elif kind == "logprobs":
                    start = len(call.prompts[index // n])
                    yield sse([_choice(index, pending.pop(index, ""),
                                       _logprobs(value, start, sent_bytes.get(index, b"")))])
                    sent_bytes[index] = sent_bytes.get(index, b"") + b"".join(bytes(t.bytes or b"") for t in value)
                else:
                    results = value
        except Exception as e:  # the stream has started: report in-band, as OpenAI does
            error = APIError(500, f"generation failed: {type(e).__name__}", type="server_error")
            yield f"data: {json.dumps(error.body())}\n\n"
            return
        for p, generated in enumerate(results):
            for i, choice in enumerate(generated):
                index = p * n + i
                logprobs = None
                if call.logprobs is not None:
                    logprobs = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
                yield sse([_choice(index, pending.pop(index, ""), logprobs, choice.finish_reason)])
        if call.include_usage:
            yield sse([], usage=usage(call.requests, results))
        yield "data: [DONE]\n\n"

    async def _events(self, call: CompletionCall) -> AsyncIterator[tuple[str, int, Any]]:
        """``("text", index, text)`` and ``("logprobs", index, tokens)`` as the engine decodes every
        prompt's choices (numbered across prompts), then ``("done", -1, [choices per prompt])``."""
        if not call.generate:
            yield "done", -1, await self._results(call)
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def put(kind: str, base: int):
            return lambda index, value: loop.call_soon_threadsafe(queue.put_nowait, (kind, base + index, value))

        for p, request in enumerate(call.requests):
            request.on_delta = put("text", p * call.n)
            if call.logprobs is not None:
                request.on_logprobs = put("logprobs", p * call.n)
        futures = [self.engine.submit(r) for r in call.requests]
        for future in futures:
            future.add_done_callback(lambda f: loop.call_soon_threadsafe(queue.put_nowait, None))
        running = len(futures)
        while running:
            item = await queue.get()
            if item is None:
                running -= 1
            else:
                yield item
        yield "done", -1, [f.result() for f in futures]

    @staticmethod
    def _chunk(call: CompletionCall, cid: str, choices: list[dict], **extra) -> dict:
        return {"id": cid, "object": "text_completion", "created": call.created, "model": call.model,
                "choices": choices, "system_fingerprint": SYSTEM_FINGERPRINT, **extra}


def _or(value, default):
    return default if value is None else value


def _choice(index: int, text: str, logprobs: dict | None = None, finish_reason: str | None = None) -> dict:
    return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish_reason}


def _best(choices: list[Choice], n: int) -> list[Choice]:
    """The ``n`` choices with the highest mean token log probability (``best_of``), in their order."""
    if len(choices) <= n:
        return choices

    def mean(choice: Choice) -> float:
        values = [t.logprob for t in choice.logprobs or []]
        return sum(values) / len(values) if values else float("-inf")

    kept = sorted(sorted(range(len(choices)), key=lambda k: -mean(choices[k]))[:n])
    return [choices[k] for k in kept]


def _logprobs(tokens: list[TokenLogprob] | None, start: int, before: bytes) -> dict:
    """This endpoint's logprobs object: ``tokens``, ``token_logprobs``, ``top_logprobs`` (the
    alternatives and the chosen token, ``{token: logprob}``) and ``text_offset`` (where each token
    starts in the choice's text, in characters: ``start`` is the echoed prompt's length, ``before``
    the bytes of the choice's tokens already sent; a token inside a character starts with it)."""
    out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    done = before
    for token in tokens or []:
        out["tokens"].append(token.token)
        out["token_logprobs"].append(token.logprob)
        top: dict[str, float] = {}
        for text, _raw, logprob in token.top_logprobs:
            top.setdefault(text, logprob)
        top.setdefault(token.token, token.logprob)
        out["top_logprobs"].append(top)
        out["text_offset"].append(start + len(done.decode("utf-8", errors="ignore")))
        done += bytes(token.bytes or token.token.encode())
    return out


def usage(requests: list[GenerationRequest], results: list[list[Choice]]) -> dict:
    """Tokens of every prompt and of every generated candidate (``best_of`` ones included)."""
    prompt = sum(r.prompt_tokens for r in requests)
    completion = sum(c.completion_tokens for choices in results for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": sum(r.cached_tokens for r in requests), "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
