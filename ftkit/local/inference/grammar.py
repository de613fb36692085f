"""Constrained decoding for the local engine: JSON mode, Structured Outputs and forced tool calls.

The engine asks for a *constraint spec* -- plain data, no library objects:

* ``{"type": "json_object"}`` -- exactly one JSON object (``response_format={"type": "json_object"}``);
* ``{"type": "json_schema", "schema": {...}, "strict": bool, "name": str}`` -- Structured Outputs;
* ``{"type": "tool_call", "tools": [...], "name": "fn" | None, "parallel": bool}`` -- a forced tool
  call (``tool_choice="required"`` or a named function), written in the model's tool-call text
  format ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (see :mod:`.render`); with
  ``parallel``, up to ``max_calls`` (default :data:`MAX_PARALLEL_CALLS`) calls, one per line;
* the same with ``"answer": <a json_object or json_schema spec>`` (and no ``name``) --
  ``tool_choice="auto"`` with a JSON ``response_format``: one grammar with two branches, tool
  calls or else the JSON answer, so either way the answer has a shape the client can read.

Optional in every spec: ``"param"``, where the schema sits in the request (default
``response_format.json_schema.schema`` for a schema, ``tools`` for tools), used to name the
offending field in :class:`UnsupportedSchema`.

:func:`compile_constraint` turns a spec into a :class:`Grammar` for a tokenizer (cached per
tokenizer and spec); :meth:`Grammar.new_state` gives each generated row its own matcher, and
:func:`fill_masks` / :func:`apply_masks` constrain one batched decoding step. The grammar library
is llguidance (chosen by measurement: ``benchmarks/compare_grammar_libs.py``); no other module
imports it. torch and llguidance are imported lazily, so importing this module is cheap.

``strict: true`` follows the hosted Structured Outputs rules: every object lists all its
properties in ``required`` and sets ``additionalProperties: false``; the supported keywords are the
hosted subset (``pattern``, ``format``, number bounds, ``multipleOf``, ``minItems``/``maxItems``,
``anyOf``, ``enum``, ``const``, ``$ref``/``$defs`` with recursion); anything else is refused with
the keyword and its JSON path, as the hosted API answers 400. A schema without ``strict`` is
still enforced, leniently (keywords the library cannot enforce are ignored), so its answers parse.

The JSON is written with the separators ``", "`` and ``": "`` (``json.dumps``' default, what the
course's training data and :mod:`.render` use) and no other whitespace, so a model cannot run away
in whitespace.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .render import MAX_PARALLEL_CALLS, TOOL_CALL_CLOSE, TOOL_CALL_OPEN

#: JSON layout of every constrained answer (no free whitespace: nothing to run away in).
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

#: String formats the hosted API accepts in strict schemas (all enforced by the grammar).
STRICT_FORMATS = {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
#: Keywords that only annotate a schema: allowed anywhere, never constrain.
ANNOTATIONS = {"title", "description", "$schema", "$id", "$comment", "examples", "default", "deprecated",
               "readOnly", "writeOnly"}
#: Keywords of the hosted strict subset, beyond the annotations.
STRICT_KEYWORDS = {"type", "properties", "required", "additionalProperties", "items", "enum", "const", "anyOf",
                   "$ref", "$defs", "definitions", "pattern", "format", "multipleOf", "minimum", "maximum",
                   "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems"}
JSON_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}
#: Size limits of the hosted API for strict schemas.
MAX_DEPTH, MAX_PROPERTIES, MAX_ENUM_VALUES = 10, 5000, 1000



class UnsupportedSchema(ValueError):
    """A schema feature the server refuses (as the hosted API does) or cannot enforce.

    ``param`` is the request field at fault, e.g. ``response_format.json_schema.schema.properties.x.minLength``;
    the chat routes answer 400 with it.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


# -- checking specs and strict schemas --------------------------------------------------------


def _join(path: str, *keys: Any) -> str:
    for key in keys:
        path = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"
    return path


