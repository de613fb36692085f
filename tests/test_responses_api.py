"""The Responses API (``ftkit/local/services/responses.py``) through the real routes and the official SDK,
on a fake engine: shapes and stream events checked against the spec, text.format and function
tools through the chat service's constraints, stored responses and ``previous_response_id``, and
what is refused. Fast: no model is loaded.
"""

from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel

MODEL = "SmolLM2-135M-Instruct"
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city", "strict": True,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}}


class Ticket(BaseModel):
    category: str
    urgent: bool


def _events(http, body: dict) -> list[dict]:
    with http.stream("POST", "/v1/responses", json={**body, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        blocks = [block for block in r.read().decode().split("\n\n") if block.strip()]
    events = []
    for block in blocks:
        kind, data = block.split("\n", 1)
        event = json.loads(data[len("data: "):])
        assert kind == f"event: {event['type']}"
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def test_create_with_text_input_and_instructions(fake_client, fake_engine, check_schema):
    raw = fake_client.responses.with_raw_response.create(model=MODEL, input="Hi there", instructions="Be brief.",
                                                         max_output_tokens=16, metadata={"run": "1"})
    body = raw.http_response.json()
    check_schema(body, "Response")
    r = raw.parse()
    request = fake_engine.requests[-1]
    assert request.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    assert r.output_text == "Hello from the fake engine, one word at a time." and r.status == "completed"
    assert r.usage.input_tokens == len(request.prompt_ids) and r.usage.output_tokens == 10
    assert r.usage.total_tokens == r.usage.input_tokens + 10
    assert r.instructions == "Be brief." and r.metadata == {"run": "1"} and r.max_output_tokens == 16
    assert r.id.startswith("resp_") and r.output[0].id.startswith("msg_")


def test_max_output_tokens_makes_it_incomplete(fake_client, fake_server, fake_engine, check_schema):
    from fake_engine import DEFAULT_TEXT

    fake_engine.text = "word " * 40
    try:
        raw = fake_client.responses.with_raw_response.create(model=MODEL, input="Hi", max_output_tokens=16)
        events = _events(fake_server, {"model": MODEL, "input": "Hi", "max_output_tokens": 16})
    finally:
        fake_engine.text = DEFAULT_TEXT
    check_schema(raw.http_response.json(), "Response")
    r = raw.parse()
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output[0].status == "incomplete" and r.usage.output_tokens == 16 and r.completed_at is None
    assert events[-1]["type"] == "response.incomplete" and events[-1]["response"]["status"] == "incomplete"
    check_schema(events[-1], "ResponseStreamEvent")


def test_stream_events_follow_the_spec(fake_server, fake_client, check_schema):
    events = _events(fake_server, {"model": MODEL, "input": "Hi", "include": ["message.output_text.logprobs"],
                                   "top_logprobs": 1})
    for event in events:
        check_schema(event, "ResponseStreamEvent")
    kinds = [e["type"] for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    text = "".join(e["delta"] for e in deltas)
    final = events[-1]["response"]
    assert text == final["output"][0]["content"][0]["text"] == events[-4]["text"]
    assert [t["token"] for e in deltas for t in e["logprobs"]] == [t["token"] for t in
                                                                    final["output"][0]["content"][0]["logprobs"]]
    assert all(len(t["top_logprobs"]) == 1 for e in deltas for t in e["logprobs"])
    assert events[0]["response"]["status"] == "in_progress" and final["status"] == "completed"
    # the SDK's stream helper
    with fake_client.responses.stream(model=MODEL, input="Hi") as stream:
        got = [e.type for e in stream]
        assert stream.get_final_response().output_text == text
    assert got == [k for k in kinds]


def test_parse_with_a_pydantic_model(fake_client, fake_engine, check_schema):
    raw = fake_client.responses.with_raw_response.parse(model=MODEL, input="Classify: my card was charged twice",
                                                        text_format=Ticket)
    check_schema(raw.http_response.json(), "Response")
    parsed = raw.parse().output_parsed
    assert isinstance(parsed, Ticket)
    spec = fake_engine.requests[-1].constraint
    assert spec["type"] == "json_schema" and spec["strict"] is True and spec["schema"]["required"] == ["category",
                                                                                                       "urgent"]
    with pytest.raises(openai.BadRequestError) as err:
        fake_client.responses.create(model=MODEL, input="x", text={"format": {
            "type": "json_schema", "name": "e", "schema": {"type": "string", "format": "email"}}})
    assert err.value.param == "text.format.schema.format"


def test_function_tools_and_their_results(fake_client, fake_engine, check_schema):
    raw = fake_client.responses.with_raw_response.create(model=MODEL, input="Weather in Paris?", tools=[WEATHER],
                                                         tool_choice="required")
    check_schema(raw.http_response.json(), "Response")
    r = raw.parse()
    assert fake_engine.requests[-1].constraint["type"] == "tool_call"
    call = r.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and json.loads(call.arguments) == {"city": "text"}
    # the caller runs the tool and sends its output back, continuing the stored conversation
    follow = fake_client.responses.create(model=MODEL, previous_response_id=r.id, tools=[WEATHER], input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'}])
    messages = fake_engine.requests[-1].messages
    assert messages[0] == {"role": "user", "content": "Weather in Paris?"}
    assert messages[1]["role"] == "assistant" and messages[1]["tool_calls"][0]["id"] == call.call_id
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": '{"temp": 21}'}
    assert follow.previous_response_id == r.id and follow.output_text
    named = fake_client.responses.create(model=MODEL, input="x", tools=[WEATHER],
                                         tool_choice={"type": "function", "name": "get_weather"})
    assert fake_engine.requests[-1].constraint["name"] == "get_weather" and named.output[0].type == "function_call"


def test_streamed_function_call(fake_server, check_schema):
    events = _events(fake_server, {"model": MODEL, "input": "x", "tools": [WEATHER], "tool_choice": "required"})
    for event in events:
        check_schema(event, "ResponseStreamEvent")
    kinds = [e["type"] for e in events]
    # announced as soon as its name is known, then its arguments as they are decoded (the fake
    # engine decodes a word at a time), then done
    assert kinds[2:4] == ["response.output_item.added", "response.function_call_arguments.delta"]
    assert kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    added = events[2]["item"]
    assert added["type"] == "function_call" and added["name"] == "get_weather" and added["arguments"] == ""
    fragments = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert len(fragments) >= 2 and json.loads("".join(fragments)) == {"city": "text"}
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["name"] == "get_weather" and done["arguments"] == "".join(fragments)
    assert events[-1]["response"]["output"][0]["call_id"] == added["call_id"]


def test_stored_responses_get_delete_and_input_items(fake_client, fake_server, check_schema):
    first = fake_client.responses.create(model=MODEL, input=[
        {"role": "developer", "content": "Answer briefly."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "One"}]}])
    assert fake_server.get(f"/v1/responses/{first.id}", params={"stream": "true"}).json()["error"]["param"] == "stream"
    got = fake_server.get(f"/v1/responses/{first.id}").json()
    check_schema(got, "Response")
    assert got["id"] == first.id and got["output"][0]["content"][0]["text"] == first.output_text
    items = fake_server.get(f"/v1/responses/{first.id}/input_items").json()
    check_schema(items, "ResponseItemList")
    assert [i["role"] for i in items["data"]] == ["user", "developer"]  # newest first, as on the hosted API
    assert [i.role for i in fake_client.responses.input_items.list(first.id, order="asc")] == ["developer", "user"]
    second = fake_client.responses.create(model=MODEL, input="Two", previous_response_id=first.id)
    third = fake_client.responses.create(model=MODEL, input="Three", previous_response_id=second.id)
    assert third.previous_response_id == second.id
    fake_client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        fake_client.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError) as err:
        fake_client.responses.create(model=MODEL, input="Four", previous_response_id=second.id)
    assert err.value.body["param"] == "previous_response_id"
    assert fake_client.responses.retrieve(third.id).id == third.id  # the others stay


def test_previous_response_carries_the_conversation(fake_client, fake_engine):
    first = fake_client.responses.create(model=MODEL, input="My name is Ada.", instructions="Be kind.")
    fake_client.responses.create(model=MODEL, input="What is my name?", previous_response_id=first.id)
    assert fake_engine.requests[-1].messages == [
        {"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "What is my name?"}]  # instructions are not carried over


def test_store_false_is_not_kept(fake_client):
    r = fake_client.responses.create(model=MODEL, input="x", store=False)
    assert r.store is False
    with pytest.raises(openai.NotFoundError):
        fake_client.responses.retrieve(r.id)


@pytest.mark.parametrize(("changes", "param", "code"), [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_value"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0].type", "unsupported_value"),
    ({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools[0].type", "unsupported_value"),
    ({"reasoning": {"effort": "low"}}, "reasoning", "unsupported_parameter"),
    ({"background": True}, "background", "unsupported_value"),
    ({"truncation": "auto"}, "truncation", "unsupported_value"),
    ({"conversation": "conv_1"}, "conversation", "unsupported_parameter"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt", "unsupported_parameter"),
    ({"include": ["reasoning.encrypted_content"]}, "include[0]", "unsupported_value"),
    ({"text": {"verbosity": "low"}}, "text.verbosity", "unsupported_value"),
    ({"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}, "input[0].type", "unsupported_value"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type", "unsupported_value"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png",
                                              "detail": "auto"}]}]}, "input[0].content[0].type", "unsupported_value"),
    ({"tool_choice": {"type": "web_search_preview"}, "tools": [WEATHER]}, "tool_choice", "unsupported_value"),
    ({"tool_choice": {"type": "function", "name": "nope"}, "tools": [WEATHER]}, "tool_choice.name", "invalid_value"),
    ({"input": 5}, "input", "invalid_type"),
    ({"input": [{"role": "user", "content": 5}]}, "input[0].content", "invalid_type"),
    ({"max_output_tokens": 8}, "max_output_tokens", "invalid_value"),
    ({"temperature": 9}, "temperature", "invalid_value"),
    ({"model": None}, "model", "invalid_type"),
    ({"input": None}, "input", "invalid_type"),
    ({"input": []}, "input", "invalid_value"),
    ({"text": {"format": {"type": "json_object"}}}, "input", "invalid_value"),  # JSON mode must ask for JSON
    ({"previous_response_id": "resp_nope"}, "previous_response_id", "not_found"),
    ({"surprise": 1}, "surprise", "unknown_parameter"),
])
def test_what_the_local_server_cannot_do_is_refused(fake_server, fake_engine, check_schema, changes, param, code):
    before = len(fake_engine.requests)
    r = fake_server.post("/v1/responses", json={"model": MODEL, "input": "hi", **changes})
    assert r.status_code in (400, 404), r.text
    check_schema(r.json(), "ErrorResponse")
    assert (r.json()["error"]["param"], r.json()["error"]["code"]) == (param, code), r.json()
    assert len(fake_engine.requests) == before


def test_model_and_input_are_required(fake_server):
    for body, param in (({"input": "hi"}, "model"), ({"model": MODEL}, "input")):
        error = fake_server.post("/v1/responses", json=body).json()["error"]
        assert (error["param"], error["code"]) == (param, "missing_required_parameter")
