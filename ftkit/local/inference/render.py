"""OpenAI-shaped messages -> the local model's chat template, the same way for training and serving.

SmolLM2's chat template knows only ``role`` and string ``content``. OpenAI messages also carry
tool definitions, assistant tool calls, tool results, content parts and ``weight``. This module
maps them onto plain text consistently:

* tools are described in the system message, inside ``<tools>…</tools>``;
* an assistant tool call becomes ``<tool_call>{"name": …, "arguments": {…}}</tool_call>``, which
  :class:`ToolCallReader` (whole answers and streams alike) and :func:`parse_tool_calls` turn back
  into OpenAI ``tool_calls`` when the model generates it;
* a tool result is a ``tool`` turn; content parts are joined text; ``developer`` is ``system``.

:func:`encode_for_training` tokenises an example and marks which tokens are learned: the
assistant turns (their text and end-of-turn token) whose ``weight`` is not 0.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

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


TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
#: Most calls in one answer when parallel calls are allowed: a small model may otherwise repeat
#: calls until its token budget runs out (the grammar of a forced call allows this many, the
#: reader reports no more; ``max_calls`` in a grammar spec lowers it).
MAX_PARALLEL_CALLS = 8
# the start of a call as the model writes it (json.dumps' layout, what training and the grammar use;
# other whitespace is read too): once it is whole, the call's name is known
_CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')


def _new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


class ToolCallReader:
    """Reads a generated answer as it grows: its content, and the tool calls written in it as
    ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks, each call reported as soon
    as its name is whole and its arguments fragment by fragment (as the hosted API streams them).

    :meth:`feed` takes the next piece of text, :meth:`finish` says the answer is over; both return
    events:

    * ``("text", text)`` -- content (outside calls; leading and trailing whitespace dropped, and
      text that may be the start of ``<tool_call>`` held back until it is clear);
    * ``("call", index, call_id, name)`` -- a call begins;
    * ``("arguments", index, fragment)`` -- the next piece of its arguments (the JSON as written);
    * ``("done", index, whole)`` -- the call is over; ``whole`` False when the answer ended inside it
      (cut off by ``max_tokens``: its arguments are what was written).

    A call identical to an earlier one of the same answer is dropped (it is held back while it
    could still turn out to be one), as is every call past ``max_calls`` and a block that is not a
    call. Nothing of the markup ever reaches the content. The chat and Responses services read
    whole answers and streams with the same reader, so the two always agree.
    """

    def __init__(self, max_calls: int | None = None) -> None:
        self.max_calls = max_calls
        self.content = ""  # the content so far
        self.calls: list[dict] = []  # {"id", "name", "arguments", "whole"} per reported call
        self._buffer = ""  # text not yet read
        self._block: str | None = None  # the text of the block being read, None outside blocks
        self._head: re.Match | None = None
        self._sent = 0  # characters of the block's arguments already reported
        self._scan = _ValueEnd()
        self._reported = False  # the current block has been reported as a call
        self._blocks: list[str] = []  # the text of every call reported (to drop repeats)
        self._space = ""  # whitespace held back: sent only if more content follows

    # -- reading --------------------------------------------------------------------------------

    def feed(self, text: str) -> list[tuple]:
        self._buffer += text
        events: list[tuple] = []
        while self._buffer:
            if self._block is None:
                at = self._buffer.find(TOOL_CALL_OPEN)
                if at < 0:
                    keep = _partial_suffix(self._buffer, TOOL_CALL_OPEN)
                    self._text(self._buffer[: len(self._buffer) - keep], events)
                    self._buffer = self._buffer[len(self._buffer) - keep :]
                    break
                self._text(self._buffer[:at], events)
                self._buffer = self._buffer[at + len(TOOL_CALL_OPEN) :]
                self._start_block()
            else:
                at = self._buffer.find(TOOL_CALL_CLOSE)
                if at < 0:
                    keep = _partial_suffix(self._buffer, TOOL_CALL_CLOSE)
                    self._block += self._buffer[: len(self._buffer) - keep]
                    self._buffer = self._buffer[len(self._buffer) - keep :]
                    self._read_block(events)
                    break
                self._block += self._buffer[:at]
                self._buffer = self._buffer[at + len(TOOL_CALL_CLOSE) :]
                self._read_block(events)
                self._end_block(events, whole=True)
        return events

    def finish(self, cut: bool = False) -> list[tuple]:
        """The answer is over: what was held back, and the end of a call it was cut inside.
        ``cut``: by ``max_tokens``; text held back as the possible start of a call is then dropped
        (it was one: ``<tool_``), else it is content."""
        events: list[tuple] = []
        if self._block is None:
            if not cut:
                self._text(self._buffer, events)
        else:
            self._block += self._buffer
            self._read_block(events)
            self._end_block(events, whole=False)
        self._buffer = ""
        return events

    def tool_calls(self) -> list[dict]:
        """The calls in the chat completions shape."""
        return [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in self.calls]

    # -- inside -------------------------------------------------------------------------------

    def _text(self, text: str, events: list) -> None:
        if not self.content:
            text = (self._space + text).lstrip()
            self._space = ""
        body = text.rstrip()
        if body:
            piece = self._space + body
            self.content += piece
            events.append(("text", piece))
            self._space = text[len(body) :]
        else:
            self._space += text

    def _start_block(self) -> None:
        self._block, self._head, self._sent, self._reported = "", None, 0, False
        self._scan = _ValueEnd()

    def _full(self) -> bool:
        return self.max_calls is not None and len(self.calls) >= self.max_calls

    def _maybe_repeat(self) -> bool:
        text = self._block.lstrip()
        return any(block.startswith(text) for block in self._blocks)

    def _read_block(self, events: list) -> None:
        """Report what can be reported of the block so far: its start, then its arguments."""
        if not self._reported and self._full():
            return
        if self._head is None:
            self._head = _CALL_HEAD.match(self._block)
            if self._head is None:
                return
        rest = self._block[self._head.end() :]
        if not rest.lstrip()[:1] or rest.lstrip()[0] not in "{[":
            return  # arguments as a string or another value: read whole at the end of the block
        if not self._reported:
            if self._maybe_repeat():
                return
            try:
                name = json.loads('"' + self._head.group(1) + '"')
            except ValueError:
                return
            self._report(events, name)
            self._sent = len(rest) - len(rest.lstrip())
        upto = self._scan.feed(rest, self._sent)
        if upto > self._sent:
            self._argument(events, rest[self._sent : upto])
            self._sent = upto

    def _report(self, events: list, name: str) -> None:
        self.calls.append({"id": _new_call_id(), "name": name, "arguments": "", "whole": False})
        self._reported = True
        events.append(("call", len(self.calls) - 1, self.calls[-1]["id"], name))

    def _argument(self, events: list, fragment: str) -> None:
        self.calls[-1]["arguments"] += fragment
        events.append(("arguments", len(self.calls) - 1, fragment))

    def _end_block(self, events: list, *, whole: bool) -> None:
        block = self._block.strip()
        if not self._reported and not self._full() and not (whole and block in self._blocks):
            # not reported while it was written: a repeat until it diverged, or not in the usual
            # layout; read it whole
            name, arguments = _read_call(block) if whole else (None, None)
            if name is None and self._head is not None and not self._maybe_repeat():
                try:  # cut off inside the arguments: the call as far as it was written
                    name = json.loads('"' + self._head.group(1) + '"')
                except ValueError:
                    name = None
                arguments = self._block[self._head.end() :].lstrip()
            if name is not None:
                self._report(events, name)
                self._sent = 0
                if arguments:
                    self._argument(events, arguments)
        elif self._reported:
            rest = self._block[self._head.end() :]
            end = self._scan.end if whole and self._scan.end is not None else len(rest)
            if end > self._sent:
                self._argument(events, rest[self._sent : end])
        if self._reported:
            self.calls[-1]["whole"] = whole
            self._blocks.append(block)
            events.append(("done", len(self.calls) - 1, whole))
        self._block = None


class _ValueEnd:
    """Finds where a JSON object or array ends, reading it piece by piece (strings and escapes too)."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.pos = 0  # characters read
        self.end: int | None = None  # where the value ends, once it has

    def feed(self, text: str, sent: int) -> int:
        """Read ``text`` (the whole value so far, leading whitespace included); returns how far
        it may be reported: up to the value's end, once it ends."""
        if self.end is not None:
            return self.end
        lead = len(text) - len(text.lstrip())
        self.pos = max(self.pos, lead)
        while self.pos < len(text):
            ch = text[self.pos]
            self.pos += 1
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif ch == "\\":
                    self.escaped = True
                elif ch == '"':
                    self.in_string = False
            elif ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth == 0:
                    self.end = self.pos
                    return self.end
        return len(text)


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of ``text`` that is a beginning of ``marker``."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


def _read_call(block: str) -> tuple[str | None, str | None]:
    """(name, arguments as JSON text) of a whole block, or (None, None) if it is not a call."""
    try:
        payload = json.loads(block)
    except ValueError:
        return None, None
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        return None, None
    args = payload.get("arguments", {})
    return payload["name"], args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)


def parse_tool_calls(text: str, max_calls: int | None = None) -> tuple[str | None, list[dict]]:
    """Split a whole generated text into (content, OpenAI tool_calls), as :class:`ToolCallReader`
    reads it; the text unchanged when it has no ``<tool_call>`` block."""
    if TOOL_CALL_OPEN not in text:
        return text, []
    reader = ToolCallReader(max_calls)
    reader.feed(text)
    reader.finish(cut=False)
    return (reader.content or None), reader.tool_calls()


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
        from ...tokens import ExampleTokens

        out = []
        for ex in examples:
            try:
                ids, labels, total = encode_for_training(self.tokenizer, ex, 10**9)
                trained = sum(1 for label in labels if label != IGNORE_INDEX)
            except Exception:  # noqa: BLE001 -- malformed examples are reported by the validator
                total = trained = 0
            out.append(ExampleTokens(total=total, trained=trained))
        return out
