"""``/v1/fine_tuning/alpha/graders/run`` and ``/validate`` through the official SDK
(``client.fine_tuning.alpha.graders``), on the real app with a fake engine: the spec's envelopes,
rewards for each grader type, a runaway python grader stopped and reported, bad graders as 400s
naming the field, and model graders judged by a model the server serves."""

from __future__ import annotations

import json

import openai
import pytest

CATEGORY = {"type": "string_check", "name": "category", "operation": "eq",
            "input": "{{ sample.output_json.category }}", "reference": "{{ item.category }}"}


def _run(fake_client, check_schema, grader, sample, item=None):
    raw = fake_client.fine_tuning.alpha.graders.with_raw_response.run(grader=grader, model_sample=sample,
                                                                     item=item or {})
    body = raw.http_response.json()
    check_schema(body, "RunGraderResponse")
    return raw.parse(), body


def test_run_string_check_and_text_similarity(fake_client, check_schema):
    result, _ = _run(fake_client, check_schema, CATEGORY, '{"category": "billing"}', {"category": "billing"})
    assert result.reward == 1.0 and result.metadata.type == "string_check" and result.metadata.name == "category"
    assert not any(result.metadata.errors.model_dump().values())
    result, _ = _run(fake_client, check_schema, CATEGORY, '{"category": "shipping"}', {"category": "billing"})
    assert result.reward == 0.0
    similar = {"type": "text_similarity", "name": "close", "input": "{{ sample.output_text }}",
               "reference": "{{ item.answer }}", "evaluation_metric": "fuzzy_match"}
    result, _ = _run(fake_client, check_schema, similar, "the hub is offline", {"answer": "The Hub is offline"})
    assert result.reward == pytest.approx(1.0)


def test_multi_gives_partial_credit(fake_client, check_schema):
    per_field = {name: {"type": "string_check", "name": name, "operation": "eq",
                        "input": "{{ sample.output_json." + name + " }}", "reference": "{{ item." + name + " }}"}
                 for name in ("category", "urgency", "product")}
    multi = {"type": "multi", "name": "fields", "graders": per_field,
             "calculate_output": "(category + urgency + product) / 3"}
    item = {"category": "billing", "urgency": "high", "product": "api"}
    sample = json.dumps({"category": "billing", "urgency": "low", "product": "api"})
    result, body = _run(fake_client, check_schema, multi, sample, item)
    assert result.reward == pytest.approx(2 / 3)
    assert body["sub_rewards"] == {"category": 1.0, "urgency": 0.0, "product": 1.0}


def test_python_grader_and_a_runaway_one(fake_client, check_schema):
    good = {"type": "python", "name": "short", "source": "def grade(sample, item):\n"
            "    return 1.0 if len(sample['output_text']) < 20 else 0.0\n"}
    result, _ = _run(fake_client, check_schema, good, "short answer")
    assert result.reward == 1.0
    crash = {"type": "python", "name": "crash", "source": "def grade(sample, item):\n    return 1 / 0\n"}
    result, _ = _run(fake_client, check_schema, crash, "x")
    assert result.reward == 0.0 and result.metadata.errors.python_grader_runtime_error
    assert "ZeroDivisionError" in result.metadata.errors.python_grader_runtime_error_details


def test_bad_graders_are_400s_naming_the_field(fake_client):
    cases = [
        ({**CATEGORY, "operation": "contains"}, "grader.operation"),
        ({"type": "text_similarity", "name": "x", "input": "a", "reference": "b", "evaluation_metric": "nope"},
         "grader.evaluation_metric"),
        ({"type": "python", "name": "p", "source": "def grade(sample, item) return 1"}, "grader.source"),
        ({"type": "multi", "name": "m", "graders": {"a": CATEGORY}, "calculate_output": "__import__('os')"},
         "grader.calculate_output"),
        ({"type": "score_model", "name": "s", "model": "no-such-model",
          "input": [{"role": "user", "content": "Score {{ sample.output_text }}"}]}, "grader.model"),
    ]
    for grader, param in cases:
        with pytest.raises(openai.BadRequestError) as err:
            fake_client.fine_tuning.alpha.graders.validate(grader=grader)
        assert err.value.body["param"] == param, grader
        with pytest.raises(openai.BadRequestError):
            fake_client.fine_tuning.alpha.graders.run(grader=grader, model_sample="x")


def test_validate_returns_the_normalised_grader(fake_client, check_schema):
    raw = fake_client.fine_tuning.alpha.graders.with_raw_response.validate(grader=CATEGORY)
    check_schema(raw.http_response.json(), "ValidateGraderResponse")
    assert raw.parse().grader.type == "string_check"


def test_score_model_grader_is_judged_by_a_served_model(fake_client, fake_engine, check_schema):
    grader = {"type": "score_model", "name": "judge", "model": "SmolLM2-135M-Instruct", "range": [0, 1],
              "input": [{"role": "system", "content": "Score the answer from 0 to 1."},
                        {"role": "user", "content": "Answer: {{ sample.output_text }}"}],
              "sampling_params": {"temperature": 0, "max_completions_tokens": 40}}
    result, body = _run(fake_client, check_schema, grader, "The Hub is back online.")
    assert 0.0 <= result.reward <= 1.0
    assert body["metadata"]["sampled_model_name"] == "SmolLM2-135M-Instruct"
    assert not body["metadata"]["errors"]["model_grader_server_error"], body["metadata"]


def test_a_runaway_python_grader_is_stopped_and_reported(fake_client, check_schema, monkeypatch):
    monkeypatch.setenv("FTKIT_PYTHON_GRADER_TIMEOUT_S", "2")
    loop = {"type": "python", "name": "loop", "source": "def grade(sample, item):\n    while True:\n        pass\n"}
    import time

    start = time.monotonic()
    result, _ = _run(fake_client, check_schema, loop, "x")
    assert time.monotonic() - start < 20
    assert result.reward == 0.0 and result.metadata.errors.unresponsive_reward_error
    # the server still answers
    assert _run(fake_client, check_schema, CATEGORY, '{"category": "a"}', {"category": "a"})[0].reward == 1.0
