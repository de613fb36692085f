"""The chat service (``ftkit/local/services/chat.py``) through the real routes and the official SDK, on a
fake engine (tests/fake_engine.py): what reaches the engine (constraint, logprobs, prompt ids,
max_tokens) and what comes back (hosted shapes, checked against the spec), streaming, ``n``,
tool choice, the Batch API. Fast: no model is loaded.
"""

from __future__ import annotations

import json
import time

import openai
import pytest
from pydantic import BaseModel

MODEL = "SmolLM2-135M-Instruct"
HI = [{"role": "user", "content": "hi"}]
ORDER_TOOL = {"type": "function", "function": {
    "name": "get_order", "description": "Look up an order", "strict": True,
    "parameters": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"],
                   "additionalProperties": False}}}
REFUND_TOOL = {"type": "function", "function": {
    "name": "refund", "parameters": {"type": "object", "properties": {"amount": {"type": "number"}},
                                     "required": ["amount"]}}}


class Ticket(BaseModel):
    category: str
    urgent: bool
    order_ids: list[str]


def _last(fake_engine):
    return fake_engine.requests[-1]


def _sse(http, body: dict) -> list[dict]:
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[len("data: "):]) for line in lines[:-1]]


def test_plain_answer_usage_and_one_tokenisation(fake_client, fake_engine, check_schema):
    calls = []
    encode = fake_engine.encode_prompt
    fake_engine.encode_prompt = lambda *a, **k: calls.append(a) or encode(*a, **k)
    try:
        raw = fake_client.chat.completions.with_raw_response.create(model=MODEL, messages=HI, max_tokens=4)
    finally:
        fake_engine.encode_prompt = encode
    check_schema(raw.http_response.json(), "CreateChatCompletionResponse")
    r = raw.parse()
    request = _last(fake_engine)
    assert len(calls) == 1  # rendered and tokenised once, by the service
    assert r.usage.prompt_tokens == len(request.prompt_ids) and r.usage.completion_tokens == 4
    assert r.usage.total_tokens == r.usage.prompt_tokens + 4
    assert r.choices[0].finish_reason == "length" and r.choices[0].logprobs is None
    assert request.constraint is None and request.logprobs is False and request.max_tokens == 4


def test_vanishing_temperature_or_top_p_is_greedy(fake_client, fake_engine):
    for sampling in ({"temperature": 1e-9}, {"top_p": 0}, {"temperature": 0.0001, "top_p": 0.5}):
        fake_client.chat.completions.create(model=MODEL, messages=HI, max_tokens=2, seed=1, **sampling)
        assert _last(fake_engine).temperature == 0.0, sampling
    fake_client.chat.completions.create(model=MODEL, messages=HI, max_tokens=2, temperature=0.7, top_p=0.9)
    assert (_last(fake_engine).temperature, _last(fake_engine).top_p) == (0.7, 0.9)


def test_max_tokens_default_and_the_context_check(fake_client, fake_engine):
    fake_engine.context = 40
    try:
        fake_client.chat.completions.create(model=MODEL, messages=HI)
        prompt = len(_last(fake_engine).prompt_ids)
        assert _last(fake_engine).max_tokens == 40 - prompt  # no max_tokens: what the context leaves
        with pytest.raises(openai.BadRequestError) as err:
            fake_client.chat.completions.create(model=MODEL, messages=HI, max_completion_tokens=40)
        assert err.value.code == "context_length_exceeded" and err.value.param == "messages"
        assert f"{prompt} in the messages, 40 in the completion" in err.value.message
        with pytest.raises(openai.BadRequestError) as err:
            fake_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "word " * 60}])
        assert err.value.code == "context_length_exceeded"
    finally:
        fake_engine.context = 4096


