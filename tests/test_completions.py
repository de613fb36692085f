"""Legacy text completions (``POST /v1/completions``, issue 24) through the official SDK.

The first tests run the real app on the fake engine (tests/fake_engine.py: a "token" is a word):
what reaches the engine (no chat template, the prompt tokenised once, every sampling parameter)
and what comes back (checked against the spec's ``CreateCompletionResponse``, streamed or whole).
The last ones run the real server process on the tiny registered model (``tiny_model``): real
tokens, real logprobs, ``logit_bias`` and seeds doing what they say.
"""

from __future__ import annotations

import json

import openai
import pytest
from fake_engine import DEFAULT_TEXT, WORD

MODEL = "SmolLM2-135M-Instruct"
WORDS = WORD.findall(DEFAULT_TEXT)  # the fake engine's answer, one "token" per word


def _raw(call, check_schema):
    check_schema(call.http_response.json(), "CreateCompletionResponse")
    return call.parse()


def _sse(http, body: dict) -> list[dict]:
    with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.read()
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[len("data: "):]) for line in lines[:-1]]


def _error(fake_client, **body) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as e:
        fake_client.completions.create(**{"model": MODEL, "prompt": "Hi", **body})
    return e.value


def test_text_in_text_out_without_a_chat_template(fake_client, fake_engine, check_schema):
    r = _raw(fake_client.completions.with_raw_response.create(model=MODEL, prompt="Once upon a time", max_tokens=4),
             check_schema)
    request = fake_engine.requests[-1]
    assert request.messages == [] and request.prompt_ids == [5, 5, 2, 4]  # the words themselves, no template
    assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == MODEL
    assert [c.text for c in r.choices] == ["".join(WORDS[:4])]
    assert r.choices[0].finish_reason == "length" and r.choices[0].logprobs is None and r.choices[0].index == 0
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (4, 4, 8)
    default = fake_client.completions.create(model=MODEL, prompt="Once upon a time")
    assert fake_engine.requests[-1].max_tokens == 16  # the spec's default for this endpoint
    assert default.choices[0].text == DEFAULT_TEXT and default.choices[0].finish_reason == "stop"
    fake_client.completions.create(model=MODEL, prompt=None)  # null: the spec's default, a document start
    assert fake_engine.requests[-1].prompt_ids == [len("<|endoftext|>")]


def test_sampling_parameters_reach_the_engine(fake_client, fake_engine):
    fake_client.completions.create(model=MODEL, prompt="Hi", max_tokens=3, temperature=0.7, top_p=0.9, seed=5,
                                   stop=["fake", "\n"], presence_penalty=0.5, frequency_penalty=-1,
                                   logit_bias={"50": -100, "7": 3}, user="u1")
    request = fake_engine.requests[-1]
    assert (request.temperature, request.top_p, request.seed, request.stop) == (0.7, 0.9, 5, ["fake", "\n"])
    assert (request.presence_penalty, request.frequency_penalty, request.logit_bias) == (0.5, -1.0, {50: -100.0, 7: 3.0})
    fake_client.completions.create(model=MODEL, prompt="Hi", temperature=0, stop="engine")
    assert fake_engine.requests[-1].temperature == 0.0 and fake_engine.requests[-1].stop == ["engine"]
    stopped = fake_client.completions.create(model=MODEL, prompt="Hi", stop="fake")
    assert stopped.choices[0].text == "Hello from the " and stopped.choices[0].finish_reason == "stop"
    assert _error(fake_client, logit_bias={"49152": 1}).body["param"] == "logit_bias"


def test_prompts_lists_and_n_number_choices_prompt_by_prompt(fake_client, fake_engine, check_schema):
    r = _raw(fake_client.completions.with_raw_response.create(model=MODEL, prompt=["a b", "c d e"], n=2, max_tokens=2,
                                                              echo=True), check_schema)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    first = "".join(WORDS[:2])
    assert [c.text for c in r.choices] == ["a b" + first] * 2 + ["c d e" + first] * 2  # echo: the prompt first
    assert [len(rq.prompt_ids) for rq in fake_engine.requests[-2:]] == [2, 3] and fake_engine.requests[-1].n == 2
    assert r.usage.prompt_tokens == 5 and r.usage.completion_tokens == 8
    tokens = fake_client.completions.create(model=MODEL, prompt=[[3, 1, 4], [1, 5]], max_tokens=1, echo=True)
    assert [rq.prompt_ids for rq in fake_engine.requests[-2:]] == [[3, 1, 4], [1, 5]]  # token arrays, as given
    assert [c.text for c in tokens.choices] == ["<3><1><4>" + WORDS[0], "<1><5>" + WORDS[0]]
    single = fake_client.completions.create(model=MODEL, prompt=[7, 8], max_tokens=1)
    assert fake_engine.requests[-1].prompt_ids == [7, 8] and len(single.choices) == 1
    asked = len(fake_engine.requests)
    zero = fake_client.completions.create(model=MODEL, prompt="Score me", max_tokens=0, echo=True)
    assert len(fake_engine.requests) == asked  # nothing to generate: the engine is not asked
    assert zero.choices[0].text == "Score me" and zero.choices[0].finish_reason == "length"
    assert zero.usage.completion_tokens == 0 and zero.usage.prompt_tokens == 2