@dataclass
class _StrictCheck:
    """Walks a schema under the hosted strict rules; raises UnsupportedSchema at the first problem."""

    root: dict
    prefix: str  # request path of the schema, e.g. response_format.json_schema.schema
    what: str  # how the hosted messages name the schema, e.g. "response_format 'ticket'"
    properties: int = 0
    enum_values: int = 0
    seen_refs: set = field(default_factory=set)

    def fail(self, context: tuple, problem: str, *tail: Any) -> None:
        raise UnsupportedSchema(f"Invalid schema for {self.what}: In context={context}, {problem}",
                                _join(self.prefix, *context, *tail))

    def run(self) -> None:
        if not isinstance(self.root, dict):
            raise UnsupportedSchema(f"Invalid schema for {self.what}: the schema must be a JSON object", self.prefix)
        if self.root.get("type") != "object" or "anyOf" in self.root:
            got = json.dumps(self.root.get("type", "anyOf" if "anyOf" in self.root else None))
            raise UnsupportedSchema(f"Invalid schema for {self.what}: schema must be a JSON Schema of "
                                    f"'type: \"object\"', got 'type: {got}'.", _join(self.prefix, "type"))
        self.node(self.root, (), 0)

    def node(self, schema: Any, context: tuple, depth: int) -> None:
        if isinstance(schema, bool):
            return  # true/false schemas (e.g. items: false) constrain nothing the grammar can't express
        if not isinstance(schema, dict):
            self.fail(context, "a schema must be a JSON object.")
        if depth > MAX_DEPTH:
            self.fail(context, f"schemas may nest at most {MAX_DEPTH} levels deep.")
        for key in schema:
            if key not in STRICT_KEYWORDS and key not in ANNOTATIONS:
                self.fail(context, f"'{key}' is not permitted.", key)
        types = schema.get("type")
        type_list = types if isinstance(types, list) else [types] if types is not None else []
        for t in type_list:
            if t not in JSON_TYPES:
                self.fail(context, f"'type' {json.dumps(t)} is not a JSON Schema type.", "type")
        if "format" in schema and schema["format"] not in STRICT_FORMATS:
            self.fail(context, f"'format' {json.dumps(schema['format'])} is not permitted (supported: "
                               f"{', '.join(sorted(STRICT_FORMATS))}).", "format")
        if "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#"):
                self.fail(context, f"'$ref' {json.dumps(ref)} is not permitted: only references inside the "
                                   "schema ('#/$defs/...') are supported.", "$ref")
        if "enum" in schema:
            if not isinstance(schema["enum"], list) or not schema["enum"]:
                self.fail(context, "'enum' must be a non-empty array.", "enum")
            self.enum_values += len(schema["enum"])
            if self.enum_values > MAX_ENUM_VALUES:
                self.fail(context, f"a schema may have at most {MAX_ENUM_VALUES} enum values in all.", "enum")
        if "object" in type_list or "properties" in schema:
            self.object(schema, context)
        for key in ("properties", "$defs", "definitions"):
            for name, sub in (schema.get(key) or {}).items():
                self.node(sub, (*context, key, name), depth + (key == "properties"))
        if "items" in schema:
            self.node(schema["items"], (*context, "items"), depth + 1)
        if "anyOf" in schema:
            if not isinstance(schema["anyOf"], list) or not schema["anyOf"]:
                self.fail(context, "'anyOf' must be a non-empty array.", "anyOf")
            for i, sub in enumerate(schema["anyOf"]):
                self.node(sub, (*context, "anyOf", i), depth)

    def object(self, schema: dict, context: tuple) -> None:
        properties = schema.get("properties") or {}
        if not isinstance(properties, dict):
            self.fail(context, "'properties' must be an object.", "properties")
        self.properties += len(properties)
        if self.properties > MAX_PROPERTIES:
            self.fail(context, f"a schema may have at most {MAX_PROPERTIES} object properties in all.", "properties")
        if schema.get("additionalProperties") is not False:
            self.fail(context, "'additionalProperties' is required to be supplied and to be false.",
                      "additionalProperties")
        required = schema.get("required")
        missing = [name for name in properties if not isinstance(required, list) or name not in required]
        if missing:
            self.fail(context, "'required' is required to be supplied and to be an array including every key in "
                               f"properties. Missing '{missing[0]}'.", "required")


def _tool_functions(spec: dict) -> list[tuple[dict, str]]:
    """(function definition, request path of its parameters) for each tool of a tool_call spec."""
    tools = spec.get("tools")
    base = spec.get("param") or "tools"
    if not isinstance(tools, list) or not tools:
        raise UnsupportedSchema("a tool call needs at least one function tool", base)
    out = []
    for i, tool in enumerate(tools):
        if isinstance(tool, dict) and isinstance(tool.get("function"), dict):  # chat: {"type": "function", "function": {...}}
            fn, path = tool["function"], _join(base, i, "function")
        elif isinstance(tool, dict) and isinstance(tool.get("name"), str):  # Responses / legacy functions: flat
            fn, path = tool, _join(base, i)
        else:
            raise UnsupportedSchema(f"tool {i} is not a function tool", _join(base, i))
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise UnsupportedSchema(f"tool {i} has no function name", _join(path, "name"))
        out.append((fn, _join(path, "parameters")))
    return out