def test_parse_with_a_pydantic_model(fake_client, fake_engine, check_schema):
    raw = fake_client.chat.completions.with_raw_response.parse(model=MODEL, messages=HI, response_format=Ticket)
    check_schema(raw.http_response.json(), "CreateChatCompletionResponse")
    parsed = raw.parse().choices[0].message.parsed
    assert isinstance(parsed, Ticket) and parsed.order_ids == ["text"]
    spec = _last(fake_engine).constraint
    assert spec["type"] == "json_schema" and spec["strict"] is True
    assert spec["schema"]["required"] == ["category", "urgent", "order_ids"]
    assert fake_engine.checked[-1] == spec  # compiled (checked) before generation


def test_json_object_needs_json_in_the_messages(fake_client, fake_engine):
    r = fake_client.chat.completions.create(model=MODEL, response_format={"type": "json_object"},
                                            messages=[{"role": "user", "content": "Answer in JSON."}])
    assert json.loads(r.choices[0].message.content) == {"answer": "fake"}
    assert _last(fake_engine).constraint == {"type": "json_object"}
    with pytest.raises(openai.BadRequestError) as err:
        fake_client.chat.completions.create(model=MODEL, messages=HI, response_format={"type": "json_object"})
    assert err.value.param == "messages"


def test_unsupported_schema_features_are_400_before_generating(fake_client, fake_engine):
    before = len(fake_engine.requests)
    schema = {"type": "object", "properties": {"when": {"type": "string", "format": "date-time"}},
              "required": ["when"], "additionalProperties": False}
    with pytest.raises(openai.BadRequestError) as err:
        fake_client.chat.completions.create(model=MODEL, messages=HI, response_format={
            "type": "json_schema", "json_schema": {"name": "event", "schema": schema, "strict": True}})
    assert err.value.param == "response_format.json_schema.schema.properties.when.format"
    assert err.value.code == "invalid_json_schema" and "format" in err.value.message
    assert len(fake_engine.requests) == before


def test_logprobs_in_the_hosted_shape(fake_client, fake_engine, check_schema):
    raw = fake_client.chat.completions.with_raw_response.create(model=MODEL, messages=HI, max_tokens=3,
                                                                logprobs=True, top_logprobs=2)
    check_schema(raw.http_response.json(), "CreateChatCompletionResponse")
    choice = raw.parse().choices[0]
    assert _last(fake_engine).logprobs is True and _last(fake_engine).top_logprobs == 2
    tokens = choice.logprobs.content
    assert "".join(t.token for t in tokens) == choice.message.content
    assert all(bytes(t.bytes).decode() == t.token and len(t.top_logprobs) == 2 for t in tokens)
    assert tokens[1].logprob == -0.25 and tokens[1].top_logprobs[1].token == "other"
    assert choice.logprobs.refusal is None
    no_top = fake_client.chat.completions.create(model=MODEL, messages=HI, max_tokens=2, logprobs=True)
    assert [t.top_logprobs for t in no_top.choices[0].logprobs.content] == [[], []]


def test_streaming_matches_the_whole_answer(fake_server, fake_client, check_schema):
    body = {"model": MODEL, "messages": HI, "max_tokens": 6, "n": 2, "logprobs": True, "top_logprobs": 1,
            "stream_options": {"include_usage": True}}
    whole = fake_client.chat.completions.create(**{k: v for k, v in body.items() if k != "stream_options"})
    chunks = _sse(fake_server, body)
    for c in chunks:
        check_schema(c, "CreateChatCompletionStreamResponse")
    assert [c["choices"][0]["delta"].get("role") for c in chunks[:1]] == ["assistant"]
    for index in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["index"] == index]
        text = "".join(ch["delta"].get("content") or "" for ch in mine)
        assert text == whole.choices[index].message.content
        streamed = [t["token"] for ch in mine if ch["logprobs"] for t in ch["logprobs"]["content"]]
        assert streamed == [t.token for t in whole.choices[index].logprobs.content]
        assert mine[-1]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12
    assert all(c["usage"] is None for c in chunks[:-1])  # include_usage: null until the last chunk
    # the SDK's stream helper puts it back together
    with fake_client.chat.completions.stream(model=MODEL, messages=HI, max_tokens=50) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == fake_client.chat.completions.create(
        model=MODEL, messages=HI, max_tokens=50).choices[0].message.content
    assert final.choices[0].finish_reason == "stop"


