"""ftkit.local.inference.grammar: constraint specs -> grammars for SmolLM2's tokenizer; hosted strict-schema refusals.

Fast: the tokenizer only (no model). Documents are fed token by token through the grammar the
engine would use, so "accepts" means the engine could generate exactly that text.
"""

from __future__ import annotations

import json

import pytest
from tiny_models import TICKET_SCHEMA, smollm2_tokenizer

pytest.importorskip("llguidance")

from ftkit.local.inference import grammar  # noqa: E402
from ftkit.local.inference.grammar import UnsupportedSchema, compile_constraint  # noqa: E402

EOS = (2,)


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


def accepts(tok, spec: dict, text: str) -> bool:
    """Whether the grammar of ``spec`` lets the engine generate exactly ``text`` and then end."""
    state = compile_constraint(tok, spec, EOS).new_state()
    return all(state.advance(t) for t in tok(text, add_special_tokens=False)["input_ids"]) and state.can_end


def strict(schema: dict, name: str = "answer") -> dict:
    return {"type": "json_schema", "schema": schema, "strict": True, "name": name}


def obj(properties: dict, **extra) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False,
            **extra}


def refusal(tok, spec: dict) -> UnsupportedSchema:
    with pytest.raises(UnsupportedSchema) as info:
        compile_constraint(tok, spec, EOS)
    assert isinstance(info.value, ValueError) and info.value.message in str(info.value)
    return info.value


def test_json_object_accepts_one_object_only(tok):
    spec = {"type": "json_object"}
    assert accepts(tok, spec, json.dumps({"a": [1, 2.5, None, {"b": "ü"}], "c": True}, ensure_ascii=False))
    assert accepts(tok, spec, "{}")
    assert not accepts(tok, spec, "[1, 2]")  # an array is not an object
    assert not accepts(tok, spec, '{"a": 1} {"b": 2}')  # exactly one object
    assert not accepts(tok, spec, 'Sure! {"a": 1}')  # nothing before it
    # whitespace is fixed (", " and ": "): nothing for a model to run away in
    assert not accepts(tok, spec, '{ "a": 1}')
    assert not accepts(tok, spec, '{"a":    1}')
    assert not accepts(tok, spec, '{"a": 1}\n')


def test_the_course_schema_compiles_once_and_constrains_every_field(tok):
    spec = strict(TICKET_SCHEMA, "ticket")
    first = compile_constraint(tok, spec, EOS)
    assert compile_constraint(tok, json.loads(json.dumps(spec)), EOS) is first  # cached per (tokenizer, spec)
    assert accepts(tok, spec, '{"category": "billing", "urgency": "high", "product": "api"}')
    assert not accepts(tok, spec, '{"category": "Billing", "urgency": "high", "product": "api"}')
    assert not accepts(tok, spec, '{"category": "billing", "urgency": "high"}')  # all required
    assert not accepts(tok, spec, '{"urgency": "high", "category": "billing", "product": "api"}')  # schema order
    assert not accepts(tok, spec, '{"category": "billing", "urgency": "high", "product": "api", "x": 1}')