def test_logprobs_in_this_endpoints_shape(fake_client, fake_engine, check_schema):
    r = _raw(fake_client.completions.with_raw_response.create(model=MODEL, prompt="Tell me", max_tokens=3,
                                                              logprobs=1), check_schema)
    request = fake_engine.requests[-1]
    assert request.logprobs is True and request.top_logprobs == 1
    lp = r.choices[0].logprobs
    assert lp.tokens == WORDS[:3] and lp.token_logprobs == [0.0, -0.25, -0.5]
    # one alternative plus the chosen token (here the alternative is the chosen token itself)
    assert lp.top_logprobs == [{"Hello ": 0.0}, {"from ": -0.25}, {"the ": -0.5}]
    # offsets from the prompt's start, echoed or not, as the hosted API counts them
    assert lp.text_offset == [7, 7 + 6, 7 + 6 + 5]
    two = fake_client.completions.create(model=MODEL, prompt="Tell me", max_tokens=2, logprobs=2)
    assert two.choices[0].logprobs.top_logprobs[1] == {"from ": -0.25, "other": -3.0}
    none = fake_client.completions.create(model=MODEL, prompt="Tell me", max_tokens=2, logprobs=0)
    assert none.choices[0].logprobs.top_logprobs == [{"Hello ": 0.0}, {"from ": -0.25}]


def test_best_of_returns_the_most_likely_candidates(fake_client, fake_engine):
    r = fake_client.completions.create(model=MODEL, prompt="Hi", max_tokens=2, best_of=3, n=2)
    request = fake_engine.requests[-1]
    assert request.n == 3 and request.logprobs is True  # candidates are ranked by their logprobs
    assert len(r.choices) == 2 and [c.index for c in r.choices] == [0, 1]
    assert all(c.logprobs is None for c in r.choices)  # not asked for: not returned
    assert r.usage.completion_tokens == 6  # every candidate's tokens, as the hosted API bills them


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"suffix": "end."}, "suffix", "unsupported_parameter"),
    ({"echo": True, "logprobs": 2}, "echo", "unsupported_value"),
    ({"n": 3, "best_of": 2}, "best_of", "invalid_value"),
    ({"n": 17}, "n", "invalid_value"),
    ({"best_of": 17}, "best_of", "invalid_value"),
    ({"logprobs": 6}, "logprobs", None),
    ({"prompt": []}, "prompt", "invalid_value"),
    ({"prompt": [[1, 2], [3, 49152]]}, "prompt[1]", "invalid_value"),
    ({"prompt": [-1]}, "prompt", "invalid_value"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),
    ({"max_tokens": 4096}, "prompt", "context_length_exceeded"),
    ({"prompt": "x", "messages": [{"role": "user", "content": "hi"}]}, "messages", "unknown_parameter"),
])
def test_what_the_local_server_cannot_do_is_a_400_naming_it(fake_client, body, param, code):
    error = _error(fake_client, **body) if "messages" not in body else _error(
        fake_client, prompt="x", extra_body={"messages": body["messages"]})
    assert error.status_code == 400 and error.body["param"] == param, error.body
    assert code is None or error.body["code"] == code, error.body


