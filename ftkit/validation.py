"""Validation of fine-tuning files: every problem, with its line, code and field.

Taught in notebooks/02_data_formatting.ipynb; exposed as :func:`ftkit.data.validate` and as
``python -m ftkit validate FILE``. The local server validates uploaded training files with it.

Design: one streaming pass over the file in binary. Each line is decoded, parsed and checked;
the texts of a chunk of examples are then token-counted in one batch. Memory holds a few
integers per example, never the file. Nothing is ever written to the input.

Hostile input is bounded: a line is read up to ``max_line_bytes`` (default 16 MB, the CLI's
``--max-line-mb``) and a longer one is skipped as an error of that line without being held in
memory; a line nested deeper than ``max_depth`` (default 128 levels, the bound serde_json uses)
is an error of that line, measured without recursion before anything recursive (json, a
comparison, the token counter) sees it; only regular files are read (a FIFO, a device such as
/dev/zero or a directory is refused at once).

Why one module of ~1,000 lines: the reader, the checks and the table of codes (:data:`CODES`)
are one streaming pass that must stay in step -- each check emits a code the table explains, on
the line the reader is at -- and the CLI and notebook 02 quote the codes from here.
"""

from __future__ import annotations

import difflib
import io
import json
import os
import re
import stat
from array import array
from collections import Counter, deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from orjson import loads as _fast_loads  # ~2x json; lines it refuses go through json

from . import methods
from .tokens import ExampleTokens, TokenCounter, describe

__all__ = ["CODES", "Problem", "ValidationReport", "UnusableInputError", "validate"]

ERROR, WARNING = "error", "warning"

#: Every code the validator reports: severity and what it means. The first seven are the
#: OpenAI cookbook's; the rest cover what its recipe misses.
CODES: dict[str, tuple[str, str]] = {
    "data_type": (ERROR, "the example (or a message) is not a JSON object"),
    "missing_messages_list": (ERROR, "no non-empty 'messages' list"),
    "message_missing_key": (ERROR, "a message lacks a required key ('role', 'content', 'tool_call_id')"),
    "message_unrecognized_key": (ERROR, "a message has a key the API does not accept"),
    "unrecognized_role": (ERROR, "a message role other than system, developer, user, assistant, tool, function"),
    "missing_content": (ERROR, "content is null, empty or not text where text is required"),
    "example_missing_assistant_message": (ERROR, "no assistant message to learn from"),
    "invalid_json": (ERROR, "the line is not valid JSON"),
    "invalid_utf8": (ERROR, "the line is not valid UTF-8 text"),
    "line_too_long": (ERROR, "the line is longer than the per-line limit (max_line_bytes, --max-line-mb)"),
    "nesting_too_deep": (ERROR, "the JSON is nested deeper than the limit (max_depth levels)"),
    "utf8_bom": (ERROR, "the file starts with a byte-order mark (BOM)"),
    "empty_file": (ERROR, "the file has no examples"),
    "too_few_examples": (ERROR, "fewer than the API's minimum of 10 examples"),
    "invalid_weight": (ERROR, "'weight' must be 0 or 1"),
    "weight_not_on_assistant": (ERROR, "'weight' is only allowed on assistant messages"),
    "invalid_content": (ERROR, "a content part is malformed (only text, and images from users)"),
    "invalid_tool_calls": (ERROR, "malformed tool_calls / function_call on an assistant message"),
    "invalid_tools": (ERROR, "malformed 'tools', 'functions' or 'parallel_tool_calls'"),
    "invalid_field": (ERROR, "an optional field has the wrong type (name, refusal, tool_call_id)"),
    "legacy_prompt_completion": (ERROR, "a legacy prompt/completion example; convert it to chat"),
    "preference_missing_key": (ERROR, "a DPO example lacks input, preferred_output or non_preferred_output"),
    "preference_invalid_input": (ERROR, "a DPO input must be an object with messages ending in a user turn"),
    "preference_invalid_output": (ERROR, "a DPO output must be a list of exactly one assistant message"),
    "mixed_example_types": (ERROR, "chat (SFT) and preference (DPO) examples in one file"),
    "example_unrecognized_key": (WARNING, "the example has a top-level key the API ignores or rejects"),
    "blank_line": (WARNING, "a blank line (skipped)"),
    "example_too_long": (WARNING, "longer than the model's per-example limit: it will be truncated"),
    "duplicate_example": (WARNING, "the same example appears earlier in the file"),
    "missing_system_message": (WARNING, "no system message"),
    "empty_assistant_message": (WARNING, "an assistant answer is empty"),
    "no_trained_messages": (WARNING, "every assistant message has weight 0: nothing is learned"),
    "assistant_message_too_long": (WARNING, "assistant answer far longer than the others in the file"),
    "preference_identical_outputs": (WARNING, "preferred and non-preferred outputs are identical"),
    "reinforcement_last_message": (ERROR, "an RFT example must end with a user turn for the model to answer"),
    "missing_grader_field": (ERROR, "an RFT example lacks a field the grader reads ({{ item.<field> }})"),
    "unknown_tool_call_id": (WARNING, "a tool message answers a tool call id not seen before it"),
}

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
MESSAGE_KEYS = {"role", "content", "name", "weight", "tool_calls", "function_call", "tool_call_id", "refusal"}
CHAT_KEYS = {"messages", "tools", "functions", "parallel_tool_calls"}
PREFERENCE_KEYS = {"input", "preferred_output", "non_preferred_output"}
MIN_EXAMPLES = 10
#: The fewest examples a job's file may hold, by role: the API's (and the local server's) minimum
#: is 10 for a training file and 1 for a validation file (``ftkit validate --role validation``).
MIN_EXAMPLES_FOR = {"training": MIN_EXAMPLES, "validation": 1}
BOM = b"\xef\xbb\xbf"
#: Longest line read (bytes, newline excluded). A fine-tuning example is at most some 65k-200k
#: tokens (well under 2 MB of text); the margin leaves room for a base64 image or two.
MAX_LINE_BYTES = 16_000_000
#: Deepest JSON nesting accepted. Real examples (tool schemas included) stay far below it; the
#: parsers' own limits (orjson 1024, json about 1000 with Python's recursion limit) are far above.
MAX_DEPTH = 128