def test_a_complete_answer_allows_only_the_end(tok):
    state = compile_constraint(tok, strict(TICKET_SCHEMA), EOS).new_state()
    ids = tok('{"category": "billing", "urgency": "high", "product": "api"}', add_special_tokens=False)["input_ids"]
    for token in ids[:-1]:
        assert state.advance(token)
        assert not state.can_end and not state.complete
    assert state.advance(ids[-1]) and state.can_end and state.complete
    masks = grammar.allocate_masks(1, len(tok))
    grammar.fill_masks([state], masks)
    allowed = [i for i in range(len(tok)) if masks[0, i // 32] >> (i % 32) & 1]
    assert allowed == list(EOS)


def test_masks_apply_to_the_constrained_rows_only(tok):
    import torch

    states = [compile_constraint(tok, strict(TICKET_SCHEMA), EOS).new_state() for _ in range(2)]
    masks = grammar.allocate_masks(2, len(tok))
    grammar.fill_masks(states, masks)
    logits = torch.zeros(3, len(tok))
    grammar.apply_masks(logits, masks, [0, 2])
    assert torch.isfinite(logits[1]).all()  # row 1 has no constraint
    for row in (0, 2):
        allowed = torch.isfinite(logits[row]).nonzero().flatten().tolist()
        assert allowed and all(tok.decode([t]).startswith("{") for t in allowed)
        assert EOS[0] not in allowed  # an empty answer is not an object


def test_strict_refusals_name_the_keyword_and_its_path(tok):
    e = refusal(tok, strict(obj({"name": {"type": "string", "minLength": 2}}), "person"))
    assert e.param == "response_format.json_schema.schema.properties.name.minLength"
    assert "'minLength' is not permitted" in e.message and "'person'" in e.message

    e = refusal(tok, strict({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                             "required": ["a"], "additionalProperties": False}))
    assert e.param == "response_format.json_schema.schema.required" and "Missing 'b'" in e.message

    e = refusal(tok, strict(obj({"inner": {"type": "object", "properties": {"x": {"type": "integer"}},
                                           "required": ["x"]}})))
    assert e.param == "response_format.json_schema.schema.properties.inner.additionalProperties"

    e = refusal(tok, strict({"type": "array", "items": {"type": "string"}}))
    assert e.param == "response_format.json_schema.schema.type"

    e = refusal(tok, strict(obj({"a": {"anyOf": [{"type": "string"}, {"type": "integer", "not": {"const": 3}}]}})))
    assert e.param == "response_format.json_schema.schema.properties.a.anyOf[1].not"

    e = refusal(tok, strict(obj({"url": {"type": "string", "format": "uri"}})))
    assert e.param.endswith("properties.url.format") and "uri" in e.message

    for keyword, value in [("uniqueItems", True), ("contains", {"type": "integer"})]:
        e = refusal(tok, strict(obj({"xs": {"type": "array", "items": {"type": "integer"}, keyword: value}})))
        assert e.param.endswith(f"properties.xs.{keyword}")

    e = refusal(tok, strict(obj({"a": {"$ref": "https://example.com/schema.json"}})))
    assert e.param.endswith("properties.a.$ref")


def test_a_pattern_the_library_cannot_enforce_is_named(tok):
    e = refusal(tok, strict(obj({"code": {"type": "string", "pattern": "^(?=A)[A-Z]{3}$"}})))
    assert e.param == "response_format.json_schema.schema.properties.code.pattern"
    assert "look-around" in e.message


def test_the_param_prefix_follows_the_request(tok):
    e = refusal(tok, {**strict(obj({"a": {"type": "string", "maxLength": 3}})), "param": "text.format.schema"})
    assert e.param == "text.format.schema.properties.a.maxLength" and e.message.startswith("Invalid schema for text.format")


def test_supported_strict_features_are_enforced(tok):
    schema = obj({
        "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
        "when": {"type": "string", "format": "date"},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "minItems": 1, "maxItems": 2},
        "note": {"type": ["string", "null"]},
        "child": {"anyOf": [{"$ref": "#/$defs/leaf"}, {"type": "null"}]},
    }, **{"$defs": {"leaf": obj({"label": {"type": "string"}, "child": {"anyOf": [{"$ref": "#/$defs/leaf"},
                                                                                    {"type": "null"}]}})}})
    spec = strict(schema)
    good = {"code": "ABC-12", "when": "2026-11-27", "score": 5, "tags": ["a"], "note": None,
            "child": {"label": "x", "child": {"label": "y", "child": None}}}
    assert accepts(tok, spec, json.dumps(good))
    for field, bad in [("code", "abc-12"), ("when", "tomorrow"), ("score", 6), ("tags", []), ("tags", ["a", "b", "a"]),
                       ("note", 3), ("child", {"label": "x"})]:
        assert not accepts(tok, spec, json.dumps({**good, field: bad})), field


def test_a_schema_without_strict_is_enforced_leniently(tok):
    schema = {"type": "object", "properties": {"name": {"type": "string", "minLength": 2}, "age": {"type": "integer"}},
              "required": ["name"]}
    spec = {"type": "json_schema", "schema": schema, "strict": False}
    assert accepts(tok, spec, '{"name": "Ada", "age": 36}')
    assert accepts(tok, spec, '{"name": "Ada"}')  # optional properties stay optional
    assert not accepts(tok, spec, '{"age": 36}')
    assert not accepts(tok, spec, '{"name": 3}')
    # a keyword the library does not implement is ignored, not refused, without strict
    compile_constraint(tok, {"type": "json_schema", "schema": {**schema, "not": {"required": ["x"]}}}, EOS)


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city"]}}}
SEARCH = {"type": "function", "function": {
    "name": "search", "strict": True,
    "parameters": obj({"query": {"type": "string"}, "limit": {"type": "integer"}})}}


def test_a_forced_tool_call_is_one_block_in_the_render_format(tok):
    from ftkit.local.inference.render import parse_tool_calls

    spec = {"type": "tool_call", "tools": [WEATHER, SEARCH], "name": "get_weather"}
    text = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}</tool_call>'
    assert accepts(tok, spec, text)
    content, calls = parse_tool_calls(text)
    assert content is None and calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris", "unit": "c"}
    assert not accepts(tok, spec, text.replace("get_weather", "search"))  # the forced function only
    assert not accepts(tok, spec, text.replace('"c"', '"k"'))  # arguments valid against the schema
    assert not accepts(tok, spec, text.replace('"city": "Paris", ', ""))  # required argument
    assert not accepts(tok, spec, "Let me check. " + text)
    assert not accepts(tok, spec, text + "\n" + text)  # one call unless parallel calls are allowed
    assert accepts(tok, {**spec, "parallel": True}, text + "\n" + text)


