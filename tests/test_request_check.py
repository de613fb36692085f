"""Hostile and careless requests (issue 12): every body the server cannot use answers OpenAI's
error envelope with a 4xx naming the ``param`` -- never a 500, a traceback or a hang.

Fast: the real app (routes, checks, services, store) runs in-process on a fake engine
(``fake_server`` in conftest.py). ``test_hostile_bodies_over_real_http`` repeats the worst of
them against the real server process.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from conftest import ROOT, SPEC_PATH

from ftkit.local.api import request_check
from ftkit.local.api.parameters import POLICY, deviations_table

MODEL = "SmolLM2-135M-Instruct"
HI = [{"role": "user", "content": "hi"}]
OPERATIONS = {"createChatCompletion": "/v1/chat/completions", "createCompletion": "/v1/completions",
              "createFineTuningJob": "/v1/fine_tuning/jobs",
              "createBatch": "/v1/batches", "createResponse": "/v1/responses"}


def _refused(http, path: str, body, *, status: int = 400, raw: bytes | None = None) -> dict:
    r = http.post(path, json=body) if raw is None else http.post(path, content=raw,
                                                                 headers={"Content-Type": "application/json"})
    assert r.status_code == status, (r.status_code, r.text[:300])
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    return error


# -- the spec extract and the parameter table stay true -------------------------------------------


def test_committed_schema_extract_is_what_the_script_makes(openapi_spec):
    import importlib.util

    spec = importlib.util.spec_from_file_location("extract", ROOT / "scripts" / "extract_request_schemas.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    made = script.render(script.extract(openapi_spec, license_text=(SPEC_PATH.parent / "openai-openapi.LICENSE")
                                        .read_text(encoding="utf-8"),
                                        version=(SPEC_PATH.parent / "openai-openapi.VERSION").read_text(encoding="utf-8")))
    committed = (ROOT / "ftkit" / "local" / "api" / "openapi_requests.json").read_text(encoding="utf-8")
    assert made == committed, "run: python scripts/extract_request_schemas.py"
    assert "MIT License" in json.loads(committed)["license"]


def test_every_spec_parameter_is_classified_and_documented():
    for operation in OPERATIONS:
        assert set(POLICY[operation]) == set(request_check.operation_parameters(operation)), operation
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert deviations_table() in readme, "README's deviations table is out of date: paste deviations_table()"


def test_nesting_is_measured_before_parsing():
    assert request_check.nesting_depth(b'{"a": [1, {"b": "[[[[{{{{"}]}') == 3  # brackets in strings do not count
    assert request_check.nesting_depth(b'"a\\"[["') == 0
    deep = b"[" * 100_000 + b"]" * 100_000
    assert request_check.nesting_depth(deep) == 100_000


# -- the cases issue 12 found, and more -----------------------------------------------------------

CHAT_CASES = [  # (body changes, param)
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages[0].content[0].text"),
    ({"tools": 5}, "tools"),
    ({"tools": True}, "tools"),
    ({"functions": 5}, "functions"),
    ({"functions": True}, "functions"),
    ({"messages": [{"role": "assistant", "content": "x", "tool_calls": 5}]}, "messages[0].tool_calls"),
    ({"messages": [{"role": "assistant", "content": "x", "tool_calls": ["a", "b"]}]}, "messages[0].tool_calls[0]"),
    ({"function_call": "call it"}, "function_call"),
    ({"stream_options": "yes"}, "stream_options"),
    ({"stream_options": 3}, "stream_options"),
    ({"seed": 10**30, "temperature": 1}, "seed"),
    ({"seed": -(10**30)}, "seed"),
    ({"messages": [{"role": "usr", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": {"text": "x"}}]}, "messages[0].content"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": None}, "messages"),
    ({"model": None}, "model"),
    ({"model": 7}, "model"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": 3}, "temperature"),
    ({"top_p": -1}, "top_p"),
    ({"n": "2"}, "n"),
    ({"n": 99}, "n"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_completion_tokens": 1.5}, "max_completion_tokens"),
    ({"stop": [1]}, "stop[0]"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"logprobs": "yes"}, "logprobs"),
    ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),  # without logprobs
    ({"stream": False, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}},
     "response_format.json_schema.name"),
    ({"response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "hi"}]}, "messages"),
    ({"tool_choice": "maybe"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),  # no tools
    ({"tools": [{"type": "function", "function": {"name": "f"}}],
      "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice.function.name"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ({"tools": [{"type": "custom", "custom": {"name": "c"}}]}, "tools[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio",
                                                 "input_audio": {"data": "AAAA", "format": "wav"}}]}]},
     "messages[0].content[0].type"),
    ({"metadata": {"k": 5}}, "metadata.k"),
    ({"metadata": "tag"}, "metadata"),
    ({"not_a_parameter": 1}, "not_a_parameter"),
]


@pytest.mark.parametrize(("changes", "param"), CHAT_CASES, ids=[p for _, p in CHAT_CASES])
def test_bad_chat_requests_are_400_naming_the_param(fake_server, check_schema, changes, param):
    error = _refused(fake_server, "/v1/chat/completions", {"model": MODEL, "messages": HI, **changes})
    check_schema({"error": error}, "ErrorResponse")
    assert error["param"] == param, error
    assert param in error["message"] or param.rsplit(".", 1)[-1] in error["message"]


def test_unimplemented_parameters_are_refused_not_ignored(fake_server, fake_engine):
    """Each refused parameter or value is a 400 naming it (the hosted codes), and nothing is generated."""
    before = len(fake_engine.requests)
    cases = [("audio", {"voice": "alloy", "format": "mp3"}, "unsupported_parameter"),
             ("modalities", ["text", "audio"], "unsupported_value"),
             ("prediction", {"type": "content", "content": "x"}, "unsupported_parameter"),
             ("web_search_options", {}, "unsupported_parameter"),
             ("service_tier", "flex", "unsupported_value"),
             ("reasoning_effort", "low", "unsupported_parameter"),
             ("verbosity", "low", "unsupported_parameter")]
    for name, value, code in cases:
        error = _refused(fake_server, "/v1/chat/completions", {"model": MODEL, "messages": HI, name: value})
        assert (error["param"], error["code"]) == (name, code), error
        assert name in error["message"]
    assert len(fake_engine.requests) == before
    # what only carries metadata is accepted, as are the implemented values of the partly refused ones
    ok = fake_server.post("/v1/chat/completions", json={
        "model": MODEL, "messages": HI, "max_tokens": 2, "user": "u1", "metadata": {"k": "v"}, "store": False,
        "safety_identifier": "s", "prompt_cache_key": "p", "service_tier": "auto", "presence_penalty": 0.5,
        "frequency_penalty": -1, "logit_bias": {"50": -100}, "modalities": ["text"], "audio": None})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_a_body_nested_100k_deep_is_a_400(fake_server, operation):
    for raw, param in ((b"[" * 100_000 + b"]" * 100_000, None),
                       (b'{"model": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "model"),
                       (b'{"metadata": {"a": ' + b"{\"b\": " * 50_000 + b"1" + b"}" * 50_001 + b"}", "metadata")):
        error = _refused(fake_server, OPERATIONS[operation], None, raw=raw)
        assert error["code"] == "too_deeply_nested" and error["param"] == param


@pytest.mark.parametrize("raw", [b"", b"{", b"[1, 2]", b'"text"', b'{"model": NaN}', b'{"temperature": 1e999}',
                                 b"\xff\xfe{}", b'{"model": "' + b"9" * 10 + b'"' + b"}" * 3])
def test_unparseable_bodies_are_400(fake_server, raw):
    error = _refused(fake_server, "/v1/chat/completions", None, raw=raw)
    assert error["code"] == "invalid_json"


def test_huge_integers_and_bodies_are_refused(fake_server):
    error = _refused(fake_server, "/v1/chat/completions", None,
                     raw=b'{"model": "m", "messages": [], "seed": ' + b"9" * 5000 + b"}")
    assert error["code"] == "invalid_json"
    big = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"x" * (request_check.MAX_BODY_BYTES + 10) + b'"}]}'
    error = _refused(fake_server, "/v1/chat/completions", None, raw=big, status=413)
    assert error["code"] == "request_too_large"


def test_a_lone_surrogate_is_replaced_not_an_error(fake_server, fake_engine):
    raw = json.dumps({"model": MODEL, "max_tokens": 3, "messages": [
        {"role": "user", "content": "broken \ud800 text"}, {"role": "assistant", "content": [
            {"type": "text", "text": "pair \ud83d\ude00 ok"}]}, {"role": "user", "content": "again\udfff"}]})
    assert "\\ud800" in raw
    r = fake_server.post("/v1/chat/completions", content=raw.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    messages = fake_engine.requests[-1].messages
    assert messages[0]["content"] == "broken \ufffd text" and messages[2]["content"] == "again\ufffd"
    assert messages[1]["content"][0]["text"] == "pair \U0001f600 ok"  # a real pair stays one character


def test_bad_job_and_batch_bodies_name_the_param(fake_server):
    cases = [("/v1/fine_tuning/jobs", {"training_file": "file-x"}, "model"),
             ("/v1/fine_tuning/jobs", {"model": MODEL, "training_file": 5}, "training_file"),
             ("/v1/fine_tuning/jobs", {"model": MODEL, "training_file": "f", "hyperparameters": {"n_epochs": "many"}},
              "hyperparameters.n_epochs"),
             ("/v1/fine_tuning/jobs", {"model": MODEL, "training_file": "f", "method": {"type": "magic"}},
              "method.type"),
             ("/v1/fine_tuning/jobs", {"model": MODEL, "training_file": "f", "suffix": ["x"]}, "suffix"),
             ("/v1/batches", {"input_file_id": "file-x", "endpoint": "/v1/chat/completions"}, "completion_window"),
             ("/v1/batches", {"input_file_id": 1, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
              "input_file_id"),
             ("/v1/batches", {"input_file_id": "f", "endpoint": "/v1/chat/completions", "completion_window": "24h",
                              "output_expires_after": {"anchor": "created_at", "seconds": 3600}},
              "output_expires_after")]
    for path, body, param in cases:
        assert _refused(fake_server, path, body)["param"] == param, (path, body)


def test_bad_query_parameters_and_upload_fields(fake_server):
    assert _refused_get(fake_server, "/v1/fine_tuning/jobs?limit=0")["param"] == "limit"
    assert _refused_get(fake_server, "/v1/fine_tuning/jobs?limit=abc")["param"] == "limit"
    assert _refused_get(fake_server, "/v1/files?order=sideways")["param"] == "order"
    r = fake_server.post("/v1/files", data={"purpose": "fine-tune", "expires_after[anchor]": "created_at",
                                            "expires_after[seconds]": "3600"}, files={"file": ("a.jsonl", b"{}\n")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "expires_after"


def _refused_get(http, url: str) -> dict:
    r = http.get(url)
    assert r.status_code == 400, r.text
    return r.json()["error"]


def test_the_sdk_sees_bad_request_errors(fake_client):
    with pytest.raises(openai.BadRequestError) as err:
        fake_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                            tool_choice="required")
    assert err.value.body["param"] == "tool_choice"
    with pytest.raises(openai.NotFoundError) as err:
        fake_client.chat.completions.create(model="ft:nope", messages=HI)
    assert err.value.body == {"message": "The model 'ft:nope' does not exist or you do not have access to it.",
                              "type": "invalid_request_error", "param": "model", "code": "model_not_found"}


@pytest.mark.slow
def test_hostile_bodies_over_real_http(local_server):
    """The same checks hold on the real server process (uvicorn, the real engine)."""
    headers = {"Authorization": f"Bearer {local_server.key}", "Content-Type": "application/json"}
    for path in OPERATIONS.values():
        r = httpx.post(local_server.base_url + path[3:], content=b"[" * 100_000 + b"]" * 100_000, headers=headers,
                       timeout=60)
        assert r.status_code == 400 and r.json()["error"]["code"] == "too_deeply_nested", r.text
    for changes, param in CHAT_CASES[:12]:
        r = httpx.post(local_server.base_url + "/chat/completions", headers=headers, timeout=60,
                       json={"model": MODEL, "messages": HI, **changes})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    r = httpx.post(local_server.base_url + "/chat/completions", headers=headers, timeout=120,
                   content=json.dumps({"model": MODEL, "max_tokens": 2, "messages": [
                       {"role": "user", "content": "lone \ud800 surrogate"}]}).encode())
    assert r.status_code == 200, r.text
    assert local_server.health()["status"] == "ok"