def _parameters_schema(fn: dict, path: str) -> dict:
    """The JSON schema of a function's arguments, checked under the strict rules when it is strict."""
    params = fn.get("parameters")
    if params is None:  # no parameters: the function takes an empty object
        return {"type": "object", "properties": {}, "additionalProperties": False}
    if not isinstance(params, dict):
        raise UnsupportedSchema(f"the parameters of function '{fn['name']}' must be a JSON schema object", path)
    if fn.get("strict") is True:
        _StrictCheck(params, path, f"function '{fn['name']}'").run()
    return params


def _schema_what(prefix: str, name: str | None) -> str:
    field_name = "text.format" if prefix.startswith("text") else prefix.split(".")[0]
    return f"{field_name} '{name}'" if name else field_name


def _answer_schema(spec: dict) -> tuple[dict, list[tuple[Any, str]]]:
    """(JSON schema with its layout under ``x-guidance``, [(pattern, request path)]) of a
    ``json_object`` or ``json_schema`` spec."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "json_object":
        return {"x-guidance": JSON_LAYOUT, "type": "object"}, []
    if kind != "json_schema":
        raise UnsupportedSchema(f"unknown constraint type {kind!r} (json_object, json_schema or tool_call)",
                                spec.get("param") if isinstance(spec, dict) else None)
    schema = spec.get("schema")
    prefix = spec.get("param") or "response_format.json_schema.schema"
    if spec.get("strict") is True:
        _StrictCheck(schema, prefix, _schema_what(prefix, spec.get("name"))).run()
        options = JSON_LAYOUT
    else:
        if schema is None:  # no schema: any JSON object, as in JSON mode
            schema = {"type": "object"}
        if not isinstance(schema, dict):
            raise UnsupportedSchema("the schema must be a JSON object", prefix)
        options = {**JSON_LAYOUT, "lenient": True}
    return {**schema, "x-guidance": options}, _patterns(schema, prefix)


def grammar_source(spec: dict) -> tuple[str, list[tuple[Any, str]]]:
    """(llguidance grammar text, [(pattern, request path)]) for a spec; raises UnsupportedSchema.

    Pure data -> text: no tokenizer needed, so the HTTP side can check a spec cheaply."""
    import llguidance

    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind in ("json_object", "json_schema"):
        schema, patterns = _answer_schema(spec)
        options = schema.pop("x-guidance")
        return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=options), patterns
    if kind == "tool_call":
        functions = _tool_functions(spec)
        forced = spec.get("name")
        answer = spec.get("answer")
        if forced is not None:
            if answer is not None:
                raise UnsupportedSchema("a call forced to one function has no other answer", "tool_choice")
            functions = [(fn, path) for fn, path in functions if fn["name"] == forced]
            if not functions:
                raise UnsupportedSchema(f"tool_choice names the function '{forced}', which is not in tools",
                                        "tool_choice")
        calls, patterns = [], []
        for fn, path in functions:
            params = _parameters_schema(fn, path)
            patterns += _patterns(params, path)
            calls.append({"type": "object", "properties": {"name": {"const": fn["name"]}, "arguments": params},
                          "required": ["name", "arguments"], "additionalProperties": False})
        strict = all(fn.get("strict") is True for fn, _ in functions)
        call = {"x-guidance": JSON_LAYOUT if strict else {**JSON_LAYOUT, "lenient": True},
                **(calls[0] if len(calls) == 1 else {"anyOf": calls})}
        most = max(1, int(spec.get("max_calls") or MAX_PARALLEL_CALLS)) if spec.get("parallel") else 1
        repeat = f' ("\\n" call){{0,{most - 1}}}' if most > 1 else ""
        lark = (f"calls: call{repeat}\n"
                f"call: {json.dumps(TOOL_CALL_OPEN)} arguments {json.dumps(TOOL_CALL_CLOSE)}\n"
                f"arguments: %json {json.dumps(call)}\n")
        if answer is None:
            lark = "start: calls\n" + lark
        else:  # tool_choice "auto" with a JSON answer: tool calls, or else the answer
            schema, answer_patterns = _answer_schema(answer)
            patterns += answer_patterns
            lark = f"start: calls | answer\n{lark}answer: %json {json.dumps(schema)}\n"
        return llguidance.LLMatcher.grammar_from_lark(lark), patterns
    raise UnsupportedSchema(f"unknown constraint type {kind!r} (json_object, json_schema or tool_call)",
                            spec.get("param") if isinstance(spec, dict) else None)


def _patterns(schema: Any, path: str) -> list[tuple[Any, str]]:
    """Every ``pattern`` in a schema with its request path (to name the one the library refuses)."""
    found = []
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "pattern":
                found.append((value, _join(path, "pattern")))
            elif isinstance(value, (dict, list)):
                found += _patterns(value, _join(path, key))
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            found += _patterns(value, _join(path, i))
    return found


# -- compiling for a tokenizer, cached ----------------------------------------------------------


class _TokenizerGrammars:
    """The grammar library's view of one tokenizer, and the grammars compiled for it."""

    def __init__(self, tokenizer, eos_ids: tuple[int, ...]) -> None:
        import llguidance.hf

        # about 1 s for a 49k vocabulary: once per tokenizer
        self.ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=len(tokenizer),
                                                        eos_token=list(eos_ids) or None)
        self.vocab_size = self.ll_tokenizer.vocab_size
        self.grammars: OrderedDict[str, Grammar] = OrderedDict()