def test_tool_choice_required_and_named_force_a_call(fake_client, fake_engine, check_schema):
    raw = fake_client.chat.completions.with_raw_response.create(
        model=MODEL, messages=HI, tools=[ORDER_TOOL, REFUND_TOOL], tool_choice="required")
    check_schema(raw.http_response.json(), "CreateChatCompletionResponse")
    choice = raw.parse().choices[0]
    assert _last(fake_engine).constraint == {"type": "tool_call", "tools": [ORDER_TOOL, REFUND_TOOL], "name": None,
                                              "parallel": True, "param": "tools"}
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls[0].function.name == "get_order"
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"id": "text"}
    named = fake_client.chat.completions.create(model=MODEL, messages=HI, tools=[ORDER_TOOL, REFUND_TOOL],
                                                tool_choice={"type": "function", "function": {"name": "refund"}})
    assert _last(fake_engine).constraint["name"] == "refund"
    assert _last(fake_engine).constraint["parallel"] is False  # a named tool is called once
    assert json.loads(named.choices[0].message.tool_calls[0].function.arguments) == {"amount": 1.5}
    # the SDK's strict pydantic tools parse their arguments
    parsed = fake_client.chat.completions.parse(model=MODEL, messages=HI, tool_choice="required",
                                                tools=[openai.pydantic_function_tool(Ticket)])
    assert isinstance(parsed.choices[0].message.tool_calls[0].function.parsed_arguments, Ticket)


def test_tool_choice_none_and_auto(fake_client, fake_engine):
    fake_client.chat.completions.create(model=MODEL, messages=HI, tools=[ORDER_TOOL], tool_choice="none")
    request = _last(fake_engine)
    assert request.tools is None and request.constraint is None  # the tools are not shown at all
    fake_engine.text = ('Sure. <tool_call>{"name": "get_order", "arguments": {"id": "1"}}</tool_call>'
                        '<tool_call>{"name": "refund", "arguments": {"amount": 2}}</tool_call>')
    try:
        both = fake_client.chat.completions.create(model=MODEL, messages=HI, tools=[ORDER_TOOL, REFUND_TOOL])
        assert _last(fake_engine).tools == [ORDER_TOOL, REFUND_TOOL] and _last(fake_engine).constraint is None
        assert [c.function.name for c in both.choices[0].message.tool_calls] == ["get_order", "refund"]
        assert both.choices[0].message.content == "Sure."
        one = fake_client.chat.completions.create(model=MODEL, messages=HI, tools=[ORDER_TOOL, REFUND_TOOL],
                                                  parallel_tool_calls=False)
        assert [c.function.name for c in one.choices[0].message.tool_calls] == ["get_order"]
        legacy = fake_client.chat.completions.create(model=MODEL, messages=HI, functions=[ORDER_TOOL["function"]])
        assert legacy.choices[0].finish_reason == "function_call"
        assert legacy.choices[0].message.function_call.name == "get_order"
    finally:
        from fake_engine import DEFAULT_TEXT

        fake_engine.text = DEFAULT_TEXT
    # JSON and a free choice of tools: one grammar with both branches (a call, or else the JSON)
    answer = fake_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "JSON please"}],
                                                 tools=[ORDER_TOOL], response_format={"type": "json_object"})
    assert _last(fake_engine).constraint == {"type": "tool_call", "tools": [ORDER_TOOL], "name": None,
                                             "parallel": True, "answer": {"type": "json_object"}, "param": "tools"}
    assert answer.choices[0].finish_reason == "tool_calls"


