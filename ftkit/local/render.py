"""OpenAI-shaped messages -> the local model's chat template, the same way for training and serving.

SmolLM2's chat template knows only ``role`` and string ``content``. OpenAI messages also carry
tool definitions, assistant tool calls, tool results, content parts and ``weight``. This module
maps them onto plain text consistently:

* tools are described in the system message, inside ``<tools>…</tools>``;
* an assistant tool call becomes ``<tool_call>{"name": …, "arguments": {…}}</tool_call>``, which
  :func:`parse_tool_calls` turns back into OpenAI ``tool_calls`` when the model generates it;
* a tool result is a ``tool`` turn; content parts are joined text; ``developer`` is ``system``.

:func:`encode_for_training` tokenises an example and marks which tokens are learned: the
assistant turns (their text and end-of-turn token) whose ``weight`` is not 0.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

TOOL_CALL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)
IGNORE_INDEX = -100


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content)


def _tools_text(tools: list | None, functions: list | None) -> str:
    specs = []
    for t in tools or []:
        if isinstance(t, dict) and isinstance(t.get("function"), dict):
            specs.append(t["function"])
    specs.extend(f for f in functions or [] if isinstance(f, dict))
    if not specs:
        return ""
    return (
        "You can call these tools:\n<tools>\n"
        + "\n".join(json.dumps(s, ensure_ascii=False, sort_keys=True) for s in specs)
        + "\n</tools>\nTo call a tool, reply with <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call>."
    )


def _calls_text(message: dict) -> str:
    parts = []
    calls = list(message.get("tool_calls") or [])
    if message.get("function_call"):
        calls.append({"function": message["function_call"]})
    for call in calls:
        fn = call.get("function") or {}
        args = fn.get("arguments")
        try:
            args = json.loads(args) if isinstance(args, str) else args
        except ValueError:
            pass
        parts.append("<tool_call>" + json.dumps({"name": fn.get("name"), "arguments": args}, ensure_ascii=False)
                     + "</tool_call>")
    return "".join(parts)


def template_messages(messages: list[dict], tools: list | None = None, functions: list | None = None) -> list[dict]:
    """Plain ``{"role", "content"}`` messages for the chat template (see module docstring)."""
    out: list[dict] = []
    tools_text = _tools_text(tools, functions)
    for m in messages:
        role = m.get("role")
        role = "system" if role == "developer" else role
        role = "tool" if role == "function" else role
        content = _text(m.get("content"))
        if role == "assistant":
            calls = _calls_text(m)
            content = content + calls if content and calls else (content or calls)
        out.append({"role": role, "content": content})
    if tools_text:
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + tools_text}
        else:
            out.insert(0, {"role": "system", "content": tools_text})
    return out


def render_prompt(tokenizer, messages: list[dict], tools: list | None = None, functions: list | None = None) -> str:
    """The prompt text for generating the next assistant turn."""
    return tokenizer.apply_chat_template(
        template_messages(messages, tools, functions), tokenize=False, add_generation_prompt=True
    )


def encode_for_training(tokenizer, example: dict, max_tokens: int) -> tuple[list[int], list[int], int]:
    """(input_ids, labels, total tokens before truncation) for one SFT example.

    Labels are ``IGNORE_INDEX`` except on learned assistant turns. The spans come from rendering
    the conversation prefix by prefix: the text added by assistant turn *i* is everything between
    "messages[:i] + generation prompt" and "messages[:i+1]". That holds for any chat template
    that renders a prefix of the conversation as a prefix of the text.
    """
    messages = template_messages(example["messages"], example.get("tools"), example.get("functions"))
    original = example["messages"]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, (m, orig) in enumerate(zip(messages, _align(original, messages))):
        if m["role"] != "assistant" or (orig is not None and orig.get("weight", 1) == 0):
            continue
        start_text = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        end_text = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not full.startswith(end_text) or not end_text.startswith(start_text):
            raise ValueError("the chat template does not render prefixes consistently; cannot mask labels")
        a, b = len(start_text), len(end_text)
        spans.append((a, a + len(full[a:b].rstrip())))  # the newline after end-of-turn is template
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    for k, (s, _end) in enumerate(offsets):
        for a, b in spans:
            # a token is learned if it starts inside the assistant's text (incl. end-of-turn)
            if a <= s < b:
                labels[k] = ids[k]
                break
    total = len(ids)
    return ids[:max_tokens], labels[:max_tokens], total


def _align(original: list[dict], rendered: list[dict]) -> list[dict | None]:
    """Original message for each rendered one (a system message may have been prepended)."""
    offset = len(rendered) - len(original)
    return [None] * offset + list(original)


def parse_tool_calls(text: str) -> tuple[str | None, list[dict]]:
    """Split generated text into (content, OpenAI tool_calls) if it contains ``<tool_call>`` blocks."""
    calls = []
    for match in TOOL_CALL_RE.finditer(text):
        try:
            payload = json.loads(match.group(1))
        except ValueError:
            continue
        if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
            continue
        args = payload.get("arguments", {})
        calls.append({
            "id": "call_" + secrets.token_hex(12),
            "type": "function",
            "function": {"name": payload["name"],
                         "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)},
        })
    if not calls:
        return text, []
    content = TOOL_CALL_RE.sub("", text).strip()
    return (content or None), calls


class HFTokenCounter:
    """Token counts with a local model's own tokenizer, for :func:`ftkit.validation.validate`.

    ``total`` is what training sees (before truncation), ``trained`` the learned assistant tokens.
    A malformed example counts 0 -- the validator reports why it is malformed.
    """

    def __init__(self, tokenizer, max_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.encoding_name = getattr(tokenizer, "name_or_path", "local tokenizer")

    def count_examples(self, examples):
        from ..tokens import ExampleTokens

        out = []
        for ex in examples:
            try:
                ids, labels, total = encode_for_training(self.tokenizer, ex, 10**9)
                trained = sum(1 for label in labels if label != IGNORE_INDEX)
            except Exception:  # noqa: BLE001 -- malformed examples are reported by the validator
                total = trained = 0
            out.append(ExampleTokens(total=total, trained=trained))
        return out
