"""Chat completions: request checking and the response / stream-chunk shapes OpenAI returns."""

from __future__ import annotations

import secrets
import time
from typing import Any

from .engine import Choice, GenerationRequest
from .render import parse_tool_calls
from .service import APIError

SYSTEM_FINGERPRINT = "fp_ftkit_local"
DEFAULT_MAX_TOKENS = 512
MAX_N = 16
ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


def _number(body: dict, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise APIError(400, f"Invalid '{name}': expected a number between {low} and {high}, got {value!r}",
                       param=name, code="invalid_value")
    return float(value)


def parse_request(body: dict) -> GenerationRequest:
    """A :class:`GenerationRequest` from a chat completion body, or an :class:`APIError`."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(400, "Missing required parameter: 'model'", param="model", code="missing_required_parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "Invalid 'messages': expected a non-empty array of messages", param="messages",
                       code="invalid_value")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise APIError(400, f"Invalid 'messages[{i}]': each message needs a role "
                                f"({', '.join(sorted(ROLES))})", param=f"messages[{i}].role", code="invalid_value")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        raise APIError(400, f"Invalid '{param}': expected a positive integer", param=param, code="invalid_value")
    n = body.get("n") or 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise APIError(400, f"Invalid 'n': expected an integer between 1 and {MAX_N}", param="n", code="invalid_value")
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    elif not (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop)):
        raise APIError(400, "Invalid 'stop': a string or up to 4 strings", param="stop", code="invalid_value")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise APIError(400, "Invalid 'seed': expected an integer", param="seed", code="invalid_value")
    return GenerationRequest(
        model=model, messages=messages, max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0), top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        stop=stop, seed=seed, n=n, tools=body.get("tools"), functions=body.get("functions"),
    )


def completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def _message(choice: Choice, with_tools: bool) -> tuple[dict, str]:
    content, calls = parse_tool_calls(choice.text) if with_tools else (choice.text, [])
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    if calls:
        message["tool_calls"] = calls
        return message, "tool_calls"
    return message, choice.finish_reason


def usage(request: GenerationRequest, choices: list[Choice]) -> dict:
    completion = sum(c.completion_tokens for c in choices)
    return {
        "prompt_tokens": request.prompt_tokens, "completion_tokens": completion,
        "total_tokens": request.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


def response(request: GenerationRequest, choices: list[Choice], cid: str | None = None) -> dict:
    with_tools = bool(request.tools or request.functions)
    out = []
    for i, choice in enumerate(choices):
        message, finish = _message(choice, with_tools)
        out.append({"index": i, "message": message, "logprobs": None, "finish_reason": finish})
    return {
        "id": cid or completion_id(), "object": "chat.completion", "created": int(time.time()),
        "model": request.model, "choices": out, "usage": usage(request, choices),
        "service_tier": "default", "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def chunk(request: GenerationRequest, cid: str, created: int, choices: list[dict], usage_: dict | None = None) -> dict:
    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": request.model,
            "choices": choices, "service_tier": "default", "system_fingerprint": SYSTEM_FINGERPRINT}
    if usage_ is not None:
        body["usage"] = usage_
    return body