@dataclass(frozen=True)
class Problem:
    """One problem in a training file. ``line`` is 1-based (``None`` for the whole file)."""

    line: int | None
    code: str
    field: str | None
    message: str
    severity: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        at = f" {self.field}:" if self.field else ""
        return f"{where}: {self.severity} {self.code}:{at} {self.message}"


class UnusableInputError(OSError):
    """The input cannot be read at all (missing, no permission, or not a regular file: a directory,
    a FIFO, a device such as /dev/zero)."""


@dataclass
class ValidationReport:
    """What :func:`validate` found. ``ok`` is true when there are no errors (warnings allowed)."""

    source: str
    model: str | None
    encoding: str | None
    max_example_tokens: int | None
    n_lines: int = 0
    n_examples: int = 0
    kind: str | None = None  # "chat", "preference", "reinforcement" or "mixed"
    problems: list[Problem] = field(default_factory=list)
    example_lines: array = field(default_factory=lambda: array("q"))
    total_tokens: array = field(default_factory=lambda: array("q"))
    trained_tokens: array = field(default_factory=lambda: array("q"))
    messages_per_example: array = field(default_factory=lambda: array("q"))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def codes(self) -> Counter:
        """How many times each code occurs."""
        return Counter(p.code for p in self.problems)

    def to_dataframe(self):
        """Every problem as a row: line, severity, code, field, message."""
        import pandas as pd

        return pd.DataFrame(
            [(p.line, p.severity, p.code, p.field, p.message) for p in self.problems],
            columns=["line", "severity", "code", "field", "message"],
        )

    def summary_table(self):
        """One row per code: severity, count, first lines, meaning (errors first)."""
        import pandas as pd

        lines: dict[str, list[int]] = {}
        for p in self.problems:
            lines.setdefault(p.code, [])
            if p.line is not None and len(lines[p.code]) < 5:
                lines[p.code].append(p.line)
        counts = self.codes()
        rows = [
            (code, CODES[code][0], counts[code], lines[code], CODES[code][1])
            for code in sorted(counts, key=lambda c: (CODES[c][0] != ERROR, -counts[c], c))
        ]
        return pd.DataFrame(rows, columns=["code", "severity", "count", "first_lines", "meaning"])

    def token_counts(self):
        """Per-example token counts (estimates): line, total, trained, messages."""
        import pandas as pd

        return pd.DataFrame(
            {
                "line": np.frombuffer(self.example_lines, dtype=np.int64) if self.example_lines else [],
                "total": np.frombuffer(self.total_tokens, dtype=np.int64) if self.total_tokens else [],
                "trained": np.frombuffer(self.trained_tokens, dtype=np.int64) if self.trained_tokens else [],
                "messages": np.frombuffer(self.messages_per_example, dtype=np.int64)
                if self.messages_per_example
                else [],
            }
        )

    def token_stats(self) -> dict[str, dict[str, float]]:
        """Distribution statistics (p10 … p90) of total and trained tokens per example."""
        return {
            "total_tokens": describe(self.total_tokens),
            "trained_tokens": describe(self.trained_tokens),
            "messages": describe(self.messages_per_example),
        }

    @property
    def total_token_count(self) -> int:
        """Tokens in the whole file: what one training epoch is billed for (an estimate)."""
        return int(sum(self.total_tokens))

    def billed_tokens(self, n_epochs: int = 1) -> int:
        """Tokens billed for ``n_epochs``: Σ min(limit, tokens per example) × epochs."""
        limit = self.max_example_tokens
        per_example = (min(t, limit) if limit else t for t in self.total_tokens)
        return int(sum(per_example)) * n_epochs

    def summary(self, max_lines: int = 5) -> str:
        """A readable summary: verdict, counts per code with first lines, token statistics."""
        out = io.StringIO()
        verdict = "OK" if self.ok else "INVALID"
        n_err, n_warn = len(self.errors), len(self.warnings)
        out.write(
            f"{self.source}: {verdict} -- {self.n_examples} examples"
            f"{f' ({self.kind})' if self.kind else ''}, {n_err} errors, {n_warn} warnings\n"
        )
        if self.encoding:
            model = f"model {self.model}, " if self.model else "no model given, "
            limit = (
                f"limit {self.max_example_tokens:,} tokens per example"
                if self.max_example_tokens
                else "no per-example limit checked (pass --model)"
            )
            out.write(f"  tokens counted with {self.encoding} ({model}{limit})\n")
        if self.problems:
            out.write("\n")
            by_code: dict[str, list[Problem]] = {}
            for p in self.problems:
                by_code.setdefault(p.code, []).append(p)
            order = sorted(by_code, key=lambda c: (CODES[c][0] != ERROR, -len(by_code[c]), c))
            for code in order:
                probs = by_code[code]
                out.write(f"  {CODES[code][0]:7} {code} x{len(probs)}: {CODES[code][1]}\n")
                for p in probs[:max_lines]:
                    where = f"line {p.line}" if p.line is not None else "file"
                    at = f" [{p.field}]" if p.field else ""
                    out.write(f"      {where}{at}: {p.message}\n")
                if len(probs) > max_lines:
                    out.write(f"      ... and {len(probs) - max_lines} more\n")
        if self.total_tokens:
            stats = describe(self.total_tokens)
            trained = describe(self.trained_tokens)
            out.write(
                f"\n  tokens per example (estimate): mean {stats['mean']:.0f}, p10 {stats['p10']:.0f}, "
                f"median {stats['p50']:.0f}, p90 {stats['p90']:.0f}, max {stats['max']:.0f}\n"
                f"  trained (assistant) tokens per example: mean {trained['mean']:.0f}, "
                f"max {trained['max']:.0f}\n"
                f"  tokens in file: {self.total_token_count:,} (billed once per epoch)\n"
            )
        return out.getvalue()

    def raise_for_errors(self) -> ValidationReport:
        """Raise :class:`InvalidTrainingFile` with the summary if there are errors."""
        if not self.ok:
            raise InvalidTrainingFile(self)
        return self

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        import html

        head = html.escape(self.summary(max_lines=0).split("\n\n")[0])
        table = self.summary_table().to_html(index=False) if self.problems else "<p>No problems.</p>"
        return f"<pre>{head}</pre>{table}"