def test_streams_and_unknown_models(fake_client, fake_server, check_schema):
    with pytest.raises(openai.NotFoundError) as e:
        fake_client.completions.create(model="ft:nope", prompt="Hi")
    assert e.value.body["code"] == "model_not_found"
    error = _error(fake_client, stream=True, best_of=2)
    assert error.body["param"] == "best_of"
    body = {"model": MODEL, "prompt": ["Hi", "Hello there"], "n": 2, "max_tokens": 5, "logprobs": 1,
            "stream_options": {"include_usage": True}}
    whole = fake_client.completions.create(**{k: v for k, v in body.items() if k != "stream_options"})
    chunks = _sse(fake_server, body)
    for chunk in chunks:
        check_schema(chunk, "CreateCompletionResponse")
        assert chunk["object"] == "text_completion" and chunk["id"] == chunks[0]["id"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == whole.usage.total_tokens == 3 + 20
    assert all("usage" not in c for c in chunks[:-1])
    for choice in whole.choices:
        mine = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["index"] == choice.index]
        assert "".join(m["text"] for m in mine) == choice.text
        assert [t for m in mine for t in m["logprobs"]["tokens"]] == choice.logprobs.tokens
        assert [o for m in mine for o in m["logprobs"]["text_offset"]] == choice.logprobs.text_offset
        assert [m["finish_reason"] for m in mine] == [None] * (len(mine) - 1) + ["length"]
    echoed = _sse(fake_server, {"model": MODEL, "prompt": "Say", "max_tokens": 2, "echo": True})
    assert echoed[0]["choices"][0]["text"] == "Say"
    assert "".join(c["choices"][0]["text"] for c in echoed) == "Say" + "".join(WORDS[:2])
    # the SDK's own streaming reads it
    streamed = fake_client.completions.create(model=MODEL, prompt="Hi", max_tokens=50, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == DEFAULT_TEXT


def test_langchain_openai_llm_reads_it(fake_server, fake_engine):
    """LangChain's completion-model class (``langchain_openai.OpenAI``) calls this endpoint."""
    pytest.importorskip("langchain_openai")
    from langchain_openai import OpenAI

    llm = OpenAI(model=MODEL, base_url="http://local.test/v1", api_key=fake_server.headers["Authorization"][7:],
                 http_client=fake_server, max_retries=0, max_tokens=3, temperature=0)
    assert llm.invoke("Once upon a time") == "".join(WORDS[:3])
    assert fake_engine.requests[-1].prompt_ids == [5, 5, 2, 4] and fake_engine.requests[-1].messages == []
    assert "".join(llm.stream("Once upon a time")) == "".join(WORDS[:3])


# -- the real server process on the tiny model ------------------------------------------------------


@pytest.mark.slow
def test_completions_on_the_tiny_model(client, tiny_model, check_schema):
    raw = client.completions.with_raw_response.create(model=tiny_model, prompt="Triage the ticket", max_tokens=6,
                                                      temperature=0, logprobs=2)
    check_schema(raw.http_response.json(), "CreateCompletionResponse")
    r = raw.parse()
    choice = r.choices[0]
    lp = choice.logprobs
    assert r.usage.completion_tokens == len(lp.tokens) == 6 and choice.finish_reason == "length"
    # a token inside a character reads "bytes:\\x.." (the answer may end mid-character: "\ufffd")
    assert "".join(t for t in lp.tokens if not t.startswith("bytes:")) == choice.text.replace("\ufffd", "")
    assert lp.text_offset[0] == len("Triage the ticket")
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert logprob <= 0 and top[token] == logprob and 1 <= len(top) <= 3
        assert logprob == max(top.values())  # greedy: the chosen token is the most likely one
    # the same greedy answer, token by token, when streamed
    chunks = list(client.completions.create(model=tiny_model, prompt="Triage the ticket", max_tokens=6,
                                            temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == choice.text
    # logit_bias and the penalties reach the sampler (ids from the tokenizer the tiny model was saved with)
    from tiny import tiny_tokenizer

    first = tiny_tokenizer().convert_tokens_to_ids(tiny_tokenizer().tokenize(lp.tokens[0]))[0]
    banned = client.completions.create(model=tiny_model, prompt="Triage the ticket", max_tokens=1, temperature=0,
                                       logit_bias={str(first): -100})
    assert banned.choices[0].text not in ("", lp.tokens[0])
    forced = client.completions.create(model=tiny_model, prompt="Triage the ticket", max_tokens=4, temperature=0,
                                       logit_bias={str(first): 100})
    assert forced.choices[0].text == lp.tokens[0] * 4
    penalised = client.completions.create(model=tiny_model, prompt="Triage the ticket", max_tokens=4, temperature=0,
                                          logit_bias={str(first): 5}, frequency_penalty=2, logprobs=0)
    tokens = penalised.choices[0].logprobs.tokens
    assert tokens[0] == lp.tokens[0] and len(set(tokens)) > 1  # +5 wins once, then the penalty outweighs it
    echo = client.completions.create(model=tiny_model, prompt="Triage", max_tokens=0, echo=True)
    assert echo.choices[0].text == "Triage" and echo.usage.completion_tokens == 0
    # seeds: the same seed samples the same answers, another seed other ones
    sampled = [client.completions.create(model=tiny_model, prompt="Hi", max_tokens=8, n=2, seed=seed,
                                         temperature=1.5).choices for seed in (1, 1, 2)]
    texts = [[c.text for c in choices] for choices in sampled]
    assert texts[0] == texts[1] and texts[0] != texts[2]