def test_streamed_tool_calls_are_incremental_deltas(fake_server, fake_client, fake_engine, check_schema):
    """As OpenAI streams them: a first delta with the call's id, type, name and empty arguments,
    then the arguments fragment by fragment, as they are decoded (the fake engine decodes a word
    at a time); the SDK's stream helper assembles the same call the whole answer has."""
    chunks = _sse(fake_server, {"model": MODEL, "messages": HI, "tools": [ORDER_TOOL], "tool_choice": "required"})
    for c in chunks:
        check_schema(c, "CreateChatCompletionStreamResponse")
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [d["tool_calls"][0] for d in deltas if d.get("tool_calls")]
    first, fragments = calls[0], [c["function"]["arguments"] for c in calls[1:]]
    assert first["index"] == 0 and first["id"].startswith("call_") and first["type"] == "function"
    assert first["function"] == {"name": "get_order", "arguments": ""}
    assert len(fragments) >= 2 and all(set(c) == {"index", "function"} and set(c["function"]) == {"arguments"}
                                       for c in calls[1:])
    assert json.loads("".join(fragments)) == {"id": "text"}
    assert not any(d.get("content") for d in deltas)  # no markup in the content
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    with fake_client.chat.completions.stream(model=MODEL, messages=HI, tools=[ORDER_TOOL],
                                             tool_choice="required") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_completion()
    assert kinds.count("tool_calls.function.arguments.delta") >= 2
    assert kinds.count("tool_calls.function.arguments.done") == 1
    whole = fake_client.chat.completions.create(model=MODEL, messages=HI, tools=[ORDER_TOOL], tool_choice="required")
    assert final.choices[0].message.tool_calls[0].function.arguments == \
        whole.choices[0].message.tool_calls[0].function.arguments
    # legacy functions stream function_call deltas the same way
    chunks = _sse(fake_server, {"model": MODEL, "messages": HI, "functions": [ORDER_TOOL["function"]],
                                "function_call": {"name": "get_order"}})
    for c in chunks:
        check_schema(c, "CreateChatCompletionStreamResponse")
    legacy = [c["choices"][0]["delta"]["function_call"] for c in chunks
              if c["choices"] and c["choices"][0]["delta"].get("function_call")]
    assert legacy[0] == {"name": "get_order", "arguments": ""} and len(legacy) >= 3
    assert json.loads("".join(f["arguments"] for f in legacy)) == {"id": "text"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "function_call"
    # free text with tools ("auto"): text streams as content, a call as tool_calls deltas
    fake_engine.text = 'Let me look. <tool_call>{"name": "get_order", "arguments": {"id": "7"}}</tool_call>'
    try:
        chunks = _sse(fake_server, {"model": MODEL, "messages": HI, "tools": [ORDER_TOOL]})
    finally:
        from fake_engine import DEFAULT_TEXT

        fake_engine.text = DEFAULT_TEXT
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "Let me look."
    assert json.loads("".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas
                              if d.get("tool_calls"))) == {"id": "7"}


