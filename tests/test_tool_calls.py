"""Tools and structured outputs as real OpenAI clients use them (issue 24), on the real server and
engine, through the official ``openai`` SDK and the OpenAI Agents SDK (``openai-agents``, a
test-only dependency), every answer checked against the spec:

* an ``Agent`` with a function tool and a Pydantic ``output_type`` runs end to end on both
  ``OpenAIChatCompletionsModel`` and ``OpenAIResponsesModel``. Such an agent sends its tools *and*
  its output schema (``response_format`` / ``text.format`` ``json_schema``, strict) with
  ``tool_choice`` "auto" (or what ``ModelSettings`` says on the first turn; the SDK resets it to
  "auto" after a tool call): the engine answers under one grammar with both branches, a tool call
  or else the schema;
* a forced call cut off by ``max_tokens`` says "length" and leaves no markup in the content;
  ``tool_choice="required"`` with parallel calls never repeats a call;
* without ``max_tokens`` an answer may run to the context's end, so ``parse()`` finishes (on
  SmolLM2 itself too: the one ``slow`` test).

The model is a tiny random Llama with SmolLM2's tokenizer (``tests/tiny_models.py``; 2,048 tokens
of context, as an agent's prompt with its tool list outgrows the 512 of ``tests/tiny.py``),
registered on the shared server as ``tiny_model`` is. Its choices are nonsense, so the grammar is
what guarantees the shapes. Greedy decoding makes its choices repeatable; which branch it prefers
after a tool result is its own (the test lets the tool be called more than once, within
``max_turns``): whatever it picks, the run must end with a parsed ``output_type``. Arguments and
fields are enums or booleans: a random model's free string would run on to the context's end.
"""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import httpx
import pytest
from pydantic import BaseModel

pytest.importorskip("torch")
pytest.importorskip("llguidance")

pytestmark = pytest.mark.timeout(600)
TINY = "tiny-llama-smollm2-vocab"
ORDER_TOOL = {"type": "function", "function": {
    "name": "get_order", "description": "Look up an order by its id", "strict": True,
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string", "enum": ["A-123", "B-456"]},
                                                    "express": {"type": "boolean"}},
                   "required": ["order_id", "express"], "additionalProperties": False}}}
TICKET = [{"role": "user", "content": "My card was charged twice for order A-123."}]


class Ticket(BaseModel):
    category: Literal["billing", "technical", "shipping"]
    urgent: bool


@pytest.fixture(scope="module")
def tiny_smollm2(local_server, tmp_path_factory) -> str:
    """The tiny random Llama with SmolLM2's vocabulary, registered on the shared server."""
    from tiny_models import save_tiny_llama, smollm2_tokenizer

    from ftkit.local.services.platform import Platform
    from ftkit.local.store import Store

    store = Store(local_server.home)
    if not any(m["id"] == TINY for m in store.list_models()):
        folder = save_tiny_llama(tmp_path_factory.mktemp("tiny-smollm2"), smollm2_tokenizer())
        Platform(store, max_upload_bytes=0).register_base_model(TINY, str(folder))
    return TINY


# -- the Agents SDK ---------------------------------------------------------------------------------


def _agent(agents, model, calls: list[str], tool_choice: str | None):
    @agents.function_tool
    def get_order(order_id: Literal["A-123", "B-456"]) -> str:
        """Look up an order by its id."""
        calls.append(order_id)
        return json.dumps({"order_id": order_id, "status": "charged twice"})

    return agents.Agent(name="triage", instructions="Triage the ticket. Look the order up first.", tools=[get_order],
                        output_type=Ticket, model=model,
                        model_settings=agents.ModelSettings(temperature=0, tool_choice=tool_choice))


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
@pytest.mark.parametrize("tool_choice", ["required", None])
def test_an_agent_with_a_tool_and_an_output_type_runs_end_to_end(local_server, tiny_smollm2, api, tool_choice):
    agents = pytest.importorskip("agents")
    import openai

    agents.set_tracing_disabled(True)  # no traces sent anywhere
    client = openai.AsyncOpenAI(base_url=local_server.base_url, api_key=local_server.key, max_retries=0)
    if api == "chat_completions":
        model = agents.OpenAIChatCompletionsModel(model=tiny_smollm2, openai_client=client)
    else:
        model = agents.OpenAIResponsesModel(model=tiny_smollm2, openai_client=client)
    calls: list[str] = []
    result = asyncio.run(agents.Runner.run(_agent(agents, model, calls, tool_choice), TICKET[0]["content"],
                                           max_turns=8))
    assert isinstance(result.final_output, Ticket)
    if tool_choice == "required":  # the first turn had to call the tool; "auto" on later turns answered
        assert calls and set(calls) <= {"A-123", "B-456"}
    kinds = [item.type for item in result.new_items]
    assert kinds[-1] == "message_output_item"
    assert kinds.count("tool_call_item") == kinds.count("tool_call_output_item") == len(calls)


