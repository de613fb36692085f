"""Request bodies are checked before any handler reads them: every body the server cannot use
gets OpenAI's error envelope with a 4xx naming the offending ``param``, never a 500.

In this order:

1. **size**: at most :data:`MAX_BODY_BYTES`, counted as the body streams in (413);
2. **nesting**: at most :data:`MAX_DEPTH` levels of arrays and objects, counted on the raw bytes
   *before* parsing, so a body nested 100,000 deep costs one scan, not a ``RecursionError``;
3. **JSON**: strict (no ``NaN`` / ``Infinity``, no numbers beyond a double); a lone UTF-16
   surrogate escape (``"\\ud800"``, which no text encoding can carry to the tokenizer) becomes
   U+FFFD, as a lossy decoder would;
4. **types**: the body is validated against the operation's request schema from OpenAI's spec
   (``openapi_requests.json``, made by ``scripts/extract_request_schemas.py``), with the hosted
   API's wording: ``Invalid type for 'messages[0].content[0].text': expected a string, but got
   an integer instead.``;
5. **parameters** the server does not implement are refused (:mod:`ftkit.local.api.parameters`).
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from importlib import resources
from itertools import accumulate
from typing import Any

from .parameters import check_parameters
from .wire import APIError, short

MAX_BODY_BYTES = 8_000_000
MAX_DEPTH = 64

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
TAGS = ("type", "role")  # the properties by which the spec's unions tell their branches apart


def invalid_json(message: str = "We could not parse the JSON body of your request.") -> APIError:
    return APIError(400, message, code="invalid_json")


# -- 1-3: bytes -> JSON ---------------------------------------------------------------------------


async def read_body(request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused with 413 as soon as it grows past ``limit`` bytes."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"Request body too large: the local server accepts JSON bodies up to "
                                f"{limit / 1e6:g} MB", code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def nesting_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in ``raw`` (brackets inside strings do not count)."""
    brackets = _STRING.sub(b'""', raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _too_deep(raw: bytes) -> APIError:
    """The error for a body nested past MAX_DEPTH, naming the top-level key that holds it."""
    depth, key = 0, None
    for match in _TOKEN.finditer(raw):
        token = match.group()
        if token[:1] == b'"':
            if depth == 1:
                key = token
        else:
            depth += 1 if token in b"[{" else -1
            if depth > MAX_DEPTH:
                break
    try:
        param = json.loads(key) if key else None
    except ValueError:
        param = None
    where = f"'{param}'" if param else "body"
    return APIError(400, f"Invalid {where}: nested more than {MAX_DEPTH} levels deep.", param=param,
                    code="too_deeply_nested")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes | str) -> Any:
    """Bounded, strict JSON parsing (steps 2-3 above); raises :class:`APIError` (400)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if nesting_depth(data) > MAX_DEPTH:
        raise _too_deep(data)
    try:
        value = json.loads(data, parse_float=_finite, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise invalid_json(f"We could not parse the JSON body of your request ({e}).") from None
    if _SURROGATE_ESCAPE.search(data):
        value = _replace_lone_surrogates(value)
    return value


def _clean_text(text: str) -> str:
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _replace_lone_surrogates(value: Any) -> Any:
    """Every string in ``value`` with lone surrogates replaced by U+FFFD (iterative: no recursion)."""
    root = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        container, key = stack.pop()
        item = container[key]
        if isinstance(item, str):
            container[key] = _clean_text(item)
        elif isinstance(item, list):
            stack.extend((item, i) for i in range(len(item)))
        elif isinstance(item, dict):
            cleaned = {_clean_text(k): v for k, v in item.items()}
            item.clear()
            item.update(cleaned)
            stack.extend((item, k) for k in item)
    return root[0]


# -- 4-5: JSON -> a checked body ------------------------------------------------------------------


@cache
def _extract() -> dict:
    return json.loads(resources.files(__package__).joinpath("openapi_requests.json").read_text(encoding="utf-8"))


@cache
def _validator(operation: str):
    from jsonschema import Draft202012Validator

    doc = _extract()
    schema = {"$ref": f"#/$defs/{doc['operations'][operation]['schema']}", "$defs": doc["$defs"]}
    return Draft202012Validator(schema)


def check_body(operation: str, body: Any) -> dict:
    """``body`` checked for ``operation`` (an operationId of the spec): types, then parameters."""
    if not isinstance(body, dict):
        raise invalid_json("The request body must be a JSON object.")
    known = _top_level_properties(operation)
    for name in body:
        if name not in known:
            raise APIError(400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
    errors = list(_validator(operation).iter_errors(body))
    if errors:
        raise schema_error(min(errors, key=lambda e: [str(p) for p in e.absolute_path]))
    check_parameters(operation, body)
    return body


def parse_body(operation: str, raw: bytes | str) -> dict:
    return check_body(operation, parse_json(raw))


@cache
def _top_level_properties(operation: str) -> frozenset[str]:
    defs = _extract()["$defs"]

    def collect(schema: dict) -> set[str]:
        if "$ref" in schema:
            return collect(defs[schema["$ref"].rsplit("/", 1)[-1]])
        names = set(schema.get("properties", {}))
        for part in schema.get("allOf", []):
            names |= collect(part)
        return names

    return frozenset(collect({"$ref": "#/$defs/" + _extract()["operations"][operation]["schema"]}))


def operation_parameters(operation: str) -> frozenset[str]:
    """Every top-level request parameter the spec defines for ``operation``."""
    return _top_level_properties(operation)


# -- schema errors in the hosted API's words ------------------------------------------------------

_KIND = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "a boolean",
         "object": "an object", "array": "an array", "null": "null"}


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def param_name(path) -> str:
    """``["messages", 0, "content"]`` -> ``messages[0].content`` (the hosted API's spelling)."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _branch_rank(errors) -> tuple:
    """How badly a union branch fits: wrong kind of object (its tag), wrong JSON type, then
    shallower errors first -- the branch meant is the one that fails latest."""
    wrong_tag = any((e.validator in ("enum", "const") and len(e.relative_path) == 1 and e.relative_path[0] in TAGS)
                    or (e.validator == "required" and not e.relative_path and isinstance(e.instance, dict)
                        and any(t in e.validator_value and t not in e.instance for t in TAGS))
                    for e in errors)
    wrong_type = any(e.validator == "type" and not e.relative_path for e in errors)
    return wrong_tag, wrong_type, -max(len(e.relative_path) for e in errors)


def _meant(error):
    """Descend through unions (anyOf) into the branch the caller evidently meant."""
    while error.validator in ("anyOf", "oneOf") and error.context:
        branches: dict[int, list] = {}
        for e in error.context:
            branches.setdefault(e.relative_schema_path[0], []).append(e)
        best = min(branches.values(), key=_branch_rank)
        wrong_tag, wrong_type, _ = _branch_rank(best)
        only_values = len(branches) > 1 and all(e.validator in ("enum", "const") and not e.relative_path for e in best)
        if wrong_tag or wrong_type or only_values:
            return error  # no branch is of this kind (or one lists values): report the union itself
        error = max(best, key=lambda e: len(e.relative_path))
    return error


def _quoted(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else short(value)


def _union_error(error, param: str) -> APIError:
    """No branch of a union fits: say which kinds of value, or which tag values, would."""
    instance = error.instance
    kinds: list[str] = []
    values: list = []
    tags: dict[str, list] = {}
    missing_tag = None
    for e in error.context:
        if e.validator in ("enum", "const") and not e.relative_path:
            values += [v for v in (e.validator_value if e.validator == "enum" else [e.validator_value])
                       if v not in values]
        elif e.validator == "type" and not e.relative_path:
            expected = e.validator_value if isinstance(e.validator_value, list) else [e.validator_value]
            kinds += [_KIND[k] for k in expected if _KIND[k] not in kinds]
        elif e.validator in ("enum", "const") and len(e.relative_path) == 1 and e.relative_path[0] in TAGS:
            allowed = tags.setdefault(e.relative_path[0], [])
            allowed += [v for v in (e.validator_value if e.validator == "enum" else [e.validator_value])
                        if v not in allowed]
        elif e.validator == "required" and not e.relative_path and isinstance(instance, dict):
            missing_tag = missing_tag or next((t for t in TAGS if t in e.validator_value and t not in instance), None)
        if e.validator != "type" and isinstance(instance, dict) and "an object" not in kinds:
            kinds.append("an object")
    if isinstance(instance, dict) and (tags or missing_tag):
        tag = missing_tag or next(t for t in TAGS if t in tags)
        name = f"{param}.{tag}" if param else tag
        if tag not in instance:
            return APIError(400, f"Missing required parameter: '{name}'.", param=name,
                            code="missing_required_parameter")
        supported = ", ".join(_quoted(v) for v in tags.get(tag, []))
        return APIError(400, f"Invalid value for '{name}': {_quoted(instance[tag])}. Supported values are: {supported}.",
                        param=name, code="invalid_value")
    values = [v for v in values if _kind_of(v) == _kind_of(instance)]  # right kind, wrong value
    if values:
        listed = {_kind_of(v) for v in values}  # 'auto' stands for "a string" already
        shown = [_quoted(v) for v in values[:12]] + (["..."] if len(values) > 12 else [])
        supported = ", ".join([*shown, *(k for k in kinds if k not in listed)])
        return APIError(400, f"Invalid value for '{param}': {_quoted(instance)}. Supported values are: {supported}.",
                        param=param or None, code="invalid_value")
    expected = " or ".join(kinds) if len(kinds) < 3 else ", ".join(kinds[:-1]) + " or " + kinds[-1]
    return APIError(400, f"Invalid type for '{param}': expected {expected or 'another kind of value'}, but got "
                         f"{_kind_of(instance)} instead.", param=param or None, code="invalid_type")


def schema_error(error) -> APIError:
    """A jsonschema ``ValidationError`` -> the hosted API's 400 for it."""
    error = _meant(error)
    path = list(error.absolute_path)
    param = param_name(path)
    value, rule = error.instance, error.validator_value
    if error.validator in ("anyOf", "oneOf"):
        return _union_error(error, param)
    if error.validator == "required":
        missing = next((name for name in rule if not (isinstance(value, dict) and name in value)), "?")
        name = param_name([*path, missing])
        return APIError(400, f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
    if error.validator == "additionalProperties":
        extra = next((k for k in value if k not in error.schema.get("properties", {})), "?")
        name = param_name([*path, extra])
        return APIError(400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
    if error.validator == "type":
        expected = rule if isinstance(rule, list) else [rule]
        wanted = " or ".join(_KIND[k] for k in expected)
        return APIError(400, f"Invalid type for '{param}': expected {wanted}, but got {_kind_of(value)} instead.",
                        param=param, code="invalid_type")
    if error.validator in ("enum", "const"):
        allowed = rule if error.validator == "enum" else [rule]
        supported = ", ".join([_quoted(v) for v in allowed[:12]] + (["..."] if len(allowed) > 12 else []))
        return APIError(400, f"Invalid value for '{param}': {_quoted(value)}. Supported values are: {supported}.",
                        param=param, code="invalid_value")
    bounds = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if error.validator in bounds:
        return APIError(400, f"Invalid '{param}': expected a value {bounds[error.validator]} {rule}, but got "
                             f"{short(value)} instead.", param=param, code="invalid_value")
    sizes = {"minItems": "at least {} items", "maxItems": "at most {} items", "minLength": "at least {} characters",
             "maxLength": "at most {} characters", "minProperties": "at least {} entries",
             "maxProperties": "at most {} entries"}
    if error.validator in sizes:
        what = sizes[error.validator].format(rule)
        return APIError(400, f"Invalid '{param}': expected {what}.", param=param, code="invalid_value")
    return APIError(400, f"Invalid '{param or 'body'}': {error.message[:200]}", param=param or None,
                    code="invalid_value")


def warm_up() -> None:
    """Load the schemas and build every operation's validator (at server start, off the request path)."""
    for operation in _extract()["operations"]:
        _validator(operation)