_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> {eos ids: _TokenizerGrammars}
_lock = threading.Lock()
MAX_CACHED_GRAMMARS = 256


def _for_tokenizer(tokenizer, eos_ids) -> _TokenizerGrammars:
    eos = tuple(sorted(int(i) for i in eos_ids))
    per_eos = _cache.setdefault(tokenizer, {})
    if eos not in per_eos:
        per_eos[eos] = _TokenizerGrammars(tokenizer, eos)
    return per_eos[eos]


@dataclass
class Grammar:
    """A spec compiled for one tokenizer; :meth:`new_state` starts a matcher for one answer."""

    source: str
    ll_tokenizer: Any
    vocab_size: int
    tool_calls: bool = False  # a tool_call spec: answers may hold call blocks

    def new_state(self) -> ConstraintState:
        import llguidance

        return ConstraintState(llguidance.LLMatcher(self.ll_tokenizer, self.source, log_level=0), self.tool_calls)


def compile_constraint(tokenizer, spec: dict, eos_ids=()) -> Grammar:
    """The :class:`Grammar` of ``spec`` for ``tokenizer`` (a Hugging Face fast tokenizer), cached per
    (tokenizer, end-of-sequence ids, spec). Raises :class:`UnsupportedSchema` for what it cannot
    enforce, before anything is generated. ``eos_ids``: the tokens that end an answer; the grammar
    allows them only where the answer is complete."""
    import llguidance

    key = json.dumps(spec, sort_keys=True, default=str)
    with _lock:
        grammars = _for_tokenizer(tokenizer, eos_ids)
        cached = grammars.grammars.get(key)
        if cached is not None:
            grammars.grammars.move_to_end(key)
            return cached
        source, patterns = grammar_source(spec)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(source, grammars.ll_tokenizer)
        if is_error:
            raise _explain(messages[0], spec, patterns, grammars.ll_tokenizer)
        grammar = Grammar(source, grammars.ll_tokenizer, grammars.vocab_size, spec.get("type") == "tool_call")
        grammars.grammars[key] = grammar
        while len(grammars.grammars) > MAX_CACHED_GRAMMARS:
            grammars.grammars.popitem(last=False)
        return grammar


def _explain(error: str, spec: dict, patterns: list[tuple[Any, str]], ll_tokenizer) -> UnsupportedSchema:
    """Turn the library's refusal into an UnsupportedSchema naming the field (a pattern, if one is to blame)."""
    import llguidance

    for pattern, path in patterns:
        if not isinstance(pattern, str):
            return UnsupportedSchema("'pattern' must be a string", path)
        source = llguidance.LLMatcher.grammar_from_regex(pattern)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(source, ll_tokenizer)
        if is_error:
            lines = [line.strip() for line in messages[0].splitlines() if line.strip()]
            reason = next((line.removeprefix("error: ") for line in lines if line.startswith("error:")), lines[-1])
            return UnsupportedSchema(f"'pattern' {json.dumps(pattern)} is not supported: {reason}", path)
    if spec.get("type") == "tool_call":
        where = spec.get("param") or "tools"
    else:
        where = spec.get("param") or "response_format.json_schema.schema"
    first = error.strip().splitlines()[0]
    return UnsupportedSchema(f"the schema cannot be enforced: {first}", where)


