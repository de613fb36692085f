"""Regenerate ``ftkit/local/api/openapi_requests.json``: the request-body schemas of the operations the
local server implements, cut out of OpenAI's OpenAPI spec (MIT licence, kept in the file).

The server type-checks every JSON body against these before a handler reads it (see
``ftkit/local/api/request_check.py``); the full spec (87k lines of YAML) is not needed at run time.

    python scripts/extract_request_schemas.py [SPEC.yaml] [OUT.json]

Defaults: ``tests/data/openai-openapi.yaml`` -> ``ftkit/local/api/openapi_requests.json``.
``tests/test_request_check.py`` checks that the committed file is what this script makes.

What the extract changes, so that a JSON Schema 2020-12 validator reads it as the spec means it:

* ``#/components/schemas/X`` references become ``#/$defs/X`` (one self-contained document);
* OpenAPI 3.0 ``nullable: true`` becomes a ``"null"`` type, boolean ``exclusiveMinimum`` /
  ``exclusiveMaximum`` become the 2020-12 numbers;
* a property that may be null is not required: the spec marks some nullable request fields
  required (``strict`` and ``parameters`` of a Responses function tool) that the hosted API
  and its SDKs treat as optional, and a request check must never be stricter than the API;
* ``oneOf`` becomes ``anyOf``: several of the spec's unions overlap (a value can match two
  branches, which ``oneOf`` would refuse) and the server only needs to know that a value
  matches *some* branch;
* text meant for people (descriptions, examples, titles) and code-generator hints (``x-…``,
  ``discriminator``, ``format``, ``default``, ``deprecated``) are dropped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "tests" / "data" / "openai-openapi.yaml"
OUT = ROOT / "ftkit" / "local" / "api" / "openapi_requests.json"
LICENSE = ROOT / "tests" / "data" / "openai-openapi.LICENSE"
VERSION = ROOT / "tests" / "data" / "openai-openapi.VERSION"

# operationId -> (method, path) of every JSON-body operation the local server implements
OPERATIONS = {
    "createChatCompletion": ("post", "/chat/completions"),
    "createCompletion": ("post", "/completions"),
    "createFineTuningJob": ("post", "/fine_tuning/jobs"),
    "createBatch": ("post", "/batches"),
    "createResponse": ("post", "/responses"),
    "runGrader": ("post", "/fine_tuning/alpha/graders/run"),
    "validateGrader": ("post", "/fine_tuning/alpha/graders/validate"),
    "updateChatCompletion": ("post", "/chat/completions/{completion_id}"),
    "createEval": ("post", "/evals"),
    "updateEval": ("post", "/evals/{eval_id}"),
    "createEvalRun": ("post", "/evals/{eval_id}/runs"),
}
DROPPED = {"description", "example", "examples", "title", "discriminator", "format", "default", "deprecated",
           "readOnly", "writeOnly"}


def _clean(node):
    if isinstance(node, list):
        return [_clean(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in DROPPED or key.startswith("x-"):
            continue
        if key == "$ref":
            out[key] = "#/$defs/" + value.rsplit("/", 1)[-1]
        elif key == "oneOf":
            out["anyOf"] = _clean(value)
        elif key == "properties":  # property names are data, not keywords
            out[key] = {name: _clean(schema) for name, schema in value.items()}
        else:
            out[key] = _clean(value)
    if out.pop("nullable", False):
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"].append(None)
        if "type" not in out and "enum" not in out:
            out = {"anyOf": [out, {"type": "null"}]}
    if isinstance(out.get("required"), list) and isinstance(out.get("properties"), dict):
        out["required"] = [name for name in out["required"]
                           if not _admits_null(out["properties"].get(name, {}))]
    for bound in ("Minimum", "Maximum"):
        flag = out.get(f"exclusive{bound}")
        if isinstance(flag, bool):
            limit = out.pop(bound.lower(), None)
            out.pop(f"exclusive{bound}")
            if limit is not None:
                out[f"exclusive{bound}" if flag else bound.lower()] = limit
    return out


def _admits_null(schema: dict) -> bool:
    """Whether an (already cleaned) schema accepts null, without following references."""
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(_admits_null(branch) for branch in schema.get("anyOf", []) if isinstance(branch, dict))


def _references(node, found: set[str], schemas: dict) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if name not in found:
                found.add(name)
                _references(schemas[name], found, schemas)
        for value in node.values():
            _references(value, found, schemas)
    elif isinstance(node, list):
        for value in node:
            _references(value, found, schemas)


def extract(spec: dict, *, license_text: str = "", version: str = "") -> dict:
    """The self-contained extract (see the module docstring)."""
    schemas = spec["components"]["schemas"]
    operations, needed, inline = {}, set(), {}
    for operation_id, (method, path) in OPERATIONS.items():
        operation = spec["paths"][path][method]
        assert operation["operationId"] == operation_id, (path, operation["operationId"])
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            needed.add(name)
        else:  # a body written inline (updateEval, updateChatCompletion): named after its operation
            name = operation_id + "Body"
            inline[name] = schema
        operations[operation_id] = {"method": method.upper(), "path": "/v1" + path, "schema": name}
        _references(schema if "$ref" not in schema else schemas[name], needed, schemas)
    defs = {name: _clean(schemas[name]) for name in sorted(needed)}
    defs.update({name: _clean(schema) for name, schema in sorted(inline.items())})
    _widen(defs)
    return {
        "source": "OpenAI OpenAPI spec (github.com/openai/openai-openapi), " + version.strip(),
        "license": license_text.strip(),
        "generated_by": "scripts/extract_request_schemas.py -- do not edit by hand",
        "operations": operations,
        "$defs": defs,
    }


def _widen(defs: dict) -> None:
    """Where OpenAI's own documentation sends what its spec does not admit, admit it too (each one
    a documented deviation, README "Deviations"):

    * ``GraderMulti.graders``: the spec types it as one grader; OpenAI's graders guide and its
      reinforcement fine-tuning examples pass an object of named graders
      (``{"category": {...}, "urgency": {...}}``), which ``calculate_output`` refers to by name.
    """
    multi = defs.get("GraderMulti")
    if multi is not None:
        one = multi["properties"]["graders"]
        multi["properties"]["graders"] = {"anyOf": [one, {"type": "object", "additionalProperties": one}]}


def render(extract_: dict) -> str:
    return json.dumps(extract_, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    import yaml

    spec_path = Path(argv[0]) if argv else SPEC
    out = Path(argv[1]) if len(argv) > 1 else OUT
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    text = render(extract(spec, license_text=LICENSE.read_text(encoding="utf-8"),
                          version=VERSION.read_text(encoding="utf-8")))
    out.write_text(text, encoding="utf-8")
    print(f"{out}: {len(json.loads(text)['$defs'])} schemas for {len(OPERATIONS)} operations, {len(text):,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