def test_engine_failures_are_500_in_the_envelope_or_in_band(fake_server, fake_engine):
    fake_engine.fail_next = True
    r = fake_server.post("/v1/chat/completions", json={"model": MODEL, "messages": HI})
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    fake_engine.fail_next = True
    with fake_server.stream("POST", "/v1/chat/completions", json={"model": MODEL, "messages": HI, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert json.loads(lines[-1][len("data: "):])["error"]["type"] == "server_error"


def test_batch_lines_take_the_same_chat_path(fake_client, fake_engine, check_schema, tmp_path):
    lines = [
        {"custom_id": "schema", "method": "POST", "url": "/v1/chat/completions", "body": {
            "model": MODEL, "messages": HI, "response_format": {
                "type": "json_schema", "json_schema": {"name": "t", "schema": Ticket.model_json_schema()}}}},
        {"custom_id": "logprobs", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": MODEL, "messages": HI, "max_tokens": 2, "logprobs": True}},
        {"custom_id": "bad-type", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}},
        {"custom_id": "no-model", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "nope", "messages": HI}},
        {"custom_id": "refused", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": MODEL, "messages": HI, "service_tier": "flex"}},
    ]
    path = tmp_path / "batch.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    f = fake_client.files.create(file=path.open("rb"), purpose="batch")
    batch = fake_client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 60
    while batch.status not in ("completed", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
        batch = fake_client.batches.retrieve(batch.id)
    assert batch.status == "completed", batch.errors
    out = {o["custom_id"]: o for o in map(json.loads, fake_client.files.content(batch.output_file_id).text.splitlines())}
    for o in out.values():
        check_schema(o["response"]["body"], "CreateChatCompletionResponse")
    assert Ticket.model_validate_json(out["schema"]["response"]["body"]["choices"][0]["message"]["content"])
    assert out["logprobs"]["response"]["body"]["choices"][0]["logprobs"]["content"][0]["token"] == "Hello "
    errors = {e["custom_id"]: e["response"] for e in map(json.loads,
                                                          fake_client.files.content(batch.error_file_id).text.splitlines())}
    assert errors["bad-type"]["body"]["error"]["param"] == "messages[0].content[0].text"
    assert errors["no-model"]["status_code"] == 404 and errors["no-model"]["body"]["error"]["code"] == "model_not_found"
    assert errors["refused"]["body"]["error"]["code"] == "unsupported_value"


def test_a_deeply_nested_batch_line_is_that_lines_error(fake_client, tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_bytes(b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", '
                     b'"messages": []}}\n' + b"[" * 50_000 + b"]" * 50_000 + b"\n")
    f = fake_client.files.create(file=path.open("rb"), purpose="batch")
    batch = fake_client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 30
    while batch.status not in ("completed", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
        batch = fake_client.batches.retrieve(batch.id)
    assert batch.status == "failed"
    assert [e.line for e in batch.errors.data] == [2] and "nested" in batch.errors.data[0].message


def test_every_list_is_one_page_style(fake_client, fake_server, check_schema, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n')
    ids = [fake_client.files.create(file=path.open("rb"), purpose="batch").id for _ in range(3)]
    first = fake_server.get("/v1/files", params={"limit": 2}).json()
    check_schema(first, "ListFilesResponse")
    assert first["data"][0]["id"] == ids[-1] and first["has_more"] is True
    assert (first["first_id"], first["last_id"]) == (ids[-1], ids[-2])
    rest = fake_server.get("/v1/files", params={"limit": 2, "after": first["last_id"]}).json()
    assert rest["data"][0]["id"] == ids[0]
    oldest = fake_server.get("/v1/files", params={"order": "asc", "limit": 1}).json()
    assert oldest["has_more"] is True
    for url in ("/v1/files", "/v1/fine_tuning/jobs", "/v1/batches"):
        body = fake_server.get(url).json()
        assert set(body) == {"object", "data", "has_more", "first_id", "last_id"}, url


def test_langchain_structured_output_on_both_apis(fake_server, fake_engine):
    """LangChain's ChatOpenAI (json_schema structured output, the default) reads what the server sends."""
    pytest.importorskip("langchain_openai")
    from langchain_openai import ChatOpenAI

    for use_responses_api in (False, True):
        llm = ChatOpenAI(model=MODEL, base_url="http://local.test/v1", api_key=fake_server.headers["Authorization"][7:],
                         http_client=fake_server, max_retries=0, use_responses_api=use_responses_api)
        result = llm.with_structured_output(Ticket).invoke("Classify: my card was charged twice")
        assert isinstance(result, Ticket), use_responses_api
        assert fake_engine.requests[-1].constraint["type"] == "json_schema"
        tool_result = llm.with_structured_output(Ticket, method="function_calling").invoke("Classify this")
        assert isinstance(tool_result, Ticket), use_responses_api
        assert fake_engine.requests[-1].constraint == {
            "type": "tool_call", "name": "Ticket", "tools": fake_engine.requests[-1].constraint["tools"],
            "parallel": False, "param": "tools"}


def test_the_tool_call_reader_gives_the_same_answer_whole_or_piece_by_piece():
    """The one reader behind whole answers and streams: content without markup, calls as soon as
    their names are whole, repeats dropped, a cut-off call kept as far as it was written."""
    from ftkit.local.inference.render import ToolCallReader

    def read(text: str, step: int, max_calls=None, cut=False):
        reader, events = ToolCallReader(max_calls), []
        for i in range(0, len(text), step):
            events += reader.feed(text[i:i + step])
        events += reader.finish(cut)
        return reader, events

    order = '<tool_call>{"name": "get_order", "arguments": {"id": "1"}}</tool_call>'
    refund = '<tool_call>{"name": "refund", "arguments": {"amount": 2}}</tool_call>'
    cases = {  # text: (content, [(name, arguments, whole)])
        "Sure. " + order + "\n" + order + "\n" + refund: ("Sure.", [("get_order", '{"id": "1"}', True),
                                                                  ("refund", '{"amount": 2}', True)]),
        order + "\n" + order[:30]: ("", [("get_order", '{"id": "1"}', True)]),  # a repeat, cut: dropped
        '<tool_call>{"name": "get_': ("", []),  # cut inside the name: nothing
        order[:-20]: ("", [("get_order", '{"id', False)]),  # cut inside the arguments
        "a < b <tool": ("a < b <tool", []),  # what only looked like the start of a call is text
        "x <tool_call>not a call</tool_call> y": ("x  y", []),
        '<tool_call>{"arguments": {"a": 1}, "name": "f"}</tool_call>': ("", [("f", '{"a": 1}', True)]),
    }
    for text, (content, calls) in cases.items():
        for step in (1, 3, len(text)):
            reader, events = read(text, step)
            assert reader.content == content and "<tool" not in content.replace("a < b <tool", ""), (text, step)
            assert [(c["name"], c["arguments"], c["whole"]) for c in reader.calls] == calls, (text, step)
            assert "".join(e[1] for e in events if e[0] == "text") == content
            for index, call in enumerate(reader.calls):
                assert "".join(e[2] for e in events if e[0] == "arguments" and e[1] == index) == call["arguments"]
                assert [e[2] for e in events if e[0] == "done" and e[1] == index] == [call["whole"]]
    cut, _ = read("Sure. <tool_", 1, cut=True)  # cut by max_tokens just as a call began
    assert cut.content == "Sure." and not cut.calls
    one, _ = read(order + "\n" + refund, 1, max_calls=1)
    assert [c["name"] for c in one.calls] == ["get_order"]
    _, events = read(order, 1)  # piece by piece: the arguments come in fragments, after the call's start
    kinds = [e[0] for e in events]
    assert kinds[0] == "call" and kinds.count("arguments") > 3 and kinds[-1] == "done"


def test_without_max_tokens_the_answer_may_fill_the_context(fake_client, fake_engine):
    """As hosted: no max_tokens (or max_completion_tokens, or Responses' max_output_tokens) means
    up to the context's end, not a fixed default; the engine plans its batches for shorter answers."""
    from ftkit.local.inference.engine import PLANNED_ANSWER_TOKENS, GenerationRequest, _planned

    fake_client.chat.completions.create(model=MODEL, messages=HI)
    assert _last(fake_engine).max_tokens == 4096 - len(_last(fake_engine).prompt_ids) > 512
    fake_client.responses.create(model=MODEL, input="hi")
    assert _last(fake_engine).max_tokens == 4096 - len(_last(fake_engine).prompt_ids)
    fake_client.chat.completions.create(model=MODEL, messages=HI, max_tokens=7)
    assert _last(fake_engine).max_tokens == 7
    assert _planned(GenerationRequest("m", [], max_tokens=8000)) == PLANNED_ANSWER_TOKENS
    assert _planned(GenerationRequest("m", [], max_tokens=20)) == 20