def test_any_tool_and_strict_functions(tok):
    spec = {"type": "tool_call", "tools": [WEATHER, SEARCH], "name": None}
    assert accepts(tok, spec, '<tool_call>{"name": "search", "arguments": {"query": "hubs", "limit": 3}}</tool_call>')
    assert accepts(tok, spec, '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>')
    assert not accepts(tok, spec, '<tool_call>{"name": "search", "arguments": {"query": "hubs"}}</tool_call>')
    assert not accepts(tok, spec, '<tool_call>{"name": "other", "arguments": {}}</tool_call>')

    broken = {"type": "function", "function": {"name": "lookup", "strict": True, "parameters": obj(
        {"id": {"type": "string", "minLength": 3}})}}
    e = refusal(tok, {"type": "tool_call", "tools": [WEATHER, broken], "name": None})
    assert e.param == "tools[1].function.parameters.properties.id.minLength" and "'lookup'" in e.message
    e = refusal(tok, {"type": "tool_call", "tools": [WEATHER], "name": "nope"})
    assert e.param == "tool_choice"


def test_auto_with_a_json_answer_is_calls_or_the_answer(tok):
    """tool_choice "auto" with a JSON response format: one grammar, two branches."""
    answer = {**strict(TICKET_SCHEMA, "ticket"), "param": "response_format.json_schema.schema"}
    spec = {"type": "tool_call", "tools": [WEATHER, SEARCH], "name": None, "parallel": True, "answer": answer}
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    ticket = json.dumps({"category": "billing", "urgency": "high", "product": "api"})
    assert accepts(tok, spec, call) and accepts(tok, spec, call + "\n" + call.replace("Oslo", "Rome"))
    assert accepts(tok, spec, ticket)
    assert not accepts(tok, spec, ticket + "\n" + call)  # one branch or the other
    assert not accepts(tok, spec, call + "\n" + ticket)
    assert not accepts(tok, spec, ticket.replace("billing", "refunds"))  # the schema holds
    assert not accepts(tok, spec, "Let me look. " + call)  # no free text
    assert accepts(tok, {**spec, "answer": {"type": "json_object"}}, '{"any": [1]}')
    # a refusal in either branch names its own field
    e = refusal(tok, {**spec, "answer": {**answer, "schema": obj({"id": {"type": "string", "minLength": 3}})}})
    assert e.param == "response_format.json_schema.schema.properties.id.minLength"
    assert refusal(tok, {**spec, "name": "search"}).param == "tool_choice"  # a forced call has no other answer


def test_parallel_calls_are_bounded_and_a_repeat_ends_the_answer(tok):
    from ftkit.local.inference.render import MAX_PARALLEL_CALLS

    spec = {"type": "tool_call", "tools": [WEATHER], "name": None, "parallel": True}
    calls = [f'<tool_call>{{"name": "get_weather", "arguments": {{"city": "c{i}"}}}}</tool_call>'
             for i in range(MAX_PARALLEL_CALLS + 1)]
    assert accepts(tok, spec, "\n".join(calls[:MAX_PARALLEL_CALLS]))
    assert not accepts(tok, spec, "\n".join(calls))  # one call too many
    assert accepts(tok, {**spec, "max_calls": 2}, "\n".join(calls[:2]))
    assert not accepts(tok, {**spec, "max_calls": 2}, "\n".join(calls[:3]))
    state = compile_constraint(tok, spec, EOS).new_state()
    text = ""
    for piece in (calls[0], "\n", calls[1], "\n", calls[0]):
        for t in tok(piece, add_special_tokens=False)["input_ids"]:
            assert state.advance(t)
        text += piece
        assert state.finished(text) == (text.count(calls[0]) == 2)  # only a repeated call ends it early
    assert not grammar.repeats_a_call(calls[0] + "\n" + calls[1])


def test_a_function_without_parameters_takes_an_empty_object(tok):
    ping = {"type": "function", "function": {"name": "ping"}}
    spec = {"type": "tool_call", "tools": [ping], "name": "ping"}
    assert accepts(tok, spec, '<tool_call>{"name": "ping", "arguments": {}}</tool_call>')
    assert not accepts(tok, spec, '<tool_call>{"name": "ping", "arguments": {"x": 1}}</tool_call>')


def test_bad_specs_are_refused(tok):
    assert refusal(tok, {"type": "grammar"}).message.startswith("unknown constraint type")
    assert refusal(tok, {"type": "tool_call", "tools": []}).param == "tools"
    assert refusal(tok, strict(obj({"a": {"type": "strng"}}))).param.endswith("properties.a.type")


def test_token_bytes_are_exact(tok):
    snowman = tok("☃", add_special_tokens=False)["input_ids"]
    pieces = [grammar.token_bytes(tok, t) for t in snowman]
    assert b"".join(pieces) == "☃".encode()
    assert grammar.token_bytes(tok, tok.eos_token_id) == tok.eos_token.encode()