class InvalidTrainingFile(ValueError):
    """A training file has errors; ``.report`` holds every problem."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        first = report.errors[0]
        super().__init__(f"{report.source} is invalid ({len(report.errors)} errors); first: {first}")


# ---------------------------------------------------------------------------------------------
# Checks on one parsed example. They append problems and return the example's kind.


class _Checker:
    def __init__(self, problems: list[Problem], method: str | None = None,
                 grader_fields: Iterable[str] = ()) -> None:
        self.problems = problems
        self.line = 0
        self.method = method
        # a method that trains on prompts to answer (reinforcement), not on finished conversations
        self.prompts_only = method is not None and methods.get(method).file_kind == methods.PROMPT_FILE
        self.grader_fields = sorted(set(grader_fields))
        # After example(): True when the example is only a list of plain text messages, so it
        # nests three levels at most -- the common case, which needs no depth check.
        self.shallow = False
        self._all_plain = False

    def add(self, code: str, field: str | None, message: str) -> None:
        self.problems.append(Problem(self.line, code, field, message, CODES[code][0]))

    def example(self, ex) -> str | None:
        self.shallow = False
        if not isinstance(ex, dict):
            self.add("data_type", None, f"expected a JSON object, got {_type_name(ex)}")
            return None
        if "messages" in ex and self.prompts_only:
            self.reinforcement(ex)
            return methods.PROMPT_FILE
        if "messages" in ex:
            self.chat(ex)
            return methods.CHAT_FILE
        if PREFERENCE_KEYS & ex.keys():
            self.preference(ex)
            return methods.PREFERENCE_FILE
        if "prompt" in ex or "completion" in ex:
            self.add(
                "legacy_prompt_completion",
                None,
                "this is the legacy prompt/completion format; chat models need {'messages': [...]}"
                " -- convert with ftkit.data.from_prompt_completion",
            )
            return None
        keys = ", ".join(sorted(ex)) or "none"
        self.add("missing_messages_list", "messages", f"no 'messages' key (keys present: {keys})")
        return None

    def chat(self, ex: dict) -> None:
        if not CHAT_KEYS.issuperset(ex):
            for key in sorted(ex.keys() - CHAT_KEYS):
                self.add("example_unrecognized_key", key, f"unexpected top-level key {key!r}")
        tools_ok = self.tools(ex, "") if ("tools" in ex or "functions" in ex or "parallel_tool_calls" in ex) else True
        messages = ex.get("messages")
        if not isinstance(messages, list) or not messages:
            what = "an empty list" if messages == [] else _type_name(messages)
            self.add("missing_messages_list", "messages", f"'messages' must be a non-empty list, got {what}")
            return
        self.messages(messages, "messages", tools_ok)
        self.shallow = self._all_plain and len(ex) == 1
        has_system = has_assistant = trained = False
        for m in messages:
            if isinstance(m, dict):
                role = m.get("role")
                if role == "assistant":
                    has_assistant = True
                    trained = trained or m.get("weight", 1) != 0
                elif role == "system" or role == "developer":
                    has_system = True
        if not has_assistant:
            self.add("example_missing_assistant_message", "messages", "no message has role 'assistant'")
        elif not trained:
            self.add("no_trained_messages", "messages", "every assistant message has weight 0")
        if not has_system and any(isinstance(m, dict) for m in messages):
            self.add("missing_system_message", "messages", "no system message")

    def reinforcement(self, ex: dict) -> None:
        """An RFT line: a conversation ending with a user turn, plus the fields the grader reads
        (any other top-level key is the grader's business, so none is 'unrecognized')."""
        tools_ok = self.tools(ex, "") if ("tools" in ex or "functions" in ex or "parallel_tool_calls" in ex) else True
        messages = ex.get("messages")
        if not isinstance(messages, list) or not messages:
            what = "an empty list" if messages == [] else _type_name(messages)
            self.add("missing_messages_list", "messages", f"'messages' must be a non-empty list, got {what}")
        else:
            self.messages(messages, "messages", tools_ok)
            last = messages[-1]
            role = last.get("role") if isinstance(last, dict) else None
            if role != "user":
                self.add("reinforcement_last_message", f"messages[{len(messages) - 1}].role",
                         f"the last message is from {role!r}; it must be the user's turn the model answers")
            if not any(isinstance(m, dict) and m.get("role") in ("system", "developer") for m in messages):
                self.add("missing_system_message", "messages", "no system message")
        for name in self.grader_fields:
            if name not in ex:
                self.add("missing_grader_field", name, f"the grader reads {{{{ item.{name} }}}} but this line has no {name!r}")

    def messages(self, messages: list, path: str, tools_ok: bool = True) -> None:
        seen_call_ids: set[str] = set()
        self._all_plain = True
        for i, m in enumerate(messages):
            if _plainly_valid(m):
                continue  # the common case, checked without building field paths
            self._all_plain = False
            p = f"{path}[{i}]"
            if not isinstance(m, dict):
                self.add("data_type", p, f"a message must be an object, got {_type_name(m)}")
                continue
            for key in sorted(m.keys() - MESSAGE_KEYS):
                self.add("message_unrecognized_key", f"{p}.{key}", f"unrecognized key {key!r}{_did_you_mean(key, MESSAGE_KEYS)}")
            role = m.get("role")
            if "role" not in m:
                self.add("message_missing_key", f"{p}.role", "message has no 'role'")
            elif role not in ROLES:
                self.add("unrecognized_role", f"{p}.role", f"unrecognized role {role!r}{_did_you_mean(role, ROLES)}")
            self.content(m, p, role)
            if "weight" in m:
                w = m["weight"]
                if role not in ROLES:
                    pass  # the role is already reported; a second error about it is noise
                elif role != "assistant":
                    self.add("weight_not_on_assistant", f"{p}.weight", f"'weight' on a {role!r} message")
                elif isinstance(w, bool) or w not in (0, 1):
                    self.add("invalid_weight", f"{p}.weight", f"weight must be 0 or 1, got {w!r}")
            if "name" in m and not isinstance(m["name"], str):
                self.add("invalid_field", f"{p}.name", f"'name' must be a string, got {_type_name(m['name'])}")
            if "refusal" in m and m["refusal"] is not None:
                if role != "assistant":
                    self.add("message_unrecognized_key", f"{p}.refusal", "'refusal' is only for assistant messages")
                elif not isinstance(m["refusal"], str):
                    self.add("invalid_field", f"{p}.refusal", "'refusal' must be a string")
            if role == "assistant":
                seen_call_ids |= self.tool_calls(m, p)
            elif "tool_calls" in m or "function_call" in m:
                key = "tool_calls" if "tool_calls" in m else "function_call"
                self.add("invalid_tool_calls", f"{p}.{key}", f"'{key}' is only for assistant messages")
            if role == "tool":
                tid = m.get("tool_call_id")
                if "tool_call_id" not in m:
                    self.add("message_missing_key", f"{p}.tool_call_id", "a tool message needs 'tool_call_id'")
                elif not isinstance(tid, str) or not tid:
                    self.add("invalid_field", f"{p}.tool_call_id", "'tool_call_id' must be a non-empty string")
                elif tid not in seen_call_ids:
                    self.add("unknown_tool_call_id", f"{p}.tool_call_id", f"no earlier tool call has id {tid!r}")
            elif "tool_call_id" in m:
                self.add("message_unrecognized_key", f"{p}.tool_call_id", "'tool_call_id' is only for tool messages")

    def content(self, m: dict, p: str, role) -> None:
        has_calls = bool(m.get("tool_calls")) or bool(m.get("function_call"))
        if "content" not in m:
            if role == "assistant" and (has_calls or m.get("refusal")):
                return  # an assistant message that only calls tools (or refuses) needs no content
            self.add("message_missing_key", f"{p}.content", "message has no 'content'")
            return
        c = m["content"]
        if c is None:
            if role == "assistant" and (has_calls or m.get("refusal")):
                return
            self.add("missing_content", f"{p}.content", "content is null")
        elif isinstance(c, str):
            if role == "assistant" and not c.strip() and not has_calls:
                self.add("empty_assistant_message", f"{p}.content", "the assistant answer is empty")
            elif role != "assistant" and not c:
                self.add("missing_content", f"{p}.content", "content is an empty string")
        elif isinstance(c, list):
            if not c:
                self.add("missing_content", f"{p}.content", "content is an empty list")
            for j, part in enumerate(c):
                self.content_part(part, f"{p}.content[{j}]", role)
        else:
            self.add("missing_content", f"{p}.content", f"content must be a string, got {_type_name(c)}")

    def content_part(self, part, p: str, role) -> None:
        if not isinstance(part, dict):
            self.add("invalid_content", p, f"a content part must be an object, got {_type_name(part)}")
            return
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                self.add("invalid_content", f"{p}.text", "a text part needs a string 'text'")
        elif kind == "image_url":
            if role != "user":
                self.add("invalid_content", p, "images are only allowed in user messages")
            url = part.get("image_url")
            if not isinstance(url, dict) or not isinstance(url.get("url"), str):
                self.add("invalid_content", f"{p}.image_url", "an image part needs image_url.url")
        else:
            self.add("invalid_content", f"{p}.type", f"unsupported content part type {kind!r}")

    def tool_calls(self, m: dict, p: str) -> set[str]:
        ids: set[str] = set()
        calls = m.get("tool_calls")
        if "tool_calls" in m and calls is not None:
            if not isinstance(calls, list) or not calls:
                self.add("invalid_tool_calls", f"{p}.tool_calls", "'tool_calls' must be a non-empty list")
                calls = []
            for j, call in enumerate(calls):
                q = f"{p}.tool_calls[{j}]"
                if not isinstance(call, dict):
                    self.add("invalid_tool_calls", q, "a tool call must be an object")
                    continue
                cid = call.get("id")
                if not isinstance(cid, str) or not cid:
                    self.add("invalid_tool_calls", f"{q}.id", "a tool call needs a string 'id'")
                else:
                    ids.add(cid)
                if call.get("type", "function") != "function":
                    self.add("invalid_tool_calls", f"{q}.type", f"type must be 'function', got {call.get('type')!r}")
                self.function_call(call.get("function"), f"{q}.function")
        if "function_call" in m and m["function_call"] is not None:
            self.function_call(m["function_call"], f"{p}.function_call")
        return ids

    def function_call(self, fn, q: str) -> None:
        if not isinstance(fn, dict):
            self.add("invalid_tool_calls", q, "needs an object with 'name' and 'arguments'")
            return
        if not isinstance(fn.get("name"), str) or not fn.get("name"):
            self.add("invalid_tool_calls", f"{q}.name", "needs a string 'name'")
        args = fn.get("arguments")
        if not isinstance(args, str):
            self.add(
                "invalid_tool_calls",
                f"{q}.arguments",
                f"'arguments' must be a JSON-encoded string, got {_type_name(args)} (use json.dumps)",
            )
        else:
            try:
                json.loads(args)
            except ValueError as e:
                self.add("invalid_tool_calls", f"{q}.arguments", f"'arguments' is not valid JSON ({e.msg})")

    def tools(self, container: dict, prefix: str) -> bool:
        ok = True
        tools = container.get("tools")
        if "tools" in container and tools is not None:
            if not isinstance(tools, list):
                self.add("invalid_tools", f"{prefix}tools", "'tools' must be a list")
                return False
            for i, tool in enumerate(tools):
                q = f"{prefix}tools[{i}]"
                if not isinstance(tool, dict) or tool.get("type", "function") != "function":
                    self.add("invalid_tools", q, "each tool must be {'type': 'function', 'function': {...}}")
                    ok = False
                    continue
                ok &= self.function_schema(tool.get("function"), f"{q}.function")
        functions = container.get("functions")
        if "functions" in container and functions is not None:
            if not isinstance(functions, list):
                self.add("invalid_tools", f"{prefix}functions", "'functions' must be a list")
                return False
            for i, fn in enumerate(functions):
                ok &= self.function_schema(fn, f"{prefix}functions[{i}]")
        ptc = container.get("parallel_tool_calls")
        if "parallel_tool_calls" in container and not isinstance(ptc, bool):
            self.add("invalid_tools", f"{prefix}parallel_tool_calls", "'parallel_tool_calls' must be true or false")
        return ok

    def function_schema(self, fn, q: str) -> bool:
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn.get("name"):
            self.add("invalid_tools", q, "a function needs a string 'name'")
            return False
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            self.add("invalid_tools", f"{q}.parameters", "'parameters' must be a JSON schema object")
            return False
        return True

    def preference(self, ex: dict) -> None:
        for key in sorted(ex.keys() - PREFERENCE_KEYS):
            self.add("example_unrecognized_key", key, f"unexpected top-level key {key!r}")
        for key in ("input", "preferred_output", "non_preferred_output"):
            if key not in ex:
                self.add("preference_missing_key", key, f"a preference (DPO) example needs {key!r}")
        inp = ex.get("input")
        if "input" in ex:
            if not isinstance(inp, dict):
                self.add("preference_invalid_input", "input", f"'input' must be an object, got {_type_name(inp)}")
            else:
                self.tools(inp, "input.")
                msgs = inp.get("messages")
                if not isinstance(msgs, list) or not msgs:
                    self.add("preference_invalid_input", "input.messages", "'input.messages' must be a non-empty list")
                else:
                    self.messages(msgs, "input.messages")
                    last = msgs[-1]
                    if isinstance(last, dict) and last.get("role") not in ("user", "tool"):
                        self.add(
                            "preference_invalid_input",
                            f"input.messages[{len(msgs) - 1}].role",
                            "the input must end with a user (or tool) message; the outputs answer it",
                        )
        outputs = []
        for key in ("preferred_output", "non_preferred_output"):
            out = ex.get(key)
            if key not in ex:
                continue
            if not isinstance(out, list) or len(out) != 1:
                got = f"a list of {len(out)}" if isinstance(out, list) else _type_name(out)
                self.add("preference_invalid_output", key, f"must be a list of exactly one assistant message, got {got}")
                continue
            msg = out[0]
            if not isinstance(msg, dict) or msg.get("role") != "assistant":
                self.add("preference_invalid_output", f"{key}[0].role", "the output message must have role 'assistant'")
                continue
            self.messages(out, key)
            outputs.append(msg)
        if len(outputs) == 2 and outputs[0] == outputs[1]:
            self.add("preference_identical_outputs", "non_preferred_output", "same as preferred_output")


_PLAIN_KEYS = frozenset({"role", "content"})
_PLAIN_ROLES = frozenset({"system", "developer", "user"})


def _plainly_valid(m) -> bool:
    """A message that certainly has no problem: role and non-empty text content only (plus a 0/1
    weight on an assistant). Everything else goes through the full checks."""
    if type(m) is not dict:
        return False
    content = m.get("content")
    if type(content) is not str or not content:
        return False
    role = m.get("role")
    if role in _PLAIN_ROLES:
        return _PLAIN_KEYS.issuperset(m)
    if role == "assistant" and content.strip():
        if len(m) == 2:
            return _PLAIN_KEYS.issuperset(m)
        return len(m) == 3 and "weight" in m and type(m["weight"]) is int and m["weight"] in (0, 1)
    return False


def _did_you_mean(value, choices) -> str:
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value.lower(), sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(value) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


# ---------------------------------------------------------------------------------------------


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _not_regular(path: Path, mode: int) -> UnusableInputError:
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    if stat.S_ISDIR(mode):
        return UnusableInputError(f"{path} is a directory, not a JSONL file")
    return UnusableInputError(f"{path} is {kind}, not a regular file; save the data to a .jsonl file "
                              "and validate that")


def _open_regular(path: Path):
    """Open ``path`` for reading only if it is a regular file, without ever blocking.

    ``os.stat`` first refuses FIFOs and devices before they are opened (opening a FIFO with no
    writer blocks, /dev/zero never ends); the open itself is non-blocking and checked again with
    ``fstat``, so a file swapped for a FIFO in between cannot hang either.
    """
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except UnusableInputError:
        raise
    except FileNotFoundError:
        raise UnusableInputError(f"{path}: no such file") from None
    except PermissionError:
        raise UnusableInputError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise UnusableInputError(f"{path} is a directory, not a JSONL file") from None
    except OSError as e:
        raise UnusableInputError(f"{path}: cannot be read ({e.strerror or e})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_regular(path, mode)
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)  # a regular file: ordinary reads from here on
    return os.fdopen(fd, "rb")


class _TooLong:
    """Stands for a line longer than the limit: only its length is kept, never its bytes."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


def _bounded_lines(fh, max_line_bytes: int):
    """(line number, bytes) for each line, each read up to ``max_line_bytes`` (plus its newline).

    A longer line yields a :class:`_TooLong` instead; the rest of it is skipped in small reads, so
    memory stays bounded even for a file with no newline at all.
    """
    readline = fh.readline
    limit = max_line_bytes + 1  # room for the newline
    line_no = 0
    with fh:
        while True:
            raw = readline(limit)
            if not raw:
                return
            line_no += 1
            if len(raw) == limit and raw[-1:] != b"\n":
                size, tail = len(raw), raw[-1:]
                while True:
                    rest = readline(1 << 16)
                    if not rest:
                        break
                    size, tail = size + len(rest), tail[-1:] + rest[-2:]
                    if rest[-1:] == b"\n":
                        break
                ending = 2 if tail.endswith(b"\r\n") else 1 if tail.endswith(b"\n") else 0
                yield line_no, _TooLong(size - ending)
            else:
                yield line_no, raw


def _lines_of(source, max_line_bytes: int = MAX_LINE_BYTES) -> tuple[str, Iterable[tuple[int, object]]]:
    """(label, iterator of (line number, bytes, a :class:`_TooLong`, or an already-parsed record))."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return str(path), _bounded_lines(_open_regular(path), max_line_bytes)
    if hasattr(source, "to_dict") and hasattr(source, "columns"):  # a DataFrame of examples
        records = source.to_dict("records")
        return "<DataFrame>", enumerate(records, start=1)
    return "<records>", enumerate(source, start=1)


# A JSON string, escapes included. An unterminated one runs to the end of the text: so every
# match attempt succeeds and the substitution stays one linear pass, whatever the quotes.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def _nesting_depth(text: bytes) -> int:
    """How deep the JSON in ``text`` nests, counted without parsing (no recursion, any depth).

    Brackets inside strings are not counted; for text that is not valid JSON the figure is an
    estimate, which is all the depth check needs.
    """
    steps = _JSON_STRING.sub(b"", text).translate(_DEPTH_STEP, _NOT_BRACKETS)
    deepest = level = 0
    for start in range(0, len(steps), 1 << 20):  # in slices: memory stays small for a huge line
        running = np.cumsum(np.frombuffer(steps[start : start + (1 << 20)], dtype=np.int8), dtype=np.int64) + level
        if running.size:
            deepest = max(deepest, int(running.max()))
            level = int(running[-1])
    return deepest


def _too_deep(text: bytes | str, max_depth: int) -> int | None:
    """The nesting depth of ``text`` (a line, or a record as JSON) if it is over ``max_depth``.

    Counting brackets (a C loop over the bytes) bounds the depth from above, so the exact count
    runs only on the rare line with more brackets than the limit.
    """
    if isinstance(text, str):
        if text.count("[") + text.count("{") <= max_depth:
            return None
        text = text.encode("utf-8", "surrogatepass")
    elif text.count(b"[") + text.count(b"{") <= max_depth:
        return None
    depth = _nesting_depth(text)
    return depth if depth > max_depth else None


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 100_000 else f"{n:,} bytes"


def validate(
    source,
    model: str | None = None,
    *,
    encoding: str | None = None,
    max_example_tokens: int | None = None,
    token_counter=None,
    min_examples: int = MIN_EXAMPLES,
    chunk_size: int = 4096,
    method: str | None = None,
    grader_fields: Iterable[str] = (),
    max_line_bytes: int = MAX_LINE_BYTES,
    max_depth: int = MAX_DEPTH,
) -> ValidationReport:
    """Check a fine-tuning file (path) or examples (list of dicts) and report every problem.

    ``model`` picks the tokenizer and the per-example token limit from ftkit's catalog; without
    it, tokens are counted with ``o200k_base`` and no limit is checked. ``token_counter`` (any
    object with ``count_examples(list[dict]) -> list[ExampleTokens]``) replaces tiktoken, e.g.
    with a local model's own tokenizer.

    Each line is read up to ``max_line_bytes`` (default 16 MB) and may nest at most
    ``max_depth`` levels (default 128): a longer or deeper line is an error of that line
    (``line_too_long``, ``nesting_too_deep``) and the next lines are still checked.

    Raises :class:`UnusableInputError` only when the input cannot be read at all (missing, no
    permission, or not a regular file: a directory, a FIFO, a device); everything else -- bad
    bytes, bad JSON, bad fields, over-long or over-deep lines -- becomes a :class:`Problem`.

    Taught in notebooks/02_data_formatting.ipynb.
    """
    if isinstance(source, (str, os.PathLike)):
        _open_regular(Path(source)).close()  # an unusable input is refused at once, before any set-up
    if token_counter is None:
        if encoding is None and model is None:
            encoding = "o200k_base"
        token_counter = TokenCounter(model, encoding=encoding, fallback=None)
        encoding = token_counter.encoding_name
    if max_example_tokens is None and model is not None:
        from . import catalog

        try:
            max_example_tokens = catalog.lookup(model).max_example_tokens
        except catalog.UnknownCatalogModel:
            max_example_tokens = None

    label, lines = _lines_of(source, max_line_bytes)
    report = ValidationReport(label, model, encoding, max_example_tokens)
    problems = report.problems
    check = _Checker(problems, method, grader_fields)
    seen: dict[int, int] = {}  # hash of the example's line -> first line it appeared on
    kinds: Counter = Counter()
    kind_lines: dict[str, list[int]] = {kind: [] for kind in methods.FILE_KINDS}
    chunk: list[tuple[int, dict]] = []
    n_lines = 0

    # Token counting runs beside parsing: while the tokenizer's threads encode one chunk (tiktoken
    # releases the GIL), this thread parses and checks the next. At most two chunks are in
    # flight, so memory stays flat however large the file.
    counting = ThreadPoolExecutor(1, thread_name_prefix="ftkit-count")
    in_flight: deque = deque()

    def record(batch: list[tuple[int, dict]], counts: list[ExampleTokens]) -> None:
        for (line_no, ex), c in zip(batch, counts):
            report.example_lines.append(line_no)
            report.total_tokens.append(c.total)
            report.trained_tokens.append(c.trained)
            msgs = ex.get("messages") if "messages" in ex else (ex.get("input") or {}).get("messages")
            report.messages_per_example.append(len(msgs) if isinstance(msgs, list) else 0)
            if max_example_tokens and c.total > max_example_tokens:
                problems.append(
                    Problem(
                        line_no,
                        "example_too_long",
                        None,
                        f"{c.total:,} tokens > limit {max_example_tokens:,}; "
                        f"it will be truncated to the first {max_example_tokens:,}",
                        WARNING,
                    )
                )

    def flush(wait_all: bool = False) -> None:
        if chunk:
            batch = list(chunk)
            in_flight.append((batch, counting.submit(token_counter.count_examples, [ex for _, ex in batch])))
            chunk.clear()
        while in_flight and (wait_all or len(in_flight) > 2):
            batch, future = in_flight.popleft()
            record(batch, future.result())

    for line_no, raw in lines:
        n_lines = line_no
        check.line = line_no
        parsed = _parse_line(check, report, raw, max_line_bytes, max_depth)
        if parsed is None:
            continue
        ex, text, key = parsed
        kind = _check_example(check, ex, text, max_depth)
        if kind is None:
            continue
        kinds[kind] += 1
        if len(kind_lines[kind]) < 20:
            kind_lines[kind].append(line_no)
        if key is not None:
            first = seen.setdefault(key, line_no)
            if first != line_no:
                check.add("duplicate_example", None, f"same as line {first}")
        chunk.append((line_no, ex))
        if len(chunk) >= chunk_size:
            flush()
    flush(wait_all=True)
    counting.shutdown()

    report.n_lines = n_lines
    check.line = None
    _check_whole_file(check, report, kinds, kind_lines, min_examples)
    _flag_long_answers(report)
    problems.sort(key=lambda p: (p.line if p.line is not None else 0))
    return report


def _parse_line(check: _Checker, report: ValidationReport, raw, max_line_bytes: int,
                max_depth: int) -> tuple[object, str | bytes | None, int | None] | None:
    """One line's example, its JSON text and a hash of it (for duplicates) -- or None after adding
    the line's one problem (too long, blank, not UTF-8, too deep, not JSON). ``raw`` is a line's
    bytes, a :class:`_TooLong` marker, or a record given as a Python object."""
    if isinstance(raw, _TooLong):
        report.n_examples += 1
        check.add("line_too_long", None,
                  f"the line is {_mb(raw.size)} long; the limit is {_mb(max_line_bytes)} per line "
                  "(raise it with --max-line-mb or max_line_bytes= if the line is meant to be this long)")
        return None
    if not isinstance(raw, bytes):
        report.n_examples += 1
        try:
            text = json.dumps(raw, sort_keys=True, ensure_ascii=False)
        except (TypeError, ValueError):  # not JSON-serialisable (or circular): checked as it is
            text = None
        except RecursionError:
            check.add("nesting_too_deep", None, f"the record nests deeper than Python can serialise; "
                                                f"the limit is {max_depth} levels")
            return None
        return raw, text, hash(text) if text is not None else None
    if check.line == 1 and raw.startswith(BOM):
        check.add("utf8_bom", None, "the file starts with a UTF-8 byte-order mark; save it as UTF-8 without BOM")
        raw = raw[len(BOM) :]
    stripped = raw.strip()
    if not stripped:
        check.add("blank_line", None, "blank line")
        return None
    report.n_examples += 1
    try:
        return _fast_loads(stripped), stripped, hash(stripped)  # orjson: also checks UTF-8; on doubt, below
    except ValueError:
        pass
    try:
        text = stripped.decode("utf-8")
    except UnicodeDecodeError as e:
        check.add("invalid_utf8", None,
                  f"byte 0x{stripped[e.start]:02x} at column {e.start + 1} is not UTF-8 (save the file as UTF-8)")
        return None
    depth = _too_deep(stripped, max_depth)  # orjson stops at 1,024 levels; json would recurse
    if depth is not None:
        check.add("nesting_too_deep", None, _deep_message(depth, max_depth))
        return None
    try:  # the standard library's parser: its messages, and what it accepts (NaN, big ints)
        return json.loads(text), stripped, hash(stripped)
    except json.JSONDecodeError as e:
        check.add("invalid_json", None, f"{e.msg} at column {e.colno}: {_excerpt(text, e.pos)}")
        return None


def _check_example(check: _Checker, ex, text, max_depth: int) -> str | None:
    """The example's checks; its kind, or None when it has none (or nests too deep).

    Checked first, measured after: only an example that is more than plain text messages can
    nest deeply, so the common case pays nothing for the depth check. A deep example's other
    problems are dropped: its one error is the depth, and nothing recursive sees it."""
    problems = check.problems
    mark, recursed = len(problems), False
    try:
        kind = check.example(ex)
    except RecursionError:  # a comparison or repr deeper than Python's limit
        kind, recursed = None, True
    if recursed or not check.shallow:
        depth = _too_deep(text, max_depth) if text is not None else None
        if depth is not None or recursed:
            del problems[mark:]
            check.add("nesting_too_deep", None, _deep_message(depth, max_depth) if depth is not None
                      else f"the example nests deeper than the limit of {max_depth} levels")
            return None
    return kind


def _check_whole_file(check: _Checker, report: ValidationReport, kinds: Counter, kind_lines: dict[str, list[int]],
                      min_examples: int) -> None:
    """The file's own problems (empty, too few examples, chat and preference examples mixed) and
    its kind."""
    if report.n_examples == 0:
        check.add("empty_file", None, "the file has no examples" + (" (only blank lines)" if report.n_lines else ""))
    elif report.n_examples < min_examples:
        check.add(
            "too_few_examples",
            None,
            f"{report.n_examples} examples; the fine-tuning API needs at least {min_examples}"
            + (" in a training file (a validation file needs 1)" if min_examples == MIN_EXAMPLES else ""),
        )
    chat, preference = methods.CHAT_FILE, methods.PREFERENCE_FILE
    if kinds[chat] and kinds[preference]:
        report.kind = "mixed"
        minority, majority = (preference, chat) if kinds[preference] < kinds[chat] else (chat, preference)
        for line_no in kind_lines[minority]:
            check.problems.append(Problem(line_no, "mixed_example_types", None,
                                          f"a {minority} example in a file of mostly {majority} examples", ERROR))
    elif kinds:
        report.kind = next(iter(kinds))


def _flag_long_answers(report: ValidationReport, factor: float = 4.0) -> None:
    """Warn about assistant answers far longer than the rest (likely pasted by mistake)."""
    trained = np.frombuffer(report.trained_tokens, dtype=np.int64) if report.trained_tokens else None
    if trained is None or trained.size < MIN_EXAMPLES:
        return
    q1, median, q3 = np.percentile(trained, [25, 50, 75])
    threshold = max(factor * median, q3 + 3 * (q3 - q1), 32)
    lines = np.frombuffer(report.example_lines, dtype=np.int64)
    for line_no, n in zip(lines[trained > threshold], trained[trained > threshold]):
        report.problems.append(
            Problem(
                int(line_no),
                "assistant_message_too_long",
                None,
                f"{int(n):,} assistant tokens vs a median of {median:.0f} in this file",
                WARNING,
            )
        )


def _deep_message(depth: int, max_depth: int) -> str:
    return (f"the JSON is nested {depth:,} levels deep; the limit is {max_depth} "
            "(real examples nest a few levels, tool schemas a few dozen)")


def _excerpt(text: str, pos: int, width: int = 30) -> str:
    start = max(0, pos - width)
    snippet = text[start : pos + width].replace("\n", " ")
    return f"...{snippet}..." if start or pos + width < len(text) else snippet