def test_auto_with_a_schema_is_a_call_or_the_schema_through_the_sdk(client, tiny_smollm2, check_schema):
    """The grammar behind the agent: sampled answers take either branch, and each is whole."""
    raw = client.chat.completions.with_raw_response.parse(model=tiny_smollm2, messages=TICKET, tools=[ORDER_TOOL],
                                                          response_format=Ticket, temperature=1.0, seed=5, n=6)
    check_schema(raw.http_response.json(), "CreateChatCompletionResponse")
    for choice in raw.parse().choices:
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls" and choice.message.content is None
            for call in choice.message.tool_calls:
                assert call.function.name == "get_order"
                assert json.loads(call.function.arguments)["order_id"] in ("A-123", "B-456")
        else:
            assert choice.finish_reason == "stop" and isinstance(choice.message.parsed, Ticket)


# -- forced calls -----------------------------------------------------------------------------------


def test_a_cut_off_forced_call_says_length_without_markup(client, tiny_smollm2, local_server, check_schema):
    for max_tokens in (3, 20):  # cut inside "<tool_call>", then inside the arguments
        raw = client.chat.completions.with_raw_response.create(model=tiny_smollm2, messages=TICKET, tools=[ORDER_TOOL],
                                                               tool_choice="required", temperature=0,
                                                               max_tokens=max_tokens)
        check_schema(raw.http_response.json(), "CreateChatCompletionResponse")
        choice = raw.parse().choices[0]
        assert choice.finish_reason == "length" and choice.message.content is None, max_tokens
        for call in choice.message.tool_calls or []:  # a call cut off keeps what was written of it
            assert call.function.name == "get_order" and "<tool_call>" not in call.function.arguments
        raw = client.responses.with_raw_response.create(model=tiny_smollm2, input=TICKET[0]["content"],
                                                        tools=[{"type": "function", **ORDER_TOOL["function"]}],
                                                        tool_choice="required", temperature=0,
                                                        max_output_tokens=max(16, max_tokens))  # the spec's minimum
        check_schema(raw.http_response.json(), "Response")
        r = raw.parse()
        assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
        assert "<tool_call" not in r.output_text
        assert all(item.status == "incomplete" for item in r.output if item.type == "function_call")
    with httpx.stream("POST", f"{local_server.base_url}/chat/completions", timeout=300,
                      headers={"Authorization": f"Bearer {local_server.key}"},
                      json={"model": tiny_smollm2, "messages": TICKET, "tools": [ORDER_TOOL], "stream": True,
                            "tool_choice": "required", "temperature": 0, "max_tokens": 20}) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    for c in chunks:
        check_schema(c, "CreateChatCompletionStreamResponse")
    assert not any(c["choices"][0]["delta"].get("content") for c in chunks if c["choices"])
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_required_parallel_calls_never_repeat_a_call(client, tiny_smollm2, check_schema):
    from ftkit.local.inference.render import MAX_PARALLEL_CALLS

    raw = client.chat.completions.with_raw_response.create(model=tiny_smollm2, messages=TICKET, tools=[ORDER_TOOL],
                                                           tool_choice="required", temperature=1.0, seed=3, n=3)
    check_schema(raw.http_response.json(), "CreateChatCompletionResponse")
    for choice in [*raw.parse().choices, *client.chat.completions.create(
            model=tiny_smollm2, messages=TICKET, tools=[ORDER_TOOL], tool_choice="required", temperature=0).choices]:
        calls = [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls]
        assert choice.finish_reason == "tool_calls" and 1 <= len(calls) <= MAX_PARALLEL_CALLS
        assert len({json.dumps(c, sort_keys=True) for c in calls}) == len(calls), calls  # no identical calls


# -- no max_tokens ----------------------------------------------------------------------------------


def test_without_max_tokens_a_constrained_answer_finishes(client, tiny_smollm2, check_schema):
    """No ``max_tokens``: the answer may run to the context's end, as on the hosted API, so a
    schema's answer ends where the grammar does (``parse()`` raised LengthFinishReasonError when a
    512-token default cut it)."""
    raw = client.chat.completions.with_raw_response.parse(model=tiny_smollm2, messages=TICKET, response_format=Ticket,
                                                          temperature=0)
    check_schema(raw.http_response.json(), "CreateChatCompletionResponse")
    assert isinstance(raw.parse().choices[0].message.parsed, Ticket)
    r = client.responses.parse(model=tiny_smollm2, input=TICKET[0]["content"], text_format=Ticket, temperature=0)
    assert r.status == "completed" and isinstance(r.output_parsed, Ticket) and r.max_output_tokens is None


@pytest.mark.slow
def test_without_max_tokens_smollm2_stops_where_the_grammar_ends(client):
    """Nothing hangs without ``max_tokens`` when the answer is constrained: the grammar's completion
    ends it (free text ends at the model's end-of-sequence token, or else at the context's end)."""
    parsed = client.chat.completions.parse(model="SmolLM2-135M-Instruct", messages=TICKET, response_format=Ticket,
                                           temperature=0)
    assert parsed.choices[0].finish_reason == "stop" and isinstance(parsed.choices[0].message.parsed, Ticket)
    assert parsed.usage.completion_tokens < 40