# -- decoding: one state per generated answer -----------------------------------------------------


def repeats_a_call(text: str) -> bool:
    """``text`` ends with a tool call block identical to an earlier one of the same answer: a
    small model that repeats itself under ``tool_choice="required"``; the engine stops it there
    (the grammar accepts an end after any call) and the repeat is dropped (:mod:`.render`)."""
    if not text.endswith(TOOL_CALL_CLOSE):
        return False
    last = text.rfind(TOOL_CALL_OPEN)
    return last > 0 and text.find(text[last:]) < last


class ConstraintState:
    """Where one answer stands in its grammar."""

    def __init__(self, matcher, tool_calls: bool = False) -> None:
        self.matcher = matcher
        self.tool_calls = tool_calls  # the grammar writes tool call blocks

    def finished(self, text: str) -> bool:
        """The answer ``text`` is done: the grammar is complete, or it has just repeated a call."""
        return self.complete or (self.tool_calls and repeats_a_call(text) and self.can_end)

    def advance(self, token: int) -> bool:
        """Take the sampled token; False if the grammar refused it (the row then stops)."""
        return self.matcher.consume_token(int(token))

    @property
    def complete(self) -> bool:
        """The answer is finished: only an end-of-sequence token could follow."""
        return self.matcher.is_stopped()

    @property
    def can_end(self) -> bool:
        """The answer may end here (the grammar accepts what was generated)."""
        return self.matcher.is_accepting()


_executor = None


def allocate_masks(rows: int, vocab_size: int):
    """A (rows, ceil(vocab/32)) int32 bitmask tensor for :func:`fill_masks`."""
    import torch

    return torch.full((rows, (vocab_size + 31) // 32), -1, dtype=torch.int32)


def fill_masks(states: list[ConstraintState], masks) -> None:
    """Compute the allowed next tokens of every state into ``masks[i]``, in parallel threads.

    (llguidance.torch wraps the same call, but importing it runs torch.compile's set-up, which
    takes tens of seconds on a small CPU and needs a C compiler later.)"""
    global _executor
    import llguidance

    if _executor is None:
        _executor = llguidance.LLExecutor()
    if masks.dtype != _int32() or not masks.is_contiguous() or masks.device.type != "cpu":
        raise ValueError("masks must be a contiguous int32 CPU tensor from allocate_masks")
    rows, words = masks.shape
    _executor.unsafe_compute_mask_ptr([(s.matcher, i) for i, s in enumerate(states)], masks.data_ptr(), words * 4,
                                      rows)


def _int32():
    import torch

    return torch.int32


_bit_positions = None


def apply_masks(logits, masks, rows) -> None:
    """Set the logits of disallowed tokens to -inf, in place, for ``logits[rows[i]]`` and ``masks[i]``."""
    import torch

    global _bit_positions
    if _bit_positions is None:
        _bit_positions = torch.arange(32, dtype=torch.int32)
    allowed = ((masks.unsqueeze(-1) >> _bit_positions) & 1).bool().view(masks.shape[0], -1)
    vocab = logits.shape[-1]
    if allowed.shape[1] < vocab:  # logits beyond the tokenizer's vocabulary (padding rows) are never allowed
        allowed = torch.nn.functional.pad(allowed, (0, vocab - allowed.shape[1]))
    index = torch.as_tensor(rows, dtype=torch.long)
    logits[index] = logits[index].masked_fill(~allowed[:, :vocab], float("-inf"))


def token_bytes(tokenizer, token: int) -> bytes:
    """The bytes a token stands for (a byte-level BPE token can be part of a UTF-8 character)."""
    grammars = _cache.get(tokenizer)
    ll = next(iter(grammars.values())).ll_tokenizer if grammars else _byte_tokenizer(tokenizer)
    if ll.is_special_token(int(token)):
        return tokenizer.convert_ids_to_tokens(int(token)).encode()
    return ll.decode_bytes([int(token)])


def _byte_tokenizer(tokenizer):
    with _lock:
        return _for_tokenizer(tokenizer, ()).ll_tokenizer
